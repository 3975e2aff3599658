"""Built-in converters: one module per Keras layer family, ``ops_*`` for keras.ops calls.

Importing them registers them.
"""

from . import (  # noqa: F401
    activations,
    applications,
    conv,
    core,
    merging,
    normalization,
    ops_math,
    ops_nn,
    ops_reduce,
    ops_shape,
    pooling,
    preprocessing,
    reshaping,
)
