"""``convert(..., fold_batchnorm=True)``: BatchNorm folded into the layer before it, exactly.

Every model gets random weights and calibrated BatchNorm statistics (tests/exactness.py), is
converted with and without folding, and both are compared with Keras in eval mode (rtol 1e-5),
in both input formats. The folded class must have fewer parameters by exactly the folded
BatchNorms' (less the biases folding adds), say so in a comment and in its docstring, and
``compare`` must map each BatchNorm's row to the folded layer's output.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import torch
from exactness import (
    RTOL,
    assert_exact_with_and_without_folding,
    random_inputs,
    randomise_weights,
    relative_error,
)

import kerastorch_magic as k2t

FORMATS = ["channels_first", "channels_last"]


def _parameters(conversion) -> int:
    """Parameters and floating-point buffers (BatchNorm statistics) of the built module."""
    module = conversion.build()
    return sum(t.numel() for t in [*module.parameters(), *module.buffers()] if t.is_floating_point())


def _folded_saving(model, folded_layers: list[str]) -> int:
    """What folding these BatchNorms saves: their 4 vectors, less a bias where the layer had none."""
    saving = 0
    for name in folded_layers:
        norm = model.get_layer(name)
        saving += 4 * norm.moving_mean.shape[0]
        layer = model.get_layer(name.removesuffix("_bn"))
        if not layer.use_bias:
            saving -= norm.moving_mean.shape[0]
    return saving


def _resnet_blocks():
    """Two ResNet50 bottlenecks (projection shortcut, then identity), names as Keras's."""
    inputs = keras.Input((12, 12, 8))
    x = inputs
    for block, (filters, stride, project) in enumerate([(4, 2, True), (4, 1, False)]):
        name = f"block{block}"
        shortcut = x
        if project:
            shortcut = keras.layers.Conv2D(4 * filters, 1, strides=stride, name=f"{name}_0_conv")(x)
            shortcut = keras.layers.BatchNormalization(epsilon=1.001e-5, name=f"{name}_0_conv_bn")(shortcut)
        x = keras.layers.Conv2D(filters, 1, strides=stride, name=f"{name}_1_conv")(x)
        x = keras.layers.BatchNormalization(epsilon=1.001e-5, name=f"{name}_1_conv_bn")(x)
        x = keras.layers.Activation("relu")(x)
        x = keras.layers.Conv2D(filters, 3, padding="same", name=f"{name}_2_conv")(x)
        x = keras.layers.BatchNormalization(epsilon=1.001e-5, name=f"{name}_2_conv_bn")(x)
        x = keras.layers.Activation("relu")(x)
        x = keras.layers.Conv2D(4 * filters, 1, name=f"{name}_3_conv")(x)
        x = keras.layers.BatchNormalization(epsilon=1.001e-5, name=f"{name}_3_conv_bn")(x)
        x = keras.layers.Activation("relu")(keras.layers.Add()([shortcut, x]))
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))


@pytest.mark.parametrize("input_format", FORMATS)
def test_resnet_blocks(input_format):
    model = _resnet_blocks()
    default, folded = assert_exact_with_and_without_folding(model, input_format)
    norms = [layer.name for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == 7
    assert "nn.BatchNorm" not in folded.code
    assert "'block0_0_conv_bn' folded into the weight and bias" in folded.code  # (said once per class)
    assert len([note for note in folded.notes if "folded into the weight" in note.text]) == 7
    assert "Do not train this class" in folded.code.split('"""')[1]  # the class docstring
    assert _parameters(default) - _parameters(folded) == _folded_saving(model, norms)
    assert set(folded.state_dict) < set(default.state_dict)  # same attribute names, BN's gone


@pytest.mark.parametrize("input_format", FORMATS)
def test_depthwise_and_separable(input_format):
    inputs = keras.Input((10, 9, 3))
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, use_bias=False, name="dw")(inputs)
    x = keras.layers.BatchNormalization(name="dw_bn")(x)
    x = keras.layers.ReLU(6.0)(x)
    x = keras.layers.SeparableConv2D(5, 3, strides=2, padding="same", use_bias=False, name="sep")(x)
    x = keras.layers.BatchNormalization(name="sep_bn", center=False)(x)
    model = keras.Model(inputs, x)
    default, folded = assert_exact_with_and_without_folding(model, input_format)
    assert "nn.BatchNorm" in default.code and "nn.BatchNorm" not in folded.code
    assert _parameters(default) - _parameters(folded) == _folded_saving(model, ["dw_bn", "sep_bn"])


