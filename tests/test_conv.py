"""The convolution family against Keras, numerically, in both input formats.

Conv1D/2D/3D, Conv1D/2D/3DTranspose, DepthwiseConv1D/2D and SeparableConv1D/2D over strides 1/2/3,
odd and even input sizes and kernels, dilation, 'valid'/'same'/'causal' padding, groups,
depth_multiplier, use_bias, activations and ``data_format="channels_first"`` layers; then the
generated code's readability, Keras-equivalent initialisers, inputs of unknown size and errors.
"""

import re

import keras
import numpy as np
import pytest
import torch
from exactness import assert_exact, check_sources, unwrap

import kerastorch_magic as k2t

FORMATS = ["channels_first", "channels_last"]
L = keras.layers
WORST: dict[str, float] = {}  # test id -> relative error, summarised at the end of the module
GENERATED: dict[str, str] = {}  # test id -> generated source, linted in one ruff run at the end


@pytest.fixture(scope="module", autouse=True)
def _lint_generated_code_and_report(tmp_path_factory):
    """What exactness.check_source does per model, as one ruff run over every model of the module.

    (Two ruff processes per model would take most of this module's time; `build()` has already
    compiled each source on its own.) Also prints the worst relative error seen (``pytest -s``).
    """
    yield
    if WORST:
        name = max(WORST, key=WORST.get)
        print(f"\ntest_conv: {len(WORST)} exactness checks, worst relative error {WORST[name]:.2e} ({name})")
    if not GENERATED:
        return
    folder = tmp_path_factory.mktemp("generated")
    for name, code in GENERATED.items():
        (folder / (re.sub(r"\W+", "_", name)[:150] + ".py")).write_text(code)
    check_sources(folder)


def exact(layer: str, shape: tuple, fmt: str, inputs=None, **options):
    """Convert ``Sequential([Input(shape), layer(**options)])`` and assert it matches Keras."""
    model = keras.Sequential([keras.Input(shape), getattr(L, layer)(**options)])
    conversion, error = assert_exact(model, fmt, inputs=inputs, check_code=False)
    key = f"{layer}{shape}{options}[{fmt}]"
    WORST[key], GENERATED[key] = error, conversion.code
    return conversion


def case(layer: str, shape: tuple, **options):
    words = [layer, "x".join(map(str, shape))]
    words += [f"{k}={v}".replace(" ", "") for k, v in options.items()]
    return pytest.param(layer, shape, options, id="-".join(words))


# Keras's own TF backend adds a channels-first bias along the LAST axis when that axis happens to
# have as many entries as there are filters (keras/src/backend/tensorflow/numpy.py `add` picks
# tf.nn.bias_add's NHWC by shape). So `data_format="channels_first"` cases below keep the last
# output dimension different from the filter count: there Keras itself is wrong, not the port.

