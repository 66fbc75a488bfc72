"""Fast inference: a trained network applied to whole binned micrographs (:mod:`crisp.inference.predictor`).

The one tiler stays :mod:`crisp.tiling`; this package decides when to use it (only above a memory
budget) and runs the network the fast way (``torch.inference_mode``, channels-last, a set thread count).
"""

from crisp.inference.predictor import Predictor, default_threads, memory_budget_bytes

__all__ = ["Predictor", "default_threads", "memory_budget_bytes"]