@pytest.mark.parametrize("input_format", FORMATS)
def test_dense_and_conv1d(input_format):
    inputs = keras.Input((7, 4))
    x = keras.layers.Conv1D(6, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="conv_bn", scale=False)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(5, name="fc")(x)
    x = keras.layers.BatchNormalization(name="fc_bn")(x)
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Activation("relu")(x)))
    default, folded = assert_exact_with_and_without_folding(model, input_format)
    assert "nn.BatchNorm" not in folded.code
    assert _parameters(default) - _parameters(folded) == _folded_saving(model, ["conv_bn", "fc_bn"])


def test_not_folded_when_the_output_has_another_reader_or_an_activation():
    inputs = keras.Input((8, 8, 3))
    shared = keras.layers.Conv2D(4, 3, name="shared")(inputs)
    x = keras.layers.BatchNormalization(name="shared_bn")(shared)
    x = keras.layers.Add()([x, shared])  # the convolution's output is read twice
    x = keras.layers.Conv2D(4, 1, activation="relu", name="activated")(x)
    x = keras.layers.BatchNormalization(name="activated_bn")(x)  # after a ReLU: not affine-foldable
    x = keras.layers.Conv2D(4, 1, name="plain")(x)
    x = keras.layers.BatchNormalization(name="plain_bn")(x)
    model = keras.Model(inputs, x)
    _, folded = assert_exact_with_and_without_folding(model, "channels_first")
    assert folded.code.count("nn.BatchNorm2d(") == 2
    assert [note.layer for note in folded.notes if "folded into the weight" in note.text] == ["plain"]


def test_compare_maps_the_batchnorm_row_to_the_folded_layer():
    model = _resnet_blocks()
    _, folded = assert_exact_with_and_without_folding(model, "channels_first")
    result = k2t.compare(model, folded, device="cpu")
    assert result.ok
    rows = {layer.keras_layer: layer for layer in result.layers}
    conv, norm = rows["block0_1_conv"], rows["block0_1_conv_bn"]
    assert not conv.compared and conv.status(result.tolerance) == "skip"
    assert "folded" in conv.note and "block0_1_conv_bn" in conv.note
    assert norm.compared and norm.status(result.tolerance) == "ok" and norm.torch_module == "block0_1_conv"


def test_default_is_unchanged():
    """Without the option the class keeps its BatchNorms (it is the trainable port)."""
    model = _resnet_blocks()
    conversion = k2t.convert(model)
    assert conversion.code.count("nn.BatchNorm2d(") == 7 and "folded" not in conversion.code


def test_magic_option():
    """``%keras2torch model --fold-batchnorm`` defines the folded class (run in-process)."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "kerastorch_magic")
    model = _resnet_blocks()
    randomise_weights(model)
    shell.user_ns["model"] = model
    shell.run_line_magic("keras2torch", "model --fold-batchnorm --no-compare --insert none")
    net = shell.user_ns["net"]
    kinds = {type(module).__name__ for module in net.modules()}
    assert "Conv2d" in kinds and "BatchNorm2d" not in kinds
    data = random_inputs(model)[0]
    with torch.no_grad():
        out = net(torch.from_numpy(np.ascontiguousarray(data.transpose(0, 3, 1, 2)))).numpy()
    assert relative_error(np.asarray(model(data, training=False)), out) <= RTOL


class ConvBlock(keras.layers.Layer):
    """A custom layer (traced): conv, BatchNorm, ReLU in its call()."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(5, 3, padding="same", use_bias=False)
        self.norm = keras.layers.BatchNormalization()

    def call(self, x):
        return keras.ops.relu(self.norm(self.conv(x)))


@pytest.mark.parametrize("input_format", FORMATS)
def test_inside_a_traced_custom_layer(input_format):
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1)(ConvBlock()(inputs)))
    default, folded = assert_exact_with_and_without_folding(model, input_format)
    assert "class ConvBlock(nn.Module):" in folded.code and "nn.BatchNorm" not in folded.code
    assert "Do not train this class" in folded.code.split('"""')[1]  # the outer class says so too
    assert "nn.BatchNorm2d" in default.code


@pytest.mark.parametrize("name, size", [("MobileNetV3Small", 96), ("ResNet50", 37)])
def test_applications(name, size):
    """Every BatchNorm of these follows a convolution: all folded, exact, fewer parameters."""
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3), classes=10)
    default, folded = assert_exact_with_and_without_folding(model, "channels_first")
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert "nn.BatchNorm" not in folded.code and len(norms) > 30
    saved = sum(4 * norm.moving_mean.shape[0] for norm in norms)
    added = sum(  # folding gives a bias to the layers that had none
        norm.moving_mean.shape[0]
        for norm in norms
        if not model.get_layer(norm._inbound_nodes[0].parent_nodes[0].operation.name).use_bias
    )
    assert _parameters(default) - _parameters(folded) == saved - added