# -- plain convolutions ----------------------------------------------------------------------------
CONV = [
    case("Conv1D", (9, 3), filters=4, kernel_size=3),
    case("Conv1D", (10, 3), filters=4, kernel_size=4, padding="same"),
    case("Conv1D", (9, 3), filters=4, kernel_size=3, strides=2, padding="same"),
    case("Conv1D", (10, 3), filters=4, kernel_size=3, strides=2, padding="same"),
    case("Conv1D", (11, 3), filters=4, kernel_size=4, strides=3, padding="same", activation="relu"),
    case("Conv1D", (9, 3), filters=4, kernel_size=3, dilation_rate=2, padding="same"),
    case("Conv1D", (9, 3), filters=4, kernel_size=3, padding="causal"),
    case("Conv1D", (10, 3), filters=4, kernel_size=2, strides=2, padding="causal"),
    case("Conv1D", (12, 3), filters=4, kernel_size=3, dilation_rate=3, padding="causal", use_bias=False),
    case("Conv1D", (9, 4), filters=6, kernel_size=3, groups=2, padding="same", strides=2),
    case("Conv1D", (3, 9), filters=4, kernel_size=4, padding="same", data_format="channels_first"),
    case("Conv2D", (7, 8, 3), filters=5, kernel_size=3),
    case("Conv2D", (7, 8, 3), filters=5, kernel_size=3, padding="same", activation="tanh"),
    case("Conv2D", (7, 8, 3), filters=5, kernel_size=4, padding="same"),
    case("Conv2D", (8, 8, 3), filters=5, kernel_size=3, strides=2, padding="same"),
    case("Conv2D", (9, 9, 3), filters=5, kernel_size=3, strides=2, padding="same"),
    case("Conv2D", (9, 8, 3), filters=5, kernel_size=4, strides=2, padding="same"),
    case("Conv2D", (10, 11, 3), filters=5, kernel_size=5, strides=3, padding="same", use_bias=False),
    case("Conv2D", (9, 10, 3), filters=5, kernel_size=(2, 3), strides=(2, 1), padding="same"),
    case("Conv2D", (8, 8, 3), filters=5, kernel_size=1, strides=2, padding="same"),
    case("Conv2D", (9, 9, 3), filters=5, kernel_size=3, strides=3),
    case("Conv2D", (9, 10, 3), filters=5, kernel_size=3, dilation_rate=2, padding="same"),
    case("Conv2D", (9, 10, 3), filters=5, kernel_size=(3, 2), dilation_rate=(2, 3)),
    case("Conv2D", (8, 9, 6), filters=9, kernel_size=3, groups=3, strides=2, padding="same"),
    case("Conv2D", (7, 8, 3), filters=5, kernel_size=3, activation="sigmoid", use_bias=False),
    case(
        "Conv2D", (3, 9, 8), filters=5, kernel_size=4, strides=2, padding="same", data_format="channels_first"
    ),
    case("Conv3D", (5, 6, 7, 2), filters=3, kernel_size=3, padding="same"),
    case("Conv3D", (5, 6, 7, 2), filters=3, kernel_size=(2, 3, 2), strides=2, padding="same"),
    case("Conv3D", (5, 5, 5, 4), filters=4, kernel_size=2, groups=2, dilation_rate=2, activation="relu"),
    case(
        "Conv3D",
        (2, 5, 6, 5),
        filters=4,
        kernel_size=3,
        strides=2,
        padding="same",
        data_format="channels_first",
    ),
]


# -- transposed convolutions -----------------------------------------------------------------------
TRANSPOSE = [
    case("Conv1DTranspose", (5, 3), filters=4, kernel_size=3),
    case("Conv1DTranspose", (5, 3), filters=4, kernel_size=3, strides=2),
    case("Conv1DTranspose", (5, 3), filters=4, kernel_size=2, strides=3),
    case("Conv1DTranspose", (5, 3), filters=4, kernel_size=3, strides=2, padding="same"),
    case("Conv1DTranspose", (6, 3), filters=4, kernel_size=4, strides=2, padding="same"),
    case("Conv1DTranspose", (6, 3), filters=4, kernel_size=2, padding="same", activation="relu"),
    case("Conv1DTranspose", (5, 3), filters=4, kernel_size=3, strides=2, output_padding=1),
    case("Conv1DTranspose", (5, 3), filters=4, kernel_size=4, strides=3, padding="same", output_padding=2),
    case("Conv1DTranspose", (5, 3), filters=4, kernel_size=3, dilation_rate=2, padding="same"),
    case("Conv2DTranspose", (4, 5, 3), filters=4, kernel_size=3, use_bias=False),
    case("Conv2DTranspose", (4, 5, 3), filters=4, kernel_size=3, strides=2, padding="same"),
    case("Conv2DTranspose", (4, 5, 3), filters=4, kernel_size=4, strides=2, padding="same"),
    case("Conv2DTranspose", (4, 5, 3), filters=4, kernel_size=5, strides=3, padding="same"),
    case("Conv2DTranspose", (4, 5, 3), filters=4, kernel_size=2, strides=3, padding="same"),
    case("Conv2DTranspose", (4, 5, 3), filters=4, kernel_size=(3, 4), strides=(2, 3), padding="same"),
    case("Conv2DTranspose", (4, 5, 3), filters=4, kernel_size=3, strides=2, padding="same", output_padding=0),
    case("Conv2DTranspose", (4, 5, 3), filters=4, kernel_size=4, strides=3, output_padding=(2, 1)),
    case("Conv2DTranspose", (4, 5, 3), filters=4, kernel_size=3, dilation_rate=(2, 1), padding="same"),
    case("Conv2DTranspose", (4, 5, 3), filters=4, kernel_size=3, strides=2, activation="tanh"),
    case(
        "Conv2DTranspose",
        (3, 4, 5),
        filters=4,
        kernel_size=3,
        strides=2,
        padding="same",
        data_format="channels_first",
    ),
    case("Conv3DTranspose", (3, 4, 3, 2), filters=3, kernel_size=3, strides=2, padding="same"),
    case("Conv3DTranspose", (3, 4, 3, 2), filters=3, kernel_size=2, strides=(1, 2, 3)),
]


