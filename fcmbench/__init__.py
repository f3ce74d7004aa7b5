"""fcmbench: a benchmark suite for feature coding for machines (FCM)."""

from fcmbench.core.errors import FcmbenchError

__version__ = "0.1.0"
__all__ = ["FcmbenchError", "__version__"]
