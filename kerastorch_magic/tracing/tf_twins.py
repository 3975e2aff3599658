"""Raw TensorFlow calls with a keras.ops twin, run as that twin while tracing.

keras-io examples written for Keras 2 call ``tf.*`` on tensors inside ``call()``; on symbolic
tensors TensorFlow refuses. The common ones run as their keras.ops twin (recorded as graph nodes
like any keras.ops call); the rest stay refused by name.
"""

from __future__ import annotations

import contextlib
import string
import sys

import numpy as np

from .pseudo import random_draw
from .scope import batch_reshape_target, is_tracing


# keras-io examples written for Keras 2 call tf.* on tensors inside call(). While tracing, the
# common ones run as their keras.ops twin (recorded as graph nodes like any keras.ops call); others
# are refused by name. Each entry: tf path -> function(keras.ops, *args, **kwargs) with TF's names.
def _tf_dtype(dtype):
    return getattr(dtype, "name", dtype)


def _tf_softmax(ops, logits, axis=None):
    return ops.softmax(logits, axis=-1 if axis is None else axis)


def _tf_matmul(ops, a, b, transpose_a=False, transpose_b=False):
    if transpose_a:
        a = ops.swapaxes(a, -1, -2)
    if transpose_b:
        b = ops.swapaxes(b, -1, -2)
    return ops.matmul(a, b)


def _tf_split(ops, value, num_or_size_splits, axis=0):
    if isinstance(num_or_size_splits, int):
        return ops.split(value, num_or_size_splits, axis=axis)
    # TF takes the sizes of the pieces, keras.ops (NumPy) the indices where they start.
    sizes = [int(size) for size in num_or_size_splits]
    if any(size < 0 for size in sizes):
        raise TypeError("tf.split with an inferred (-1) size")  # refused by TensorFlow itself
    starts = [sum(sizes[:i]) for i in range(1, len(sizes))]
    return ops.split(value, starts, axis=axis)


def _tf_extract_patches(ops, images, sizes, strides, rates, padding):
    # TF spells the window per axis of NHWC (1, kh, kw, 1); keras.ops takes the spatial part.
    return ops.image.extract_patches(
        images, tuple(sizes[1:3]), tuple(strides[1:3]), tuple(rates[1:3]), padding.lower()
    )


def _tf_einsum(ops, equation, *inputs, **kwargs):
    # TensorFlow takes upper-case subscripts and spaces ("bhwc, bHWc->bhwHW", keras-io's DDPM);
    # Keras's symbolic einsum reads lower-case ones only: each upper-case letter becomes an unused
    # lower-case one, the same contraction.
    equation = equation.replace(" ", "")
    upper = sorted({c for c in equation if c.isupper()})
    free = [c for c in string.ascii_lowercase if c not in equation]
    if len(free) < len(upper):
        _unsupported("more distinct subscripts than lower-case letters")
    return ops.einsum(equation.translate(str.maketrans(dict(zip(upper, free)))), *inputs)


def _ids(segment_ids):
    """TensorFlow takes a Python list of ids too; keras.ops wants an array."""
    return np.asarray(segment_ids) if isinstance(segment_ids, (list, tuple)) else segment_ids


def _tf_unsorted_segment_mean(ops, data, segment_ids, num_segments, name=None):
    # TensorFlow's own formula: the sum over the count of each segment, at least 1 (empty: 0).
    segment_ids = _ids(segment_ids)
    total = ops.segment_sum(data, segment_ids, num_segments=num_segments)
    count = ops.segment_sum(ops.ones_like(segment_ids, dtype=data.dtype), segment_ids, num_segments)
    trailing = (1,) * (len(data.shape) - len(segment_ids.shape))
    return total / ops.reshape(ops.maximum(count, 1), (num_segments, *trailing))


def _segment(reduction: str):
    def twin(ops, data, segment_ids, num_segments, name=None):
        return getattr(ops, reduction)(data, _ids(segment_ids), num_segments=num_segments)

    return twin


def _unsupported(option: str):
    # The caller runs TensorFlow's own function instead, which refuses the symbolic tensor.
    raise TypeError(f"no keras.ops twin with {option}")


def _tf_gather(ops, params, indices, validate_indices=None, axis=None, batch_dims=0):
    if batch_dims != 0:
        _unsupported("batch_dims")
    return ops.take(params, indices, axis=0 if axis is None else axis)


def _tf_one_hot(ops, indices, depth, on_value=None, off_value=None, axis=None, dtype=None):
    if on_value is not None or off_value is not None or dtype is not None:
        _unsupported("on_value/off_value/dtype")
    return ops.one_hot(indices, depth, axis=-1 if axis is None else axis)


