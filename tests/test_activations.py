"""Every keras.activations name and the activation layers, numerically against Keras.

Configurations are grouped as branches of one multi-output model per test (one conversion, one
ruff run), and every output is checked and reported by its label.
"""

import inspect
import re

import keras
import numpy as np
import pytest
import torch
from exactness import RTOL, check_source, random_inputs, randomise_weights, relative_error, run_both, unwrap

import kerastorch_magic as k2t
from kerastorch_magic.converters.activations import KERAS_UNUSABLE_BY_NAME, supported_activations

FORMATS = ["channels_first", "channels_last"]
_NOT_ACTIVATIONS = {"get", "serialize", "deserialize"}


def assert_each_output_exact(model, fmt, labels, inputs=None, scale=1.0, rtol=RTOL):
    """Like exactness.assert_exact, but every output is compared and failures name their label.

    Returns (conversion, {label: relative error}).
    """
    assert len(labels) == len(model.outputs)
    if inputs is None:
        inputs = [a * np.float32(scale) if a.dtype == np.float32 else a for a in random_inputs(model)]
    randomise_weights(model, inputs=inputs)
    conversion = k2t.convert(model, input_format=fmt)
    check_source(conversion.code)
    expected, actual = run_both(model, conversion, inputs)
    errors = {}
    for label, spec, keras_out, torch_out in zip(labels, conversion.outputs, expected, actual):
        keras_out = np.transpose(keras_out, spec.perm)
        assert tuple(torch_out.shape) == keras_out.shape, f"{label}: shape {tuple(torch_out.shape)}"
        errors[label] = relative_error(keras_out, torch_out.numpy())
    bad = {label: error for label, error in errors.items() if not error <= rtol}
    assert not bad, f"relative errors above {rtol:g}: {bad}\n{conversion.code}"
    return conversion, errors


def keras_activation_names() -> list[str]:
    """Every activation function keras.activations exports (aliases included)."""
    return sorted(
        name
        for name, value in vars(keras.activations).items()
        if not name.startswith("_") and inspect.isfunction(value) and name not in _NOT_ACTIVATIONS
    )


USABLE = sorted(set(keras_activation_names()) - KERAS_UNUSABLE_BY_NAME)


def test_every_keras_activation_converts_or_is_documented():
    names = keras_activation_names()
    assert len(names) >= 32, names
    missing = sorted(set(names) - set(supported_activations()) - KERAS_UNUSABLE_BY_NAME)
    assert missing == [], f"keras.activations without a converter: {missing}"
    # The one documented exception is unusable by name in Keras itself (no default arguments).
    assert KERAS_UNUSABLE_BY_NAME == {"threshold"}
    with pytest.raises(TypeError, match="missing 2 required positional arguments"):
        keras.layers.Activation("threshold")(np.ones((1, 4), "float32"))


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_activation_matches_keras(fmt):
    """Each name as a layer after a convolution (channels-first inside), on a Dense, on a rank-3 Dense."""
    image, vector, sequence = keras.Input((5, 5, 3)), keras.Input((7,)), keras.Input((4, 6))
    conv = keras.layers.Conv2D(6, 1)(image)
    outputs, labels = [], []
    for name in USABLE:
        outputs += [
            keras.layers.Activation(name)(conv),
            keras.layers.Dense(6, activation=name)(vector),
            keras.layers.Dense(6, activation=name)(sequence),
        ]
        labels += [f"Activation({name})", f"Dense(activation={name})", f"Dense(activation={name}) rank 3"]
    model = keras.Model([image, vector, sequence], outputs)
    # Inputs wide enough to reach every piece of the piecewise activations (+-1, +-3).
    conversion, errors = assert_each_output_exact(model, fmt, labels, scale=3.0)
    print(f"worst relative error ({fmt}): {max(errors.values()):.2e} ({max(errors, key=errors.get)})")
    code = unwrap(conversion.code)
    for function in ("F.softmax", "F.log_softmax", "F.glu", "sparsemax"):  # Keras axis -1:
        call = re.escape(function) + r"\("
        assert re.search(call + r"\w+, dim=1\)", code), function  # NCHW activation: dim 1
        assert re.search(call + r"self\.dense_\d+\(\w+\), dim=2\)", code), function  # rank 3: dim 2


