"""keras.ops calls inside functional models: every op of the table against Keras.

Each model batches many ops (one output each) on tensors arriving in both torch layouts: ``conv``
comes from a Conv2D (channels-first in torch with the channels_first input format), ``dense``
from a Dense (Keras's layout), so element-wise ops also broadcast across layouts. Outputs are
compared in value (float32: relative error <= 1e-5; integers and booleans: equal) and in dtype.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import torch
from exactness import assert_exact, check_source, randomise_weights, relative_error, run_both

import kerastorch_magic as k2t

L, ops = keras.layers, keras.ops
FORMATS = ("channels_first", "channels_last")


def assert_outputs_exact(model, names, fmt, inputs=None, int64_ok=()):
    """Convert ``model`` and compare every named output with Keras (values and dtypes)."""
    rng = np.random.default_rng(3)
    if inputs is None:
        inputs = [
            rng.integers(0, 10, (2, *t.shape[1:])).astype(t.dtype)
            if "int" in str(t.dtype)
            else rng.normal(0.0, 1.0, (2, *t.shape[1:])).astype("float32")
            for t in model.inputs
        ]
    randomise_weights(model, inputs=inputs)
    conversion = k2t.convert(model, input_format=fmt)
    check_source(conversion.code)
    expected, actual = run_both(model, conversion, inputs)
    assert len(actual) == len(names)
    for name, spec, want, got in zip(names, conversion.outputs, expected, actual):
        want = np.transpose(want, spec.perm)
        got_array = got.numpy()
        assert got_array.shape == want.shape, f"{name}: shape {got_array.shape} != {want.shape}"
        if name not in int64_ok:
            assert got.dtype == torch.from_numpy(want).dtype, f"{name}: dtype {got.dtype} != {want.dtype}"
        if np.issubdtype(want.dtype, np.floating):
            error = relative_error(want, got_array)
            assert error <= 1e-5, f"{name}: relative error {error:.3g}\n{conversion.code}"
        else:
            assert np.array_equal(want, got_array.astype(want.dtype)), f"{name} differs\n{conversion.code}"
    return conversion


def branches():
    """An image input, a channels-first-in-torch branch and a Keras-layout branch of equal shape."""
    image = keras.Input((5, 6, 3), name="image")
    conv = L.Conv2D(4, 3, padding="same", name="conv")(image)
    dense = L.Dense(4, name="dense")(image)
    return image, conv, dense


def build(outputs: dict, inputs):
    return keras.Model(inputs, list(outputs.values())), list(outputs)


# -- element-wise ---------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
def test_elementwise_ops_broadcast_across_layouts(fmt):
    image, conv, dense = branches()
    positive = ops.abs(conv) + 0.5
    unit = ops.tanh(conv) * 0.9
    table = ops.mean(conv, axis=(0, 1))  # (6, 4): no batch axis, broadcast NumPy-style
    outputs = {
        "x + 1.0": conv + 1.0,
        "2.0 - x": 2.0 - conv,
        "x * y mixed layouts": conv * dense,
        "x / 3": conv / 3,
        "3 / x": 3.0 / positive,
        "x // 0.7": conv // 0.7,
        "x % 0.5": conv % 0.5,
        "x ** 2": conv**2,
        "2 ** x": ops.power(2.0, conv),
        "-x": -conv,
        "x + rank-2 tensor": conv + table,
        "x * rank-1 array": conv * np.arange(1, 5, dtype="float32"),
        "x + (1, 1, 1, 4) array": conv
        + np.full((1, 1, 1, 4), -0.5, "float32") * np.arange(4, dtype="float32"),
        "x > 0": conv > 0,
        "x >= y": conv >= dense,
        "x < 0.2": conv < 0.2,
        "x <= y": conv <= dense,
        "x == y": ops.equal(ops.round(conv), ops.round(dense)),
        "x != 0": conv != 0,
        "logical_and": ops.logical_and(conv > 0, dense > 0),
        "logical_or": ops.logical_or(conv > 0, dense < 0),
        "logical_xor": ops.logical_xor(conv > 0, dense > 0),
        "logical_not": ops.logical_not(conv > 0),
        "maximum(x, y)": ops.maximum(conv, dense),
        "minimum(x, 0.5)": ops.minimum(conv, 0.5),
        "maximum(0.0, x)": ops.maximum(0.0, conv),
        "arctan2": ops.arctan2(conv, dense),
        "where": ops.where(conv > 0, conv, 0.1 * dense),
        "where scalar": ops.where(conv > dense, 1.0, conv),
        "clip": ops.clip(conv, -0.5, 0.7),
        "round": ops.round(conv * 10),
        "round decimals": ops.round(conv, 2),
        "cast int32": ops.cast(conv * 10, "int32"),
        "cast bool": ops.cast(ops.round(conv), "bool"),
        "nan_to_num": ops.nan_to_num(ops.log(conv), nan=0.5, neginf=-3.0),
        "stop_gradient": ops.stop_gradient(conv),
    }
    unary = "abs square exp expm1 sin cos tan arctan sinh cosh tanh arcsinh floor ceil trunc sign erf"
    for name in [*unary.split(), "isnan", "isinf", "isfinite"]:
        outputs[name] = getattr(ops, name)(conv)
    for name in ["sqrt", "log", "log1p", "log2", "log10", "reciprocal", "rsqrt", "arccosh"]:
        outputs[name] = getattr(ops, name)(positive + (1.0 if name == "arccosh" else 0.0))
    for name in ["arcsin", "arccos", "arctanh", "erfinv"]:
        outputs[name] = getattr(ops, name)(unit)
    model, names = build(outputs, image)
    code = assert_outputs_exact(model, names, fmt).code
    assert "conv + 1.0" in code and "2.0 - conv" in code
    assert "torch.clamp(conv, min=0.0)" in code  # maximum with a number is a clamp
    if fmt == "channels_first":  # arrays are re-laid to broadcast against channels-first tensors
        assert "nn.Buffer(torch.empty(4, 1, 1))" in code


@pytest.mark.parametrize("fmt", FORMATS)
def test_integer_ops_keep_keras_dtypes(fmt):
    tokens = keras.Input((7,), dtype="int32", name="tokens")
    table = keras.Variable(np.linspace(-1, 1, 30, dtype="float32").reshape(10, 3), name="table")
    outputs = {
        "t // 3": tokens // 3,
        "t % 3": tokens % 3,
        "t / 2 (float)": tokens / 2,
        "t * 2": tokens * 2,
        "t + 0.5": tokens + 0.5,
        "t != 0 (mask)": tokens != 0,
        "any(mask)": ops.any(tokens != 0, axis=-1),
        "sum int32": ops.sum(tokens, axis=-1),
        "sum of bools": ops.sum(ops.cast(tokens > 4, "int32"), axis=1),
        "mean of ints": ops.mean(tokens, axis=-1),
        "cumsum int32": ops.cumsum(tokens, axis=1),
        "sqrt of ints": ops.sqrt(tokens),
        "cast float": ops.cast(tokens, "float32"),
        "where ints": ops.where(tokens > 3, tokens, 0),
        "one_hot": ops.one_hot(tokens, 10),
        "one_hot axis 1": ops.one_hot(tokens, 10, axis=1),
        "take list": ops.take(tokens, [0, 2, 5], axis=1),
        "take rows of a weight (embedding lookup)": ops.take(table, tokens, axis=0),
        "take with tensor indices": ops.take(tokens, ops.argsort(tokens, axis=-1)[:, :3], axis=1),
        "argmax": ops.argmax(tokens, axis=-1),
        "count_nonzero": ops.count_nonzero(tokens, axis=1),
        "max": ops.max(tokens, axis=1),
    }
    model, names = build(outputs, tokens)
    assert_outputs_exact(model, names, fmt)


def test_keras_mask_ops_convert():
    """Embedding(mask_zero=True) -> GlobalAveragePooling1D: Keras adds NotEqual/Any nodes itself."""
    tokens = keras.Input((6,), dtype="int32")
    embedded = L.Embedding(10, 4, mask_zero=True)(tokens)
    mask = ops.any(ops.not_equal(embedded, 0), axis=-1)
    outputs = {"mask": mask, "masked": embedded * ops.cast(mask, "float32")[:, :, None]}
    model, names = build(outputs, tokens)
    code = assert_outputs_exact(model, names, "channels_first").code
    assert "!= 0" in code and ".any(dim=2)" in code


# -- shape ----------------------------------------------------------------------------------------
class _Boxes(keras.layers.Layer):
    """RetinaNet's head: (N, H, W, 4k) -> (N, H * W * k, 4), the batch read with ops.shape."""

    def call(self, x):
        n = ops.shape(x)[0]  # None while tracing: the batch, kept as the port's x.shape[0]
        return ops.reshape(x, [n, -1, 4])


