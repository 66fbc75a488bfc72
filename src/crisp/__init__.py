"""CRISP: cryo-EM image segmentation and particle picking with a conditional random field.

Every verb of the ``crisp`` command is a function here (see :mod:`crisp.api` for the list), e.g.
``crisp.segment_files(run, "mics/", "seg/")``; names are imported on first use.
"""

__version__ = "0.1.0"

from crisp._aspire import configure_aspire_environment
from crisp.errors import CrispError  # noqa: F401 - also forwarded by crisp.api

configure_aspire_environment()


def __getattr__(name: str):
    """Forward the public API (:mod:`crisp.api`) lazily, so ``import crisp`` stays light."""
    from crisp import api

    if name in api.TOP_LEVEL:
        return getattr(api, name)
    raise AttributeError(f"module 'crisp' has no attribute {name!r}")


__all__ = ["__version__", *__import__("crisp.api", fromlist=["TOP_LEVEL"]).TOP_LEVEL]