def test_activation_code_reads_like_pytorch():
    inputs = keras.Input((8,))
    x = keras.layers.Dense(8, activation="leaky_relu")(inputs)
    x = keras.layers.Dense(8, activation="hard_sigmoid")(x)
    x = keras.layers.Dense(8, activation="squareplus")(x)
    x = keras.layers.Dense(8, activation="gelu")(x)
    x = keras.layers.Dense(4, activation="softmax")(x)
    conversion = assert_each_output_exact(keras.Model(inputs, x), "channels_first", ["out"], scale=3.0)[0]
    code = unwrap(conversion.code)
    assert "F.leaky_relu(self.dense(x), negative_slope=0.2)" in code
    assert "slope 0.2 (torch's default is 0.01)" in code
    assert "F.hardsigmoid(self.dense_1(x))" in code
    assert "relu6(x + 3) / 6" in code
    assert "x = self.dense_2(x)\n" in code  # squareplus reads its input twice: a separate step
    assert "x = (x + torch.sqrt(x * x + 4)) / 2" in code
    assert "F.gelu(self.dense_3(x))" in code
    assert "F.softmax(self.dense_4(x), dim=1)" in code
    assert "return the logits instead" in code


def test_sparsemax_helper_follows_installed_keras():
    inputs = keras.Input((6,))
    model = keras.Model(inputs, keras.layers.Activation("sparsemax")(inputs))
    data = [np.array([[0.0, 0.5, 1.0, 0.2, -1.0, 0.9], [3.0, 2.9, 2.8, 0.0, 0.1, 2.95]], "float32")]
    conversion, errors = assert_each_output_exact(model, "channels_first", ["sparsemax"], inputs=data)
    assert "def sparsemax(x, dim):" in conversion.code
    assert "x = sparsemax(x, dim=1)" in conversion.code
    assert errors["sparsemax"] < 1e-6


def test_sparsemax_helper_for_a_keras_with_the_paper_threshold(monkeypatch):
    """Once Keras computes the paper's sparsemax (keras-team/keras#23469), so does the helper."""
    from kerastorch_magic.converters import activations

    monkeypatch.setattr(activations, "_keras_sparsemax_form", lambda: "paper")
    inputs = keras.Input((6,))
    conversion = k2t.convert(keras.Model(inputs, keras.layers.Activation("sparsemax")(inputs)))
    check_source(conversion.code)
    data = np.random.default_rng(3).normal(size=(16, 6)).astype("float32")
    with torch.no_grad():
        actual = conversion.build()(torch.from_numpy(data)).numpy()
    # Reference: Martins & Astudillo (2016), Algorithm 1.
    z = -np.sort(-data, axis=1)
    cumsum = np.cumsum(z, axis=1)
    k = np.arange(1, 7)
    support = 1 + k * z > cumsum
    size = support.sum(axis=1, keepdims=True)
    tau = (np.take_along_axis(cumsum, size - 1, axis=1) - 1) / size
    np.testing.assert_allclose(actual, np.maximum(data - tau, 0), atol=1e-6)
    np.testing.assert_allclose(actual.sum(axis=1), 1.0, rtol=1e-6)


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
def test_relu_leaky_relu_elu_layers(fmt):
    image, vector = keras.Input((5, 5, 3), name="image"), keras.Input((4,), name="vector")
    conv = keras.layers.Conv2D(4, 2, name="conv")(image)
    outputs, labels = [], []
    for options in RELU_CONFIGS:
        for source, where in ((conv, "conv"), (vector, "vector")):
            outputs.append(keras.layers.ReLU(**options)(source))
            labels.append(f"ReLU({options}) on {where}")
    for slope in (None, 0.01, 0.5):
        layer = keras.layers.LeakyReLU() if slope is None else keras.layers.LeakyReLU(negative_slope=slope)
        outputs.append(layer(conv))
        labels.append(f"LeakyReLU({slope})")
    for alpha in (1.0, 0.5, 2.0):
        outputs.append(keras.layers.ELU(alpha=alpha)(conv))
        labels.append(f"ELU({alpha})")
    conversion, _ = assert_each_output_exact(keras.Model([image, vector], outputs), fmt, labels, scale=3.0)
    code = unwrap(conversion.code)
    # Idioms: the closest torch function, Keras's options explicit.
    for snippet in [
        "re_lu = F.relu(image)",
        "re_lu_1 = F.relu(vector)",
        "re_lu_3 = F.relu6(vector)",
        "re_lu_5 = torch.clamp(vector, 0.0, 3.5)",
        "re_lu_9 = F.leaky_relu(vector, negative_slope=0.1)",
        "re_lu_11 = F.threshold(vector, 0.5, 0.0)",
        "F.relu6(vector) - 0.1 * F.relu(-vector)",
        "F.threshold(vector, 0.5, 0.0) - 0.2 * F.relu(0.5 - vector)",
        # Keras's LeakyReLU layer default is 0.3 (torch's 0.01): explicit and commented.
        "leaky_re_lu = F.leaky_relu(image, negative_slope=0.3)",
        "layer default 0.3",
        "elu = F.elu(image)",
        "elu_1 = F.elu(image, alpha=0.5)",
    ]:
        assert snippet in code, snippet