@pytest.mark.parametrize("fmt", FORMATS)
def test_reshape_by_the_batch_with_unknown_spatial_sizes(fmt):
    image = keras.Input((None, None, 3))
    boxes = _Boxes()(L.Conv2D(8, 3, padding="same")(image))
    model = keras.Model(image, boxes)
    x = np.random.default_rng(0).normal(size=(2, 6, 5, 3)).astype("float32")
    conversion, _ = assert_exact(model, fmt, inputs=[x])
    assert ".reshape(x.shape[0], -1, 4)" in conversion.code


class _BoxNet(keras.Model):
    """A subclassed model (traced whole): the comparison steps its reshape by the batch too."""

    def __init__(self):
        super().__init__()
        self.conv = L.Conv2D(8, 3, padding="same")

    def call(self, x):
        x = self.conv(x)
        return ops.reshape(x, [ops.shape(x)[0], -1, 4])


def test_compare_steps_a_traced_reshape_by_the_batch():
    model = _BoxNet()
    model.build((None, None, None, 3))
    x = np.random.default_rng(0).normal(size=(2, 5, 4, 3)).astype("float32")
    comparison = k2t.compare(model, k2t.convert(model), inputs=x, device="cpu")
    assert comparison.first_failure is None and comparison.error is None, comparison.summary()
    assert len(comparison.compared) >= 2


