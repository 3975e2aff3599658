"""Built-in converters, one module per Keras layer family; importing them registers them."""

from . import (  # noqa: F401
    activations,
    applications,
    conv,
    core,
    merging,
    normalization,
    pooling,
    preprocessing,
    recurrent,
    reshaping,
    time_distributed,
)