# -- depthwise and separable -----------------------------------------------------------------------
DEPTHWISE = [
    case("DepthwiseConv1D", (9, 3), kernel_size=3),
    case("DepthwiseConv1D", (10, 3), kernel_size=4, strides=2, padding="same", depth_multiplier=2),
    case("DepthwiseConv1D", (11, 3), kernel_size=3, strides=2, dilation_rate=2, padding="same"),
    case("DepthwiseConv1D", (3, 9), kernel_size=3, padding="same", data_format="channels_first"),
    case("DepthwiseConv2D", (7, 8, 3), kernel_size=3, padding="same", activation="relu"),
    case("DepthwiseConv2D", (8, 8, 3), kernel_size=3, strides=2, padding="same", depth_multiplier=2),
    case("DepthwiseConv2D", (9, 9, 3), kernel_size=3, strides=2, padding="same", use_bias=False),
    case("DepthwiseConv2D", (9, 8, 3), kernel_size=4, strides=3, padding="same", depth_multiplier=3),
    case("DepthwiseConv2D", (9, 10, 3), kernel_size=(3, 2), dilation_rate=2, padding="same"),
    case("DepthwiseConv2D", (11, 10, 3), kernel_size=3, strides=2, dilation_rate=2, padding="same"),
    case(
        "DepthwiseConv2D",
        (3, 8, 9),
        kernel_size=3,
        strides=2,
        depth_multiplier=2,
        data_format="channels_first",
    ),
    case("SeparableConv1D", (9, 3), filters=4, kernel_size=3),
    case("SeparableConv1D", (10, 3), filters=4, kernel_size=3, strides=2, padding="same", depth_multiplier=2),
    case(
        "SeparableConv1D", (11, 3), filters=4, kernel_size=2, dilation_rate=3, padding="same", use_bias=False
    ),
    case("SeparableConv2D", (7, 8, 3), filters=5, kernel_size=3, padding="same", activation="relu"),
    case(
        "SeparableConv2D", (8, 9, 3), filters=5, kernel_size=3, strides=2, padding="same", depth_multiplier=2
    ),
    case("SeparableConv2D", (8, 8, 3), filters=5, kernel_size=4, padding="same", use_bias=False),
    case(
        "SeparableConv2D", (11, 10, 3), filters=5, kernel_size=3, strides=2, dilation_rate=2, padding="same"
    ),
    case("SeparableConv2D", (9, 9, 3), filters=5, kernel_size=(3, 2), strides=(3, 2), activation="sigmoid"),
    case(
        "SeparableConv2D",
        (3, 8, 9),
        filters=6,
        kernel_size=3,
        strides=2,
        padding="same",
        data_format="channels_first",
    ),
]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(("layer", "shape", "options"), CONV + TRANSPOSE + DEPTHWISE)
def test_matches_keras(layer, shape, options, fmt):
    exact(layer, shape, fmt, **options)


# -- inputs of unknown spatial size ----------------------------------------------------------------
UNKNOWN = [
    case("Conv2D", (None, None, 3), filters=4, kernel_size=3, strides=2, padding="same"),
    case("Conv1D", (None, 3), filters=4, kernel_size=4, strides=3, padding="same"),
    case("DepthwiseConv2D", (None, None, 3), kernel_size=3, strides=2, dilation_rate=2, padding="same"),
    case("SeparableConv2D", (None, None, 3), filters=4, kernel_size=2, strides=2, padding="same"),
    case("Conv2DTranspose", (None, None, 3), filters=4, kernel_size=3, strides=2, padding="same"),
]