@pytest.mark.parametrize("fmt", FORMATS)
def test_shape_ops(fmt):
    image, conv, dense = branches()
    halves = ops.split(conv, 2, axis=-1)
    parts = ops.split(conv, [1, 3], axis=1)
    outputs = {
        "reshape": ops.reshape(conv, (-1, 120)),
        "reshape keeps batch": ops.reshape(conv, (-1, 30, 4)),
        "transpose": ops.transpose(conv, (0, 2, 1, 3)),
        "transpose all": ops.transpose(ops.mean(conv, axis=-1)),
        "swapaxes": ops.swapaxes(conv, 1, -1),
        "moveaxis": ops.moveaxis(conv, -1, 1),
        "expand_dims": ops.expand_dims(conv, 1),
        "expand_dims two": ops.expand_dims(dense, (1, -1)),
        "squeeze": ops.squeeze(ops.mean(conv, axis=2, keepdims=True), axis=2),
        "squeeze all": ops.squeeze(ops.sum(conv, axis=(1, 2), keepdims=True)),
        "concatenate mixed": ops.concatenate([conv, dense], axis=-1),
        "concatenate axis 1": ops.concatenate([conv, conv], axis=1),
        "stack": ops.stack([conv, dense], axis=1),
        "stack last": ops.stack([conv, dense], axis=-1),
        "split 0": halves[0],
        "split 1": halves[1],
        "split at 0": parts[0],
        "split at 1": parts[1],
        "split at 2": parts[2],
        "tile": ops.tile(conv, (1, 2, 1, 3)),
        "tile short": ops.tile(dense, (2, 1)),
        "repeat": ops.repeat(conv, 2, axis=2),
        "repeat flat": ops.repeat(dense, 2),
        "broadcast_to": ops.broadcast_to(ops.mean(conv, axis=(0, 1, 2)), (3, 5, 4)),
        "flip": ops.flip(conv, axis=(1, -1)),
        "roll": ops.roll(conv, 2, axis=2),
        "roll flat": ops.roll(dense, 3),
        "ravel": ops.ravel(conv),
        "pad": ops.pad(conv, ((0, 0), (1, 2), (0, 1), (0, 0))),
        "pad value": ops.pad(conv, ((0, 0), (1, 1), (2, 0), (1, 0)), constant_values=0.5),
        "pad reflect": ops.pad(conv, ((0, 0), (1, 2), (2, 1), (0, 0)), mode="reflect"),
        "pad reflect last axes": ops.pad(dense, ((0, 0), (0, 0), (1, 2), (1, 1)), mode="reflect"),
        "take axis 3": ops.take(conv, [3, 0], axis=3),
        "take_along_axis": ops.take_along_axis(conv, ops.argsort(conv, axis=1), axis=1),
    }
    model, names = build(outputs, image)
    assert_outputs_exact(model, names, fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_get_item(fmt):
    image, conv, dense = branches()
    outputs = {
        "x[:, 1:-1]": conv[:, 1:-1],
        "x[:, ::-1]": conv[:, ::-1],
        "x[:, ::-2, 1:]": conv[:, ::-2, 1:],
        "x[:, 3:0:-1]": conv[:, 3:0:-1],
        "x[..., 0]": conv[..., 0],
        "x[..., ::-1] (RGB to BGR)": dense[..., ::-1],
        "x[:, None, 2]": conv[:, None, 2],
        "x[..., None]": conv[..., None],
        "x[:, -2:, :, 1:3]": conv[:, -2:, :, 1:3],
        "x[:, 2, -1]": conv[:, 2, -1],
        "x[0]": conv[0],
        "x[:, 1:4:2, ..., ::-1]": conv[:, 1:4:2, ..., ::-1],
    }
    model, names = build(outputs, image)
    code = assert_outputs_exact(model, names, fmt).code
    assert ".flip(" in code


@pytest.mark.parametrize("fmt", FORMATS)
def test_preprocess_input_functions(fmt):
    """Every keras.applications preprocessing mode (caffe, tf, torch) in front of a Conv2D."""
    image = keras.Input((6, 7, 3))
    outputs = {}
    for name, module in (
        ("caffe", keras.applications.vgg16),
        ("tf", keras.applications.mobilenet_v2),
        ("torch", keras.applications.densenet),
    ):
        outputs[name] = L.Conv2D(2, 3, name=f"conv_{name}")(module.preprocess_input(image))
    model, names = build(outputs, image)
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 6, 7, 3)).astype("float32")
    code = assert_outputs_exact(model, names, fmt, inputs=[pixels]).code
    assert "nn.Buffer" in code  # the mean/std arrays are buffers, laid out like the image
    if fmt == "channels_first":  # RGB -> BGR stacked at dim 1: no permute anywhere
        assert "torch.stack([get_item, get_item_1, get_item_2], dim=1)" in code
        assert "permute" not in code