def _tf_where(ops, condition, x=None, y=None):
    if x is None or y is None:
        _unsupported("one argument (the indices of true values: a data-dependent shape)")
    return ops.where(condition, x, y)


def _tf_crop_to_bounding_box(ops, image, offset_height, offset_width, target_height, target_width):
    if len(image.shape) != 4:
        _unsupported("an image without a batch axis")
    rows = slice(offset_height, offset_height + target_height)
    return image[:, rows, offset_width : offset_width + target_width, :]


def _tf_pad_to_bounding_box(ops, image, offset_height, offset_width, target_height, target_width):
    if len(image.shape) != 4 or None in image.shape[1:3]:
        _unsupported("an image without a batch axis or of unknown size")
    height, width = image.shape[1:3]
    rows = [offset_height, target_height - offset_height - height]
    columns = [offset_width, target_width - offset_width - width]
    return ops.pad(image, [[0, 0], rows, columns, [0, 0]])


def _tf_conv2d(ops, input, filters, strides, padding, data_format="NHWC", dilations=None):
    if data_format != "NHWC" or not isinstance(padding, str):
        _unsupported("data_format other than NHWC or explicit paddings")

    def spatial(value):  # TF takes 1, 2 or 4 (N, H, W, C) numbers
        value = [1] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]
        return tuple(value[1:3]) if len(value) == 4 else tuple(value) * (2 // len(value))

    return ops.conv(input, filters, spatial(strides), padding.lower(), "channels_last", spatial(dilations))


_TF_EQUIVALENTS = {
    "shape": lambda ops, input, out_type=None: ops.shape(input),
    "reshape": lambda ops, tensor, shape: ops.reshape(tensor, batch_reshape_target(tensor, tuple(shape))),
    "transpose": lambda ops, a, perm=None: ops.transpose(a, perm),
    "matmul": _tf_matmul,
    "concat": lambda ops, values, axis: ops.concatenate(values, axis=axis),
    "stack": lambda ops, values, axis=0: ops.stack(values, axis=axis),
    "expand_dims": lambda ops, input, axis: ops.expand_dims(input, axis),
    "squeeze": lambda ops, input, axis=None: ops.squeeze(input, axis),
    "cast": lambda ops, x, dtype: ops.cast(x, _tf_dtype(dtype)),
    "reduce_mean": lambda ops, input_tensor, axis=None, keepdims=False: ops.mean(
        input_tensor, axis, keepdims
    ),
    "reduce_sum": lambda ops, input_tensor, axis=None, keepdims=False: ops.sum(input_tensor, axis, keepdims),
    "reduce_max": lambda ops, input_tensor, axis=None, keepdims=False: ops.max(input_tensor, axis, keepdims),
    "reduce_min": lambda ops, input_tensor, axis=None, keepdims=False: ops.min(input_tensor, axis, keepdims),
    "nn.softmax": _tf_softmax,
    "nn.gelu": lambda ops, features, approximate=False: ops.gelu(features, approximate),
    "einsum": _tf_einsum,
    "identity": lambda ops, input: input,
    "nn.silu": lambda ops, features, beta=1.0: (
        ops.silu(features) if beta == 1.0 else features * ops.sigmoid(beta * features)
    ),
    "nn.swish": lambda ops, features, beta=1.0: (
        ops.silu(features) if beta == 1.0 else features * ops.sigmoid(beta * features)
    ),
    "math.reduce_mean": lambda ops, input_tensor, axis=None, keepdims=False: ops.mean(
        input_tensor, axis, keepdims
    ),
    "math.reduce_sum": lambda ops, input_tensor, axis=None, keepdims=False: ops.sum(
        input_tensor, axis, keepdims
    ),
    "split": _tf_split,
    "image.extract_patches": _tf_extract_patches,
    "clip_by_value": lambda ops, t, clip_value_min, clip_value_max: ops.clip(
        t, clip_value_min, clip_value_max
    ),
    "where": _tf_where,
    "zeros_like": lambda ops, input, dtype=None: ops.zeros_like(input, _tf_dtype(dtype)),
    "ones_like": lambda ops, input, dtype=None: ops.ones_like(input, _tf_dtype(dtype)),
    "tile": lambda ops, input, multiples: ops.tile(input, multiples),
    "gather": _tf_gather,
    "math.unsorted_segment_sum": _segment("segment_sum"),
    "math.unsorted_segment_max": _segment("segment_max"),
    "math.unsorted_segment_min": _segment("segment_min"),
    "math.unsorted_segment_mean": _tf_unsorted_segment_mean,
    "one_hot": _tf_one_hot,
    "nn.moments": lambda ops, x, axes, shift=None, keepdims=False: ops.moments(x, axes, keepdims=keepdims),
    "nn.leaky_relu": lambda ops, features, alpha=0.2: ops.leaky_relu(features, alpha),
    "linalg.matmul": _tf_matmul,
    "image.crop_to_bounding_box": _tf_crop_to_bounding_box,
    "image.pad_to_bounding_box": _tf_pad_to_bounding_box,
    "nn.conv2d": _tf_conv2d,
    "random.normal": lambda ops, shape, mean=0.0, stddev=1.0, dtype="float32", seed=None: random_draw(
        "normal", shape, mean, stddev, _tf_dtype(dtype)
    ),
    "random.uniform": lambda ops, shape, minval=0, maxval=None, dtype="float32", seed=None: random_draw(
        "uniform", shape, minval, 1.0 if maxval is None else maxval, _tf_dtype(dtype)
    ),
}
# TF functions taking the same tensors, positionally, as the keras.ops function they run as:
# keras.ops name -> the TF paths (``tf.sin`` and ``tf.math.sin`` are one function). A call naming
# its tensors (``tf.add(x=a, y=b)``) is not matched and stays TensorFlow's (refused by name).
_SAME_ARGUMENTS = {
    "sigmoid": ("sigmoid", "nn.sigmoid", "math.sigmoid"),
    "tanh": ("tanh", "nn.tanh", "math.tanh"),
    "relu": ("nn.relu",),
    "relu6": ("nn.relu6",),
    "elu": ("nn.elu",),
    "selu": ("nn.selu",),
    "softplus": ("nn.softplus", "math.softplus"),
    "sqrt": ("sqrt", "math.sqrt"),
    "square": ("square", "math.square"),
    "exp": ("exp", "math.exp"),
    "abs": ("abs", "math.abs"),
    "sign": ("sign", "math.sign"),
    "sin": ("sin", "math.sin"),
    "cos": ("cos", "math.cos"),
    "log": ("math.log",),
    "rsqrt": ("math.rsqrt",),
    "maximum": ("maximum", "math.maximum"),
    "minimum": ("minimum", "math.minimum"),
    "add": ("add", "math.add"),
    "multiply": ("multiply", "math.multiply"),
    "power": ("pow", "math.pow"),
    "subtract": ("subtract", "math.subtract"),
    "divide": ("divide", "math.divide"),
    "true_divide": ("truediv", "math.truediv"),
    "equal": ("equal", "math.equal"),
    "not_equal": ("not_equal", "math.not_equal"),
}


def _same_arguments(op: str):
    """``tf.<path>(*tensors)`` as ``keras.ops.<op>(*tensors)``."""
    return lambda ops, *tensors: getattr(ops, op)(*tensors)


_TF_EQUIVALENTS.update({path: _same_arguments(op) for op, paths in _SAME_ARGUMENTS.items() for path in paths})
# Twins used while tracing even without a symbolic argument (a draw would be baked in otherwise).
_TF_ALWAYS = {"random.normal", "random.uniform"}


def _tf_twin(path: str, original, twin):
    def call(*args, **kwargs):
        import keras
        from keras.src.backend.common.keras_tensor import any_symbolic_tensors

        if not is_tracing() or not (path in _TF_ALWAYS or any_symbolic_tensors(args, kwargs)):
            return original(*args, **kwargs)
        kwargs.pop("name", None)
        try:
            return twin(keras.ops, *args, **kwargs)
        except TypeError:  # an option the twin does not take: TensorFlow refuses it as before
            return original(*args, **kwargs)

    call._kerastorch_patch = True
    return call


@contextlib.contextmanager
def tensorflow_twins(layer=None):
    """While tracing, ``tf.shape(x)``, ``tf.reshape``... on symbolic tensors run as keras.ops.

    ``layer``'s own attributes holding one of those functions (``self.stride_layer = tf.identity``,
    kept at ``__init__`` before any patch) hold the twin too while it is traced.
    """
    tf = sys.modules.get("tensorflow")
    saved = []
    patched: dict[int, object] = {}
    if tf is not None:
        for path, twin in _TF_EQUIVALENTS.items():
            *parents, name = path.split(".")
            module = tf
            for parent in parents:
                module = getattr(module, parent, None)
            original = getattr(module, name, None) if module is not None else None
            if original is None or getattr(original, "_kerastorch_patch", False):
                continue
            saved.append((module, name, original))
            patched[id(original)] = _tf_twin(path, original, twin)
            setattr(module, name, patched[id(original)])
    attributes = vars(layer).items() if layer is not None else ()
    held = [(name, value) for name, value in attributes if id(value) in patched]
    for name, value in held:
        object.__setattr__(layer, name, patched[id(value)])
    try:
        yield
    finally:
        for name, value in held:
            object.__setattr__(layer, name, value)
        for module, name, original in saved:
            setattr(module, name, original)