SOFTMAX_AXES = [-1, 1, 2, 3, [1, 2], (-1, 1), [3]]


@pytest.mark.parametrize("fmt", FORMATS)
def test_softmax_layer(fmt):
    image, sequence = keras.Input((4, 5, 3), name="image"), keras.Input((7, 3), name="sequence")
    conv = keras.layers.Conv2D(6, 1, name="conv")(image)
    outputs = [keras.layers.Softmax(axis=axis)(conv) for axis in SOFTMAX_AXES]
    labels = [f"Softmax(axis={axis})" for axis in SOFTMAX_AXES]
    conv1d = keras.layers.Conv1D(4, 2, name="conv1d")(sequence)
    outputs += [keras.layers.Softmax(axis=1)(conv1d), keras.layers.Softmax()(conv1d)]
    labels += ["Softmax(axis=1) on a sequence", "Softmax() on a sequence"]
    conversion, _ = assert_each_output_exact(keras.Model([image, sequence], outputs), fmt, labels, scale=3.0)
    code = unwrap(conversion.code)
    assert "softmax = F.softmax(image, dim=1)" in code  # Keras's channel axis is NCHW dim 1
    assert "softmax_1 = F.softmax(image, dim=2)" in code  # Keras axis 1 (H)
    assert "torch.logsumexp(image, dim=(2, 3), keepdim=True)" in code  # axis=[1, 2]
    assert "F.softmax(sequence, dim=2)" in code  # Keras axis 1 of an NCL sequence


def prelu_branches(fmt):
    """(model, labels): PReLU with each kind of alpha sharing, in each position."""
    image, vector = keras.Input((5, 4, 3), name="image"), keras.Input((6,), name="vector")
    conv = keras.layers.Conv2D(4, 2, name="conv")(image)
    outputs, labels = [], []
    for shared in (None, [1, 2], [1, 2, 3], [3], [1]):
        outputs.append(keras.layers.PReLU(shared_axes=shared)(conv))
        labels.append(f"PReLU(shared_axes={shared}) after a conv")
    # On the model input, before a convolution (channels-first input in that format).
    outputs.append(keras.layers.Conv2D(2, 2)(keras.layers.PReLU(shared_axes=[1, 2])(image)))
    labels.append("PReLU(shared_axes=[1, 2]) before a conv")
    outputs.append(keras.layers.PReLU()(keras.layers.Dense(5)(vector)))
    labels.append("PReLU after a Dense")
    return keras.Model([image, vector], outputs), labels