# -- reductions -----------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
def test_reductions(fmt):
    image, conv, dense = branches()
    values, indices = ops.top_k(conv, 2)
    outputs = {
        "sum axis 1": ops.sum(conv, axis=1),
        "sum keepdims": ops.sum(conv, axis=(1, 2), keepdims=True),
        "sum all": ops.sum(conv),
        "mean -1": ops.mean(conv, axis=-1),
        "mean (1, 2)": ops.mean(conv, axis=(1, 2)),
        "max": ops.max(conv, axis=2),
        "min keepdims": ops.min(conv, axis=-1, keepdims=True),
        "amax": ops.amax(conv, axis=(1, 3)),
        "prod": ops.prod(ops.tanh(conv) + 1.0, axis=1),
        "any": ops.any(conv > 1.0, axis=(1, 2)),
        "all": ops.all(conv > -1.0, axis=-1),
        "std": ops.std(conv, axis=1),
        "var keepdims": ops.var(conv, axis=(1, 2), keepdims=True),
        "logsumexp": ops.logsumexp(conv, axis=(1, 2)),
        "logsumexp all": ops.logsumexp(dense),
        "argmax -1": ops.argmax(conv, axis=-1),
        "argmin keepdims": ops.argmin(conv, axis=1, keepdims=True),
        "argmax flat": ops.argmax(conv),
        "count_nonzero": ops.count_nonzero(conv > 0, axis=2),
        "average": ops.average(conv, axis=1),
        "cumsum": ops.cumsum(conv, axis=2),
        "cumsum flat": ops.cumsum(dense),
        "cumprod": ops.cumprod(ops.tanh(conv) + 1.0, axis=-1),
        "sort": ops.sort(conv, axis=1),
        "argsort": ops.argsort(conv, axis=-1),
        "top_k values": values,
        "top_k indices": indices,
        "norm": ops.norm(conv, axis=-1),
        "norm ord 1 keepdims": ops.norm(conv, ord=1, axis=1, keepdims=True),
        "norm fro": ops.norm(conv, axis=(1, 2)),
        "median": ops.median(conv, axis=1),
        "median flat": ops.median(dense),
        "quantile": ops.quantile(conv, 0.3, axis=-1, keepdims=True),
        "percentile midpoint": ops.percentile(conv, 70.0, axis=2, method="midpoint"),
    }
    model, names = build(outputs, image)
    assert_outputs_exact(model, names, fmt, int64_ok={"top_k indices"})


