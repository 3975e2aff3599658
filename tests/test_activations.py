"""Every keras.activations name and the activation layers, numerically against Keras."""

import inspect

import keras
import numpy as np
import pytest
from exactness import assert_exact, random_inputs

import kerastorch_magic as k2t
from kerastorch_magic.converters.activations import KERAS_UNUSABLE_BY_NAME, supported_activations

FORMATS = ["channels_first", "channels_last"]
_NOT_ACTIVATIONS = {"get", "serialize", "deserialize"}


def keras_activation_names() -> list[str]:
    """Every activation function keras.activations exports (aliases included)."""
    return sorted(
        name
        for name, value in vars(keras.activations).items()
        if not name.startswith("_") and inspect.isfunction(value) and name not in _NOT_ACTIVATIONS
    )


def wide_inputs(model, scale: float = 3.0):
    """Random inputs wide enough to reach every piece of piecewise activations (+-1, +-3)."""
    return [a * scale for a in random_inputs(model)]


def test_every_keras_activation_converts_or_is_documented():
    names = keras_activation_names()
    assert len(names) >= 30, names
    missing = sorted(set(names) - set(supported_activations()) - KERAS_UNUSABLE_BY_NAME)
    assert missing == [], f"keras.activations without a converter: {missing}"
    # The documented exceptions really are unusable by name in Keras itself.
    assert KERAS_UNUSABLE_BY_NAME == {"threshold"}
    for name in KERAS_UNUSABLE_BY_NAME:
        with pytest.raises(TypeError):
            keras.layers.Activation(name)(keras.Input((4,)))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", sorted(set(keras_activation_names()) - KERAS_UNUSABLE_BY_NAME))
def test_activation_matches_keras(name, fmt):
    """As a layer after a convolution (channels-first inside), on a Dense, and on a rank-3 Dense."""
    image, vector, sequence = keras.Input((5, 5, 3)), keras.Input((7,)), keras.Input((4, 6))
    conv = keras.layers.Conv2D(6, 1)(image)
    outputs = [
        keras.layers.Activation(name)(conv),
        keras.layers.Dense(6, activation=name)(vector),
        keras.layers.Dense(6, activation=name)(sequence),
    ]
    model = keras.Model([image, vector, sequence], outputs)
    conversion, _ = assert_exact(model, fmt, inputs=wide_inputs(model))
    if name in {"softmax", "log_softmax", "glu", "sparsemax"}:
        assert "dim=1)" in conversion.code  # Keras axis -1 of the NCHW activation is torch dim 1
        assert "dim=2)" in conversion.code  # and of the rank-3 Dense output, the last dim


def test_activation_code_reads_like_pytorch():
    inputs = keras.Input((8,))
    x = keras.layers.Dense(8, activation="leaky_relu")(inputs)
    x = keras.layers.Dense(8, activation="hard_sigmoid")(x)
    x = keras.layers.Dense(8, activation="squareplus")(x)
    x = keras.layers.Dense(8, activation="gelu")(x)
    x = keras.layers.Dense(4, activation="softmax")(x)
    code = assert_exact(keras.Model(inputs, x), inputs=wide_inputs(keras.Model(inputs, x)))[0].code
    assert "F.leaky_relu(self.dense(x), negative_slope=0.2)" in code
    assert "slope 0.2 (torch's default is 0.01)" in code
    assert "F.hardsigmoid(self.dense_1(x))" in code
    assert "relu6(x + 3) / 6" in code
    assert "x = self.dense_2(x)\n" in code  # squareplus reads its input twice: a separate step
    assert "x = (x + torch.sqrt(x * x + 4)) / 2" in code
    assert "F.gelu(self.dense_3(x))" in code
    assert "F.softmax(self.dense_4(x), dim=1)" in code


def test_sparsemax_helper_follows_installed_keras():
    inputs = keras.Input((6,))
    model = keras.Model(inputs, keras.layers.Activation("sparsemax")(inputs))
    data = [np.array([[0.0, 0.5, 1.0, 0.2, -1.0, 0.9], [3.0, 2.9, 2.8, 0.0, 0.1, 2.95]], "float32")]
    conversion, error = assert_exact(model, inputs=data)
    assert "def sparsemax(x, dim):" in conversion.code
    assert "x = sparsemax(x, dim=1)" in conversion.code
    assert error < 1e-6