@pytest.mark.parametrize("sizes", [(9, 8), (10, 11)], ids=["9x8", "10x11"])
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(("layer", "shape", "options"), UNKNOWN)
def test_unknown_input_size_matches_keras(layer, shape, options, fmt, sizes):
    rank = len(shape) - 1
    x = np.random.default_rng(3).normal(size=(2, *sizes[:rank], shape[-1])).astype("float32")
    code = unwrap(exact(layer, shape, fmt, inputs=[x], **options).code)
    if "Transpose" not in layer:  # transposed 'same' needs no input size
        assert "def _pad_same(x, kernel_size, stride, dilation=None, value=0.0):" in code


def test_unknown_size_helper_is_defined_once():
    model = keras.Sequential(
        [
            keras.Input((None, None, 3)),
            L.Conv2D(4, 3, strides=2, padding="same"),
            L.DepthwiseConv2D(4, strides=(1, 2), padding="same", activation="relu"),
        ]
    )
    x = np.random.default_rng(4).normal(size=(2, 13, 10, 3)).astype("float32")
    code = unwrap(assert_exact(model, inputs=[x])[0].code)  # this one through the harness's own code checks
    assert code.count("def _pad_same(") == 1
    assert "x = _pad_same(x, kernel_size=(3, 3), stride=(2, 2))" in code
    assert "x = _pad_same(x, kernel_size=(4, 4), stride=(1, 2))" in code


# -- the generated code ----------------------------------------------------------------------------
def code_of(layer: str, shape: tuple, **options) -> str:
    return unwrap(exact(layer, shape, "channels_first", **options).code)


def test_code_is_compact_pytorch():
    code = code_of("Conv2D", (9, 9, 3), filters=8, kernel_size=3, strides=2, activation="relu")
    assert "self.conv2d = nn.Conv2d(3, 8, kernel_size=3, stride=2)" in code
    assert "x = F.relu(self.conv2d(x), inplace=True)" in code
    assert "nn.init.xavier_uniform_(self.conv2d.weight)" in code
    assert "F.pad" not in code and "permute" not in code


def test_code_groups_dilation_and_no_bias():
    code = code_of(
        "Conv2D", (9, 9, 4), filters=8, kernel_size=(3, 2), dilation_rate=2, groups=2, use_bias=False
    )
    assert "nn.Conv2d(4, 8, kernel_size=(3, 2), dilation=2, groups=2, bias=False)" in code


def test_code_same_padding_symmetric_or_explicit():
    assert "nn.Conv2d(3, 4, kernel_size=3, padding=1)" in code_of(
        "Conv2D", (8, 8, 3), filters=4, kernel_size=3, padding="same"
    )
    even = code_of("Conv2D", (8, 8, 3), filters=4, kernel_size=4, padding="same")
    assert "x = F.pad(x, (1, 2, 1, 2))" in even and "odd pixel after" in even
    assert "nn.Conv2d(3, 4, kernel_size=4)" in even
    strided = code_of("Conv2D", (9, 9, 3), filters=4, kernel_size=3, strides=2, padding="same")
    assert "nn.Conv2d(3, 4, kernel_size=3, stride=2, padding=1)" in strided
    assert "depends on the input size" in strided and "9x9" in strided  # spelled out


def test_code_causal_padding():
    code = code_of("Conv1D", (9, 3), filters=4, kernel_size=3, dilation_rate=2, padding="causal")
    assert "x = F.pad(x, (4, 0))" in code and "causal" in code
    assert "nn.Conv1d(3, 4, kernel_size=3, dilation=2)" in code


def test_code_transpose_crops_the_end():
    code = code_of("Conv2DTranspose", (4, 4, 3), filters=4, kernel_size=3, strides=2, padding="same")
    assert "self.conv2d_transpose = nn.ConvTranspose2d(3, 4, kernel_size=3, stride=2)" in code
    assert "x = self.conv2d_transpose(x)[:, :, :-1, :-1]" in code
    assert "crops both ends" in code
    even = code_of("Conv2DTranspose", (4, 4, 3), filters=4, kernel_size=4, strides=2, padding="same")
    assert "nn.ConvTranspose2d(3, 4, kernel_size=4, stride=2, padding=1)" in even
    assert "[:, :" not in even