# -- nn and linear algebra ------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
def test_nn_ops(fmt):
    image, conv, dense = branches()
    outputs = {
        name: getattr(ops, name)(conv)
        for name in [
            "relu",
            "relu6",
            "sigmoid",
            "softplus",
            "softsign",
            "silu",
            "log_sigmoid",
            "hard_sigmoid",
            "hard_silu",
            "selu",
            "tanh_shrink",
            "hard_tanh",
            "sparse_plus",
            "sparse_sigmoid",
            "elu",
            "celu",
            "soft_shrink",
            "hard_shrink",
            "squareplus",
        ]  # fmt: skip
    }
    outputs.update(
        {
            "x * sigmoid(x) (swish by hand)": conv * ops.sigmoid(conv),
            "gelu approximate": ops.gelu(conv),
            "gelu exact": ops.gelu(conv, approximate=False),
            "leaky_relu": ops.leaky_relu(conv, negative_slope=0.3),
            "elu alpha": ops.elu(conv, alpha=0.5),
            "threshold": ops.threshold(conv, 0.2, -1.0),
            "softmax axis 1": ops.softmax(conv, axis=1),
            "log_softmax": ops.log_softmax(conv, axis=-1),
            "glu": ops.glu(conv, axis=-1),
            "matmul constant": ops.matmul(conv, np.linspace(-1, 1, 20, dtype="float32").reshape(4, 5)),
            "x @ y^T": dense @ ops.swapaxes(conv, -1, -2),
            "einsum": ops.einsum("nhwc,nhwd->ncd", conv, dense),
            "einsum ellipsis": ops.einsum("...c,...c->...", conv, dense),
            "dot": ops.dot(conv, np.ones((4, 2), "float32")),
            "tensordot": ops.tensordot(conv, np.ones((4, 3), "float32"), axes=1),
            "resize bilinear": ops.image.resize(conv, (8, 9)),
            "resize nearest": ops.image.resize(conv, (10, 3), interpolation="nearest"),
            "resize antialiased": ops.image.resize(conv, (3, 4), antialias=True),
            "resize bicubic antialiased": ops.image.resize(
                conv, (3, 9), interpolation="bicubic", antialias=True
            ),
        }
    )
    model, names = build(outputs, image)
    code = assert_outputs_exact(model, names, fmt).code
    assert 'F.gelu(conv, approximate="tanh")' in code
    if fmt == "channels_first":
        assert 'torch.einsum("nchw,nhwd->ncd", conv, dense)' in code  # subscripts follow the layout


