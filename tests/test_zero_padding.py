"""A ZeroPadding layer folded into the convolution or max pooling after it (``padding=p``).

Exact against Keras on random weights in both input formats, with and without BatchNorm folding
(ResNet's stem pads, convolves, normalises, pads again and pools); the cases where torch's padding
would differ (max pooling of values that may be negative, asymmetric pads, a pad wider than half
the window, a reader that also reads elsewhere) keep the explicit ``F.pad``; ``compare`` shows the
padding layer as folded and every row ok.
"""

from __future__ import annotations

import keras
import pytest
from exactness import (
    assert_exact,
    assert_exact_with_and_without_folding,
    random_inputs,
    randomise_weights,
    unwrap,
)

import kerastorch_magic as k2t

layers = keras.layers
FORMATS = ["channels_first", "channels_last"]


def _stem(rank: int = 2):
    """ResNet's stem in ``rank`` dimensions: pad 3, 7-wide strided conv, BatchNorm, ReLU, pad 1,
    3-wide strided max pooling; then a depthwise convolution behind a pad of 1."""
    pad, conv, pool = (
        {1: layers.ZeroPadding1D, 2: layers.ZeroPadding2D, 3: layers.ZeroPadding3D}[rank],
        {1: layers.Conv1D, 2: layers.Conv2D, 3: layers.Conv3D}[rank],
        {1: layers.MaxPooling1D, 2: layers.MaxPooling2D, 3: layers.MaxPooling3D}[rank],
    )
    inputs = keras.Input((12,) * rank + (3,))
    x = pad(3, name="conv1_pad")(inputs)
    x = conv(8, 7, strides=2, name="conv1_conv")(x)
    x = layers.BatchNormalization(name="conv1_bn")(x)
    x = layers.Activation("relu", name="conv1_relu")(x)
    x = pad(1, name="pool1_pad")(x)
    x = pool(3, strides=2, name="pool1_pool")(x)
    if rank < 3:
        depthwise = {1: layers.DepthwiseConv1D, 2: layers.DepthwiseConv2D}[rank]
        x = depthwise(3, depth_multiplier=2, name="dw")(pad(1, name="dw_pad")(x))
    return keras.Model(inputs, x)


@pytest.mark.parametrize("input_format", FORMATS)
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_stem_pads_fold_into_the_conv_and_pool_exactly(rank, input_format):
    default, folded = assert_exact_with_and_without_folding(_stem(rank), input_format)
    kind = {1: "1d", 2: "2d", 3: "3d"}[rank]
    for conversion in (default, folded):
        code = unwrap(conversion.code)
        assert "F.pad" not in code, code
        assert f"self.conv1_conv = nn.Conv{kind}(3, 8, kernel_size=7, stride=2, padding=3)" in code
        assert f"self.pool1_pool = nn.MaxPool{kind}(3, stride=2, padding=1)" in code
        assert "# 'conv1_pad' folded in: padding=3 pads the same zeros" in conversion.code
        assert "# 'pool1_pad' folded in: padding=1 pads -inf, the same max after a ReLU" in conversion.code
    assert "self.conv1_bn" not in folded.code  # both folds apply to the stem's convolution


def _padded(source, reader, pad=1):
    inputs = keras.Input((9, 9, 2))
    x = source(inputs)
    return keras.Model(inputs, reader(layers.ZeroPadding2D(pad)(x)))


@pytest.mark.parametrize(
    "model, why",
    [
        (_padded(layers.Conv2D(4, 1), layers.MaxPooling2D(3, strides=2)), "input may be negative"),
        (_padded(layers.LeakyReLU(), layers.MaxPooling2D(3)), "a leaky ReLU goes below zero"),
        (_padded(layers.ReLU(), layers.MaxPooling2D(3), pad=((1, 2), (1, 2))), "asymmetric"),
        (_padded(layers.ReLU(), layers.MaxPooling2D(2), pad=2), "wider than half the window"),
        (_padded(layers.ReLU(), layers.Conv2D(3, 3, padding="same"), pad=1), "reader pads too"),
        (_padded(layers.ReLU(), layers.AveragePooling2D(3)), "average pooling counts the zeros"),
    ],
)
def test_a_pad_torch_would_fill_differently_stays_explicit(model, why):
    conversion, _ = assert_exact(model)
    assert "F.pad(" in conversion.code, why


def test_a_pad_read_twice_stays_explicit():
    inputs = keras.Input((9, 9, 2))
    padded = layers.ZeroPadding2D(1)(inputs)
    x = layers.Conv2D(3, 3)(padded)
    y = layers.Conv2D(3, 3)(padded)
    conversion, _ = assert_exact(keras.Model(inputs, layers.Add()([x, y])))
    assert conversion.code.count("F.pad(") == 1


def test_a_relu_activation_on_the_conv_allows_the_pooling_fold():
    inputs = keras.Input((10, 10, 2))
    x = layers.Conv2D(4, 3, activation="relu")(inputs)
    x = layers.MaxPooling2D(3, strides=2)(layers.ZeroPadding2D(1)(x))
    conversion, _ = assert_exact(keras.Model(inputs, x))
    assert "F.pad" not in conversion.code
    assert "nn.MaxPool2d(3, stride=2, padding=1)" in conversion.code


def test_compare_shows_the_padding_as_folded():
    model = _stem()
    inputs = random_inputs(model)
    randomise_weights(model, inputs=inputs)
    for fold in (False, True):
        conversion = k2t.convert(model, fold_batchnorm=fold)
        result = k2t.compare(model, conversion, inputs=inputs, device="cpu")
        assert result.ok
        rows = {layer.keras_layer: layer for layer in result.layers}
        for name, into in (("conv1_pad", "conv1_conv"), ("pool1_pad", "pool1_pool")):
            assert rows[name].status(result.tolerance) == "skip", rows[name]
            assert f"folded into {into!r}" in rows[name].note, rows[name].note
        assert rows["pool1_pool"].compared and rows["pool1_pool"].status(result.tolerance) == "ok"