def test_code_depthwise_and_separable():
    depthwise = code_of("DepthwiseConv2D", (8, 8, 3), kernel_size=3, depth_multiplier=2)
    assert "self.depthwise_conv2d = nn.Conv2d(3, 6, kernel_size=3, groups=3)" in depthwise
    assert "Keras's glorot_uniform: fans" in depthwise  # torch's xavier would use other fans here
    separable = code_of("SeparableConv2D", (8, 8, 3), filters=5, kernel_size=3, padding="same")
    assert "3, 3, kernel_size=3, padding=1, groups=3, bias=False" in separable
    assert "self.separable_conv2d_pointwise = nn.Conv2d(3, 5, kernel_size=1)" in separable
    assert "x = self.separable_conv2d_pointwise(self.separable_conv2d_depthwise(x))" in separable


# -- initialisers ----------------------------------------------------------------------------------
def _glorot_limit(keras_kernel_shape) -> float:
    receptive = int(np.prod(keras_kernel_shape[:-2]))
    fan_in, fan_out = keras_kernel_shape[-2] * receptive, keras_kernel_shape[-1] * receptive
    return float(np.sqrt(6.0 / (fan_in + fan_out)))


@pytest.mark.parametrize(
    ("layer", "shape", "options", "kernels"),
    [
        ("Conv2D", (9, 9, 6), {"filters": 16, "kernel_size": 3}, {"conv2d": (3, 3, 6, 16)}),
        (
            "Conv2DTranspose",
            (5, 5, 6),
            {"filters": 16, "kernel_size": 3},
            {"conv2d_transpose": (3, 3, 16, 6)},
        ),
        (
            "DepthwiseConv2D",
            (9, 9, 8),
            {"kernel_size": 3, "depth_multiplier": 4},
            {"depthwise_conv2d": (3, 3, 8, 4)},
        ),
        (
            "SeparableConv2D",
            (9, 9, 8),
            {"filters": 16, "kernel_size": 3, "depth_multiplier": 2},
            {"separable_conv2d_depthwise": (3, 3, 8, 2), "separable_conv2d_pointwise": (1, 1, 16, 16)},
        ),
    ],
    ids=["conv", "transpose", "depthwise", "separable"],
)
def test_reset_parameters_matches_keras_glorot(layer, shape, options, kernels):
    """reset_parameters draws within Keras's glorot bounds, computed from Keras's kernel layout."""
    module = k2t.convert(keras.Sequential([keras.Input(shape), getattr(L, layer)(**options)])).build()
    torch.manual_seed(0)
    module.reset_parameters()
    for attr, keras_shape in kernels.items():
        weight, limit = getattr(module, attr).weight.detach().abs(), _glorot_limit(keras_shape)
        assert float(weight.max()) <= limit * (1 + 1e-6), attr
        assert float(weight.max()) > 0.9 * limit, attr  # not a narrower (torch-fan) bound
        bias = getattr(module, attr).bias
        assert bias is None or float(bias.detach().abs().max()) == 0.0


def test_lora_adapter_is_merged():
    model = keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(4, 3, lora_rank=2)])
    conversion, _ = assert_exact(model)
    assert "LoRA" in conversion.code
    assert set(conversion.state_dict) == {"conv2d.weight", "conv2d.bias"}


# -- errors ----------------------------------------------------------------------------------------
def test_unconvertible_option_names_every_layer():
    def scaled_tanh(x):  # a constant array: a traced activation becomes a def, which cannot hold it
        return keras.ops.convert_to_tensor(np.full((4,), 2.0, "float32")) * keras.ops.tanh(x)

    inputs = keras.Input((8, 8, 3))
    outputs = [
        L.Conv2D(4, 3, activation=scaled_tanh, name="left")(inputs),
        L.SeparableConv2D(4, 3, activation=scaled_tanh, name="right")(inputs),
    ]
    with pytest.raises(k2t.ConversionError) as caught:
        k2t.convert(keras.Model(inputs, outputs))
    message = str(caught.value)
    assert "'left' (Conv2D)" in message and "'right' (SeparableConv2D)" in message
    assert "activation 'scaled_tanh'" in message
    assert caught.value.layers == [("left", "Conv2D"), ("right", "SeparableConv2D")]