def test_dot_product_attention():
    tokens = keras.Input((5, 8))
    query, key, value = (L.Reshape((5, 2, 4), name=f"split_{n}")(L.Dense(8, name=n)(tokens)) for n in "qkv")
    padding = keras.Input((1, 1, 5), dtype="bool")  # (batch, heads, query, key): True attends
    outputs = {
        "plain": ops.dot_product_attention(query, key, value),
        "causal": ops.dot_product_attention(query, key, value, is_causal=True),
        "mask": ops.dot_product_attention(query, key, value, mask=padding),
        "bias and scale": ops.dot_product_attention(
            query, key, value, bias=ops.cast(padding, "float32"), scale=0.3
        ),
    }
    model = keras.Model([tokens, padding], list(outputs.values()))
    rng = np.random.default_rng(2)
    mask = rng.integers(0, 2, (2, 1, 1, 5)).astype(bool)
    mask[..., 0] = True  # every query attends to something
    inputs = [rng.normal(size=(2, 5, 8)).astype("float32"), mask]
    code = assert_outputs_exact(model, list(outputs), "channels_first", inputs=inputs).code
    assert "F.scaled_dot_product_attention(" in code


def test_resize_of_the_input_takes_it_channels_first():
    image = keras.Input((6, 5, 3))
    resized = L.Conv2D(2, 1)(ops.image.resize(image, (9, 4)))
    model = keras.Model(image, resized)
    conversion = assert_outputs_exact(model, ["resized"], "channels_first")
    assert conversion.inputs[0].perm == (0, 3, 1, 2)
    assert "permute" not in conversion.code


