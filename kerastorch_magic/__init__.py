"""kerastorch_magic: turn a notebook cell's Keras model into an exact, readable PyTorch module.

Public API (DESIGN.md §3): :func:`convert`, :func:`compare`, :class:`ConversionError`,
:class:`KerasRunError` (compare: Keras itself could not run a layer), :func:`converter` (register
a converter for a custom layer), and the IPython extension hooks.
"""

from . import startup

# Before the imports below, which import Keras: TensorFlow's C++ start-up lines are filtered by
# TF_CPP_MIN_LOG_LEVEL, which TensorFlow itself applies only once it has started (startup.py).
startup.import_keras()

from .compare import Comparison, compare  # noqa: E402
from .conversion import Conversion, convert  # noqa: E402
from .errors import KerasRunError  # noqa: E402
from .files import convert_file  # noqa: E402
from .registry import (  # noqa: E402
    ConversionError,
    Converted,
    Fragment,
    LayerCall,
    Step,
    Submodule,
    converter,
    supported_layers,
)

__all__ = [
    "Comparison",
    "Conversion",
    "ConversionError",
    "Converted",
    "Fragment",
    "KerasRunError",
    "LayerCall",
    "Step",
    "Submodule",
    "compare",
    "convert",
    "convert_file",
    "converter",
    "supported_layers",
]
__version__ = "0.1.0"


def load_ipython_extension(ipython):
    """``%load_ext kerastorch_magic``: register ``%%keras2torch`` and open the frontend comm."""
    from .magic import load_ipython_extension as load

    load(ipython)


def _jupyter_labextension_paths():
    return [{"src": "labextension", "dest": "kerastorch-magic"}]


def unload_ipython_extension(ipython):
    """``%unload_ext kerastorch_magic``: remove the magic's hooks (``%reload_ext`` re-adds them)."""
    from .magic import unload_ipython_extension as unload

    unload(ipython)
