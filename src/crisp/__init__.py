"""CRISP: cryo-EM image segmentation and particle picking with a conditional random field."""

__version__ = "0.1.0"

from crisp._aspire import configure_aspire_environment
from crisp.errors import CrispError

configure_aspire_environment()

__all__ = ["CrispError", "__version__"]