def test_keras_variable_operand_is_a_parameter():
    """``ops.matmul(x, w)`` with a keras.Variable ``w``: an nn.Parameter, not a baked constant."""
    inputs = keras.Input((3,))
    weight = keras.Variable(np.arange(6, dtype="float32").reshape(3, 2) / 6, name="projection")
    model = keras.Model(inputs, ops.matmul(inputs, weight) + weight[0])
    conversion = assert_outputs_exact(model, ["projected"], "channels_first")
    module = conversion.build()
    assert [name for name, _ in module.named_parameters()] == ["projection"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_more_ops(fmt):
    image, conv, dense = branches()
    first, second = ops.unstack(conv[:, :, :2], axis=2)  # every output used: no unused unpacking
    mean, variance = ops.moments(conv, axes=(1, 2))
    outputs = {
        "divide": ops.divide(conv, ops.abs(dense) + 1.0),
        "hypot": ops.hypot(conv, dense),
        "logaddexp": ops.logaddexp(conv, dense),
        "exp2": ops.exp2(conv),
        "erfc": ops.erfc(conv),
        "convert_to_tensor": ops.convert_to_tensor(conv),
        "convert_to_tensor int": ops.convert_to_tensor(ops.round(conv), dtype="int32"),
        "signbit": ops.signbit(conv),
        "amin": ops.amin(conv, axis=(1, 2)),
        "zeros_like": ops.zeros_like(conv),
        "ones_like int": ops.ones_like(conv, dtype="int32"),
        "full_like": ops.full_like(conv, 0.25),
        "copy": ops.copy(conv),
        "slice": ops.slice(conv, (0, 1, 2, 0), (2, 3, 3, 4)),
        "unstack 0": first,
        "unstack 1": second,
        "tril": ops.tril(conv),
        "triu k=1": ops.triu(conv, k=1),
        "patches": ops.image.extract_patches(conv, 2),
        "patches overlapping": ops.image.extract_patches(dense, (3, 2), strides=(1, 2)),
        "patches same": ops.image.extract_patches(conv, 3, strides=2, padding="same"),
        "depth_to_space": ops.depth_to_space(conv, 2),
        "space_to_depth": ops.space_to_depth(ops.image.resize(conv, (4, 6)), 2),
        "normalize": ops.normalize(conv, axis=-1),
        "normalize order 1": ops.normalize(conv, axis=1, order=1),
        "layer_normalization": ops.layer_normalization(conv, epsilon=1e-3),
        "layer_normalization affine": ops.layer_normalization(
            dense, gamma=np.linspace(0.5, 1.5, 4, dtype="float32"), beta=ops.mean(conv, axis=(0, 1, 2))
        ),
        "rms_normalization": ops.rms_normalization(dense, scale=np.full(4, 2.0, "float32")),
        "moments mean": mean,
        "moments variance": variance,
    }
    model, names = build(outputs, image)
    assert_outputs_exact(model, names, fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_conv_and_pool_ops(fmt):
    """``ops.conv(x, kernel)`` as a weight-standardising custom layer writes it; the pooling ops."""
    image = keras.Input((5, 6, 3))  # layers not named "conv": the ops take that name
    conv = L.Conv2D(4, 1, name="features")(image)
    dense = L.Dense(4, name="projection")(image)
    rng = np.random.default_rng(5)
    kernel = keras.Variable(rng.normal(size=(3, 2, 4, 5)).astype("float32"), name="kernel")
    standardised = (kernel - ops.mean(kernel, axis=(0, 1, 2))) / ops.std(kernel, axis=(0, 1, 2))
    signal = ops.mean(conv, axis=1)  # (N, 6, 4)
    outputs = {
        "conv same": ops.conv(conv, kernel, padding="same"),
        "conv strided same": ops.conv(dense, kernel, strides=2, padding="same"),
        "conv dilated valid": ops.conv(conv, kernel, dilation_rate=(2, 1)),
        "conv strided valid": ops.conv(conv, kernel, strides=(1, 2)),
        "conv standardised kernel": ops.conv(conv, standardised),
        "max_pool": ops.max_pool(conv, 2),
        "max_pool same": ops.max_pool(dense, 3, strides=2, padding="same"),
        "average_pool": ops.average_pool(conv, (2, 3), strides=1),
        "average_pool same": ops.average_pool(conv, 3, strides=1, padding="same"),
        "max_pool1d": ops.max_pool(signal, 2),
        "conv1d": ops.conv(
            signal, keras.Variable(rng.normal(size=(3, 4, 2)).astype("float32")), padding="same"
        ),
    }
    model, names = build(outputs, image)
    conversion = assert_outputs_exact(model, names, fmt)
    assert "F.conv2d(features, self.kernel.permute(3, 2, 0, 1)" in conversion.code
    assert "kernel" in dict(conversion.build().named_parameters())


class _LogScale(L.Layer):
    """A traced custom layer applying an op to its weight alone (``ops.exp(self.log_scale)``)."""

    def build(self, shape):
        self.log_scale = self.add_weight(shape=(shape[-1],), initializer="zeros", name="log_scale")

    def call(self, x):
        return x * ops.exp(self.log_scale)


def test_an_op_on_a_weight_alone_reads_the_parameter_without_assigning_it():
    inputs = keras.Input((5, 4))
    conversion = assert_outputs_exact(keras.Model(inputs, _LogScale()(inputs)), ["scaled"], "channels_first")
    assert "self.log_scale = torch" not in conversion.code
    assert "torch.exp(self.log_scale)" in conversion.code


# -- refusals -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make, match",
    [
        (lambda x: ops.image.resize(x, (4, 4), interpolation="bicubic"), "bicubic without antialias"),
        (lambda x: ops.image.resize(x, (4, 4), interpolation="area"), "interpolation='area'"),
        (lambda x: ops.average_pool(x, 2, strides=2, padding="same"), "uneven padding"),
        (lambda x: ops.broadcast_to(ops.mean(x, axis=0, keepdims=True), ops.shape(x)), "known only when"),
        (lambda x: ops.broadcast_to(ops.mean(x, axis=0), ops.shape(x)), "known only when"),
        (lambda x: ops.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="symmetric"), "symmetric"),
        (lambda x: x[:, 4:1:-2], None),
        (lambda x: ops.dot(x, np.ones((2, 3, 2), "float32")), "rank > 2"),
    ],
    ids=[
        "bicubic",
        "area",
        "uneven average_pool",
        "broadcast to the batch",
        "broadcast to a new batch axis",
        "symmetric pad",
        "negative step ok",
        "dot of ranks 4 and 3",
    ],
)
def test_unsupported_options_are_refused_by_name(make, match):
    inputs = keras.Input((5, 6, 3))
    model = keras.Model(inputs, make(inputs))
    if match is None:  # known size: the negative step converts
        assert_outputs_exact(model, ["out"], "channels_last")
        return
    with pytest.raises(k2t.ConversionError, match=match) as info:
        k2t.convert(model)
    assert len(info.value.layers) == 1
    assert "keras.ops call" in str(info.value)  # not taken for a layer
