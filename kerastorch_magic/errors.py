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


class KerasRunError(RuntimeError):
    """Keras itself failed to run a layer of the model while :func:`compare` stepped through it.

    The reference is missing, not the port wrong: the conversion does not depend on running Keras,
    so ``convert`` may well have succeeded. A ``RuntimeError`` (what ``compare`` raised for this
    before the class existed), so existing ``except RuntimeError`` code keeps working.

    Attributes:
        layer: the qualified name of the Keras layer that failed (``"block/conv"``).
    """

    def __init__(self, message: str, layer: str):
        super().__init__(message)
        self.layer = layer
