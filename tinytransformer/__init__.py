"""tinytransformer: the Transformer in pure NumPy, every backward pass written by hand."""

from .gradcheck import gradcheck
from .nn import *  # noqa: F401,F403  (the layers are the public API)
from .nn import __all__ as _nn_all

__version__ = "0.1.0"
__all__ = list(_nn_all) + ["gradcheck"]