@pytest.mark.parametrize("fmt", FORMATS)
def test_prelu_layer(fmt):
    model, labels = prelu_branches(fmt)
    code = unwrap(assert_each_output_exact(model, fmt, labels)[0].code)
    # Per channel of a channels-first tensor: exactly nn.PReLU; zeros as Keras initialises them.
    assert "self.p_re_lu_1 = nn.PReLU(4)" in code
    assert re.search(
        r"for layer in \(self\.p_re_lu_1, self\.p_re_lu_2, [^)]*\):\n +nn\.init\.zeros_\(layer\.weight\)",
        code,
    )
    assert "self.p_re_lu_2 = nn.PReLU()" in code  # one slope for everything
    assert "self.p_re_lu_6 = nn.PReLU(5)" in code  # after a Dense
    # One slope per element (or per position): an explicit parameter and formula.
    assert 'self.p_re_lu = nn.ParameterDict({"alpha": nn.Parameter(torch.zeros(4, 4, 3))})' in code
    assert "F.relu(conv) - self.p_re_lu.alpha * F.relu(-conv)" in code
    assert ("self.p_re_lu_5 = nn.PReLU(3)" in code) == (fmt == "channels_first")


# -- activation objects: functions and layers passed as activation= --------------------------------
ACTIVATION_LAYERS = {
    "LeakyReLU(0.2)": lambda: keras.layers.LeakyReLU(0.2),
    "LeakyReLU()": lambda: keras.layers.LeakyReLU(),
    "ReLU(max_value=6)": lambda: keras.layers.ReLU(max_value=6.0),
    "ReLU(0.1 slope, threshold 0.5)": lambda: keras.layers.ReLU(negative_slope=0.1, threshold=0.5),
    "ELU(0.5)": lambda: keras.layers.ELU(0.5),
    "Softmax()": lambda: keras.layers.Softmax(),
    "Activation('gelu')": lambda: keras.layers.Activation("gelu"),
}


@pytest.mark.parametrize("fmt", FORMATS)
def test_activation_objects(fmt):
    """keras.activations functions as objects, and activation layers, on a conv and on Dense."""
    image, vector, sequence = keras.Input((5, 5, 3)), keras.Input((7,)), keras.Input((4, 6))
    outputs, labels = [], []
    for name in USABLE:
        function = getattr(keras.activations, name)
        outputs += [
            keras.layers.Conv2D(4, 1, activation=function)(image),
            keras.layers.Dense(6, activation=function)(vector),
        ]
        labels += [
            f"Conv2D(activation=keras.activations.{name})",
            f"Dense(activation=keras.activations.{name})",
        ]
    for label, make in ACTIVATION_LAYERS.items():
        outputs += [
            keras.layers.Conv2D(4, 1, activation=make())(image),
            keras.layers.Dense(6, activation=make())(vector),
            keras.layers.Dense(6, activation=make())(sequence),
        ]
        labels += [f"Conv2D(activation={label})", f"Dense(activation={label})", f"rank-3 Dense({label})"]
    model = keras.Model([image, vector, sequence], outputs)
    code = assert_each_output_exact(model, fmt, labels, scale=3.0)[0].code
    assert "F.leaky_relu(self.conv2d" in code and "negative_slope=0.2)" in code
    assert "negative_slope=0.3)" in code  # the LeakyReLU layer's default, spelled out


def test_the_issue_example_and_a_layer_with_weights():
    model = keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, activation=keras.layers.LeakyReLU(0.2))]
    )
    code = assert_each_output_exact(model, "channels_first", ["conv"], scale=3.0)[0].code
    assert "F.leaky_relu(self.conv2d(x), negative_slope=0.2)" in code
    weighted = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, activation=keras.layers.PReLU(), name="d")]
    )
    with pytest.raises(k2t.ConversionError, match="activation=PReLU layer object") as info:
        k2t.convert(weighted)
    assert info.value.layers == [("d", "Dense")]
