"""CRISP: cryo-EM image segmentation and particle picking with a conditional random field."""

__version__ = "0.1.0"

from crisp.errors import CrispError

__all__ = ["CrispError", "__version__"]
