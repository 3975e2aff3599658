"""Preprocessing layers against Keras: Rescaling, Normalization, CenterCrop, Resizing and the
augmentation layers (identity at inference), both input formats."""

import keras
import numpy as np
import pytest
from exactness import assert_exact

import kerastorch_magic as k2t

FORMATS = ["channels_first", "channels_last"]
L = keras.layers


def model(shape, *layers, dtype="float32"):
    return keras.Sequential([keras.Input(shape, dtype=dtype), *layers])


# -- Rescaling ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "scale, offset, text",
    [
        (1.0 / 255, 0.0, "x * (1 / 255)"),
        (1.0 / 127.5, -1.0, "x * (1 / 127.5) - 1.0"),
        (0.5, 0.25, "x * 0.5 + 0.25"),
        (-3.7, 0.0, "x * -3.7"),
    ],
)
def test_rescaling_scalar_reads_like_arithmetic(scale, offset, text, fmt):
    net = model((9, 8, 3), L.Rescaling(scale, offset), L.Conv2D(4, 3))
    conversion, _ = assert_exact(net, fmt)
    assert text in conversion.code


@pytest.mark.parametrize("fmt", FORMATS)
def test_rescaling_per_channel(fmt):
    scale, offset = [1 / 0.229, 1 / 0.224, 1 / 0.225], [-0.485, -0.456, 0.406]
    net = model((9, 8, 3), L.Rescaling(scale, offset), L.Conv2D(4, 3))
    conversion, _ = assert_exact(net, fmt)
    expected = (3, 1, 1) if fmt == "channels_first" else (3,)
    assert conversion.state_dict["rescaling.scale"].shape == expected
    assert "class Rescale(nn.Module)" in conversion.code


def test_rescaling_per_channel_on_features_and_integer_images():
    assert_exact(model((4,), L.Rescaling([1.0, 2.0, 3.0, 4.0]), L.Dense(3)))
    net = model((9, 8, 3), L.Rescaling(1.0 / 255), L.Conv2D(4, 3), dtype="uint8")
    assert_exact(net)


# -- Normalization -----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "shape, options",
    [
        ((9, 8, 3), {}),  # adapted per channel (its weights are randomised)
        ((9, 8, 3), {"mean": [0.485, 0.456, 0.406], "variance": [0.052, 0.050, 0.051]}),
        ((9, 8, 3), {"axis": None, "mean": 0.5, "variance": 2.0}),  # one scalar
        ((9, 8, 3), {"axis": [1, 2]}),  # per pixel
        ((9, 8, 3), {"invert": True}),
        ((9, 8, 3), {"mean": [1.0, 2.0, 3.0], "variance": [0.0, 4.0, 1e-20]}),  # sqrt(var) < eps
        ((6,), {}),
        ((7, 4), {"axis": 1}),
    ],
)
def test_normalization(shape, options, fmt):
    after = [L.Conv2D(4, 3)] if len(shape) == 3 else [L.Dense(3)] if len(shape) == 1 else []
    net = model(shape, L.Normalization(**options), *after)
    assert_exact(net, fmt)


def test_normalization_uses_adapted_statistics():
    data = np.random.default_rng(3).normal(5.0, 3.0, (64, 9, 8, 3)).astype("float32")
    norm = L.Normalization()
    norm.adapt(data)
    conversion, _ = assert_exact(model((9, 8, 3), norm, L.Conv2D(4, 3)), randomise=False)
    np.testing.assert_allclose(
        conversion.state_dict["normalization.mean"].numpy().reshape(-1), data.mean(axis=(0, 1, 2)), rtol=1e-4
    )
    assert "max(sqrt(variance), eps)" in conversion.code


# -- Augmentation, crops, resizing ------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_augmentation_layers_are_the_identity_at_inference(fmt):
    augmentations = [
        L.RandomFlip(),
        L.RandomRotation(0.2),
        L.RandomZoom(0.2),
        L.RandomTranslation(0.1, 0.1),
        L.RandomContrast(0.3),
        L.RandomBrightness(0.2),
        L.RandomCrop(16, 20),  # the input's own size: nothing to crop
        L.RandomShear(0.1),
        L.RandomHue(0.1, value_range=(0, 1)),
        L.RandomSaturation(0.2),
        L.RandomGrayscale(),
        L.RandomSharpness(0.2),
        L.RandomErasing(),
        L.RandomGaussianBlur(),
        L.RandomColorJitter(),
        L.RandomPerspective(),
        L.RandomElasticTransform(),
        L.RandomInvert(),
        L.RandomColorDegeneration(0.2),
        L.Solarization(),
        L.MixUp(),
        L.CutMix(),
        L.AugMix(),
        L.RandAugment(),
    ]
    net = model((16, 20, 3), *augmentations, L.Conv2D(4, 3))
    conversion, _ = assert_exact(net, fmt)
    assert "random" not in conversion.code.split("def forward")[1].lower()
    notes = [str(n) for n in conversion.notes]
    assert any("RandomFlip is data augmentation" in n for n in notes)


def test_random_crop_changing_the_size_is_refused():
    net = model((16, 20, 3), L.Conv2D(4, 3), L.RandomCrop(8, 10, name="crop"))
    with pytest.raises(k2t.ConversionError, match="crop.*uncropped"):
        k2t.convert(net)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("size", [(8, 10), (7, 9), (16, 20), (15, 3)])
def test_center_crop(size, fmt):
    assert_exact(model((16, 20, 3), L.CenterCrop(*size), L.Conv2D(4, 1)), fmt)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
@pytest.mark.parametrize("size", [(32, 40), (7, 9), (16, 13), (24, 24)])
def test_resizing(size, interpolation, fmt):
    net = model((16, 20, 3), L.Resizing(*size, interpolation=interpolation), L.Conv2D(4, 1))
    assert_exact(net, fmt)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("size", [(12, 12), (8, 20), (20, 9)])
def test_resizing_crop_to_aspect_ratio(size, fmt):
    net = model((16, 20, 3), L.Resizing(*size, crop_to_aspect_ratio=True), L.Conv2D(4, 1))
    assert_exact(net, fmt)


def test_resizing_unsupported_options_are_named():
    net = model((16, 20, 3), L.Resizing(8, 8, interpolation="bicubic", name="resize_me"))
    with pytest.raises(k2t.ConversionError, match="resize_me.*bicubic"):
        k2t.convert(net)
