"""kerastorch_magic: turn a notebook cell's Keras model into an exact, readable PyTorch module.

Public API (DESIGN.md §3): :func:`convert`, :func:`compare`, :class:`ConversionError`,
:func:`converter` (register a converter for a custom layer), and the IPython extension hooks.
"""

from .conversion import Conversion, convert
from .registry import (
    ConversionError,
    Converted,
    LayerCall,
    Step,
    Submodule,
    converter,
    supported_layers,
)

__all__ = [
    "Conversion",
    "ConversionError",
    "Converted",
    "LayerCall",
    "Step",
    "Submodule",
    "convert",
    "converter",
    "supported_layers",
]
__version__ = "0.1.0"
