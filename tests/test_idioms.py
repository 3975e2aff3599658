"""Standard compositions written as the torch idiom (kerastorch_magic/idioms.py), exactly.

Each chain is checked against Keras on random weights and inputs in both input formats, the
generated code must use the idiom and none of the spelled-out arithmetic, and ``compare`` must
show the swallowed layers as skipped (fused) and the chain's last layer compared.
"""

from __future__ import annotations

import math

import keras
import pytest
from exactness import assert_exact

import kerastorch_magic as k2t

FORMATS = ["channels_first", "channels_last"]


def _forward(code: str) -> str:
    """The generated ``forward``'s statements, comments left out (they may cite Keras's formula)."""
    body = code.split("def forward", 1)[1]
    return "\n".join(line.split("#", 1)[0] for line in body.splitlines())


def _conv_input():
    inputs = keras.Input((9, 8, 3))
    return inputs, keras.layers.Conv2D(6, 3, padding="same")(inputs)


def _hard_sigmoid(x, style: str):
    if style == "mobilenet":  # keras.applications.mobilenet_v3.hard_sigmoid
        return keras.layers.ReLU(6.0)(x + 3.0) * (1.0 / 6.0)
    return keras.ops.relu6(x + 3.0) / 6.0


@pytest.mark.parametrize("input_format", FORMATS)
@pytest.mark.parametrize("style", ["mobilenet", "ops"])
def test_hard_sigmoid(style, input_format):
    inputs, x = _conv_input()
    model = keras.Model(inputs, keras.layers.Conv2D(4, 1)(_hard_sigmoid(x, style)))
    conversion, _ = assert_exact(model, input_format)
    code = _forward(conversion.code)
    assert "F.hardsigmoid(" in code
    assert "3.0" not in code and "0.1666" not in code and "relu6" not in code and "6.0" not in code


@pytest.mark.parametrize("input_format", FORMATS)
def test_hard_swish_and_silu(input_format):
    inputs, x = _conv_input()
    swish = keras.layers.Multiply()([x, _hard_sigmoid(x, "mobilenet")])  # x * hard_sigmoid(x)
    silu = swish * keras.ops.sigmoid(swish)  # x * sigmoid(x), keras.ops
    gated = keras.layers.Multiply()([silu, keras.layers.Activation("sigmoid")(silu)])  # layers
    conversion, _ = assert_exact(keras.Model(inputs, keras.layers.Conv2D(4, 1)(gated)), input_format)
    code = _forward(conversion.code)
    assert code.count("F.hardswish(") == 1 and code.count("F.silu(") == 2
    assert "sigmoid" not in code.replace("F.hardsigmoid", "") and "+ 3.0" not in code


def _gelu_tanh(x, style: str, kappa: float = 0.044715):
    """GELU's tanh approximation written out, as keras-io / GPT examples do."""
    ops = keras.ops
    if style == "gpt":  # sqrt(2 / pi) as a 0-d tensor, x**3 through ops.power
        return 0.5 * x * (1 + ops.tanh(ops.sqrt(2 / math.pi) * (x + kappa * ops.power(x, 3))))
    # Python constant, operands the other way round, tanh as a layer
    inner = keras.layers.Activation("tanh")((x + x**3 * kappa) * math.sqrt(2 / math.pi))
    return x * 0.5 * (1.0 + inner)


@pytest.mark.parametrize("input_format", FORMATS)
@pytest.mark.parametrize("style", ["gpt", "layers"])
def test_gelu_tanh_approximation(style, input_format):
    inputs = keras.Input((5, 6))
    x = keras.layers.Dense(8)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(_gelu_tanh(x, style)))
    conversion, _ = assert_exact(model, input_format)
    code = _forward(conversion.code)
    assert code.count('F.gelu(x, approximate="tanh")') == 1
    assert "tanh(" not in code.replace("F.gelu(", "") and "0.044715" not in code and "0.5" not in code
    assert "writes out keras.ops.gelu(x)" in conversion.code  # the fusion's note


def test_gelu_tanh_not_fused_when_a_constant_differs_or_a_value_is_reused():
    inputs = keras.Input((5, 6))
    x = keras.layers.Dense(8)(inputs)
    cube = keras.ops.power(x, 3)
    reused = 0.5 * x * (1 + keras.ops.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * cube)))
    model = keras.Model(inputs, [_gelu_tanh(x, "gpt", kappa=0.045), reused, cube])
    conversion, _ = assert_exact(model, "channels_first")
    assert "F.gelu" not in conversion.code