# -- activation layers -----------------------------------------------------------------------------
RELU_CONFIGS = [
    {},
    {"max_value": 6.0},
    {"max_value": 3.5},
    {"max_value": 0.0},
    {"negative_slope": 0.1},
    {"threshold": 0.5},
    {"max_value": 4.0, "threshold": 0.5},
    {"max_value": 6.0, "negative_slope": 0.1},
    {"negative_slope": 0.2, "threshold": 0.5},
    {"max_value": 2.5, "negative_slope": 0.3, "threshold": 1.0},
]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("options", RELU_CONFIGS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_relu_layer(options, fmt):
    model = keras.Sequential([keras.Input((5, 5, 3)), keras.layers.Conv2D(4, 2), keras.layers.ReLU(**options)])
    assert_exact(model, fmt, inputs=wide_inputs(model))


def test_relu_layer_idioms():
    def code(**options):
        model = keras.Sequential([keras.Input((4,)), keras.layers.ReLU(**options)])
        return assert_exact(model, inputs=wide_inputs(model))[0].code

    assert "x = F.relu(x)" in code()
    assert "x = F.relu6(x)" in code(max_value=6.0)
    assert "x = torch.clamp(x, 0.0, 3.5)" in code(max_value=3.5)
    assert "x = F.leaky_relu(x, negative_slope=0.1)" in code(negative_slope=0.1)
    assert "F.threshold(x, 0.5, 0.0)" in code(threshold=0.5)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("slope", [None, 0.01, 0.5])
def test_leaky_relu_layer(slope, fmt):
    layer = keras.layers.LeakyReLU() if slope is None else keras.layers.LeakyReLU(negative_slope=slope)
    model = keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Conv2D(3, 3), layer])
    conversion, _ = assert_exact(model, fmt)
    if slope is None:  # Keras's layer default is 0.3, torch's 0.01: explicit and commented
        assert "F.leaky_relu(x, negative_slope=0.3)" in conversion.code
        assert "layer default 0.3" in conversion.code


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("alpha", [1.0, 0.5, 2.0])
def test_elu_layer(alpha, fmt):
    model = keras.Sequential([keras.Input((8, 3)), keras.layers.Conv1D(4, 3), keras.layers.ELU(alpha=alpha)])
    conversion, _ = assert_exact(model, fmt, inputs=wide_inputs(model))
    assert ("F.elu(x)" if alpha == 1.0 else f"F.elu(x, alpha={alpha!r})") in conversion.code


SOFTMAX_AXES = [-1, 1, 2, 3, [1, 2], (-1, 1), [3]]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("axis", SOFTMAX_AXES, ids=str)
def test_softmax_layer(axis, fmt):
    model = keras.Sequential([keras.Input((4, 5, 3)), keras.layers.Conv2D(6, 1), keras.layers.Softmax(axis=axis)])
    conversion, _ = assert_exact(model, fmt, inputs=wide_inputs(model))
    if axis == -1:
        assert "x = F.softmax(x, dim=1)" in conversion.code  # Keras's channel axis, NCHW dim 1
    if axis == [1, 2]:
        assert "torch.logsumexp(x, dim=(2, 3), keepdim=True)" in conversion.code


@pytest.mark.parametrize("fmt", FORMATS)
def test_softmax_layer_on_sequences(fmt):
    model = keras.Sequential([keras.Input((7, 3)), keras.layers.Conv1D(4, 2), keras.layers.Softmax(axis=1)])
    assert_exact(model, fmt)


def prelu_model(shared_axes, before_conv=False):
    layers = [keras.Input((5, 4, 3))]
    if before_conv:
        layers += [keras.layers.PReLU(shared_axes=shared_axes), keras.layers.Conv2D(4, 2)]
    else:
        layers += [keras.layers.Conv2D(4, 2), keras.layers.PReLU(shared_axes=shared_axes)]
    return keras.Sequential(layers)


PRELU_CASES = [
    (None, False, "nn.ParameterDict"),  # one slope per (H, W, C) element
    ([1, 2], False, "nn.PReLU(4)"),  # per channel, channels-first inside: nn.PReLU
    ([1, 2, 3], False, "nn.PReLU()"),  # one slope for all
    ([3], False, "nn.ParameterDict"),  # per (H, W) position, shared over channels
    ([1], False, "nn.ParameterDict"),
    ([1, 2], True, None),  # on the model input, before a convolution
]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("shared_axes,before_conv,expected", PRELU_CASES)
def test_prelu_layer(shared_axes, before_conv, expected, fmt):
    conversion, _ = assert_exact(prelu_model(shared_axes, before_conv), fmt)
    if expected:
        assert expected in conversion.code
    if expected == "nn.ParameterDict":
        assert "F.relu(x) - self.p_re_lu.alpha * F.relu(-x)" in conversion.code


def test_prelu_before_conv_uses_nn_prelu_when_channels_first():
    conversion, _ = assert_exact(prelu_model([1, 2], before_conv=True), "channels_first")
    assert "self.p_re_lu = nn.PReLU(3)" in conversion.code
    assert "nn.init.zeros_(self.p_re_lu.weight)" in conversion.code  # Keras's zeros, not torch's 0.25


@pytest.mark.parametrize("fmt", FORMATS)
def test_prelu_after_dense(fmt):
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5), keras.layers.PReLU()])
    conversion, _ = assert_exact(model, fmt)
    assert "nn.PReLU(5)" in conversion.code


def test_custom_activation_sharing_a_builtin_name_is_refused():
    def relu(x):
        return x * 2

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation=relu, name="odd")])
    with pytest.raises(k2t.ConversionError, match="custom function") as info:
        k2t.convert(model)
    assert info.value.layers == [("odd", "Dense")]
