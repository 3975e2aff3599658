"""Built-in converters, one module per Keras layer family; importing them registers them."""

from . import activations, conv, core, merging, normalization, pooling, reshaping  # noqa: F401