def test_not_fused_when_an_inner_value_has_another_reader():
    inputs, x = _conv_input()
    gate = keras.ops.sigmoid(x)
    model = keras.Model(inputs, [x * gate, gate])  # the sigmoid is an output too: keep it
    conversion, _ = assert_exact(model, "channels_first")
    assert "F.silu" not in conversion.code and "torch.sigmoid(" in _forward(conversion.code)


def test_not_fused_when_the_constants_differ():
    inputs, x = _conv_input()
    model = keras.Model(
        inputs, [keras.ops.relu6(x + 3.0) * 0.17, 6.0 / keras.ops.relu6(keras.ops.abs(x) + 3.0)]
    )
    conversion, _ = assert_exact(model, "channels_first")
    assert "hardsigmoid" not in conversion.code


def test_compare_skips_the_swallowed_layers():
    inputs, x = _conv_input()
    x = keras.layers.ReLU(6.0, name="inner_relu6")(x + 3.0) * (1.0 / 6.0)
    model = keras.Model(inputs, keras.layers.Conv2D(4, 1)(x))
    conversion, _ = assert_exact(model, "channels_first")
    result = k2t.compare(model, conversion, device="cpu")
    assert result.ok
    rows = {layer.keras_layer: layer for layer in result.layers}
    relu = rows["inner_relu6"]
    assert not relu.compared and relu.status(result.tolerance) == "skip"
    assert "part of hard_sigmoid" in relu.note and "compared at" in relu.note
    last = [layer for layer in result.layers if layer.keras_class == "Multiply"]
    assert len(last) == 1 and last[0].compared and last[0].status(result.tolerance) == "ok"


@pytest.mark.parametrize("input_format", FORMATS)
def test_global_pooling_then_reshape_to_ones_keeps_dims(input_format):
    """EfficientNet's squeeze-excite: GlobalAveragePooling2D then Reshape((1, 1, C))."""
    inputs, x = _conv_input()
    se = keras.layers.GlobalAveragePooling2D(name="squeeze")(x)
    se = keras.layers.Reshape((1, 1, 6), name="to_ones")(se)
    peak = keras.layers.Reshape((1, 6))(keras.layers.GlobalMaxPooling2D()(x))  # not keepdims' shape
    se = keras.layers.Conv2D(6, 1, activation="sigmoid")(se)
    model = keras.Model(inputs, [keras.layers.Multiply()([x, se]), peak])
    conversion, _ = assert_exact(model, input_format)
    code = _forward(conversion.code)
    assert code.count("keepdim=True") == 1, conversion.code  # the max pooling's reshape stays
    if input_format == "channels_first":
        assert ".mean(dim=(2, 3), keepdim=True)" in code and ".permute(" not in code
    result = k2t.compare(model, conversion, device="cpu")
    assert result.ok
    rows = {layer.keras_layer: layer for layer in result.layers}
    assert rows["squeeze"].status(result.tolerance) == "skip" and "keepdims=True" in rows["squeeze"].note
    assert rows["to_ones"].compared


@pytest.mark.parametrize("name", ["MobileNetV3Small", "MobileNetV3Large", "EfficientNetB0"])
def test_applications_use_the_idioms(name):
    """At 96x96 (weights=None): exact, and written with torch's activation functions."""
    import numpy as np
    from exactness import random_inputs, randomise_weights, relative_error

    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, name)(weights=None, input_shape=(96, 96, 3), classes=10)
    inputs = random_inputs(model)
    randomise_weights(model, inputs=inputs)
    conversion = k2t.convert(model)
    code = _forward(conversion.code)
    assert "+ 3.0" not in code and "0.1666" not in code and "F.relu6" not in code
    if name.startswith("MobileNet"):
        assert "F.hardswish(" in code and "F.hardsigmoid(" in code
    else:
        assert "F.silu(" in code and "torch.sigmoid(" in code  # the squeeze-excite gate stays
    module = conversion.build()
    import torch

    with torch.no_grad():
        actual = module(
            torch.from_numpy(np.ascontiguousarray(conversion.inputs[0].to_torch_layout(inputs[0])))
        )
    expected = np.asarray(model(inputs[0], training=False))
    assert relative_error(expected, actual.numpy()) <= 1e-5
