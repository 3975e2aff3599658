"""The package's one error type for models it cannot convert.

Its own module so that reading a model (``graph.py``) and the tracing package can raise it
without importing the converter registry; ``registry`` and the package re-export it.
"""

from __future__ import annotations


class ConversionError(Exception):
    """A model that cannot be converted; the message names every offending layer.

    Attributes:
        layers: ``(layer name, class name)`` of every layer that cannot be converted, in model
            order (empty when the model as a whole cannot be read).
    """

    def __init__(self, message: str, layers: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.layers = layers or []
