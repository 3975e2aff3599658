"""Built-in converters: one module per Keras layer family, ``ops_*`` for keras.ops calls.

Importing them registers them.
"""

from . import (  # noqa: F401
    activations,
    applications,
    attention,
    audio,
    conv,
    core,
    einsum_dense,
    embedding,
    encoding,
    image_preprocessing,
    merging,
    normalization,
    ops_dynamic,
    ops_fft,
    ops_image,
    ops_math,
    ops_nn,
    ops_reduce,
    ops_shape,
    pooling,
    preprocessing,
    recurrent,
    recurrent_conv,
    reshaping,
    time_distributed,
    wrappers,
)
