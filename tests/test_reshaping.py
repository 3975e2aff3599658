"""Reshaping converters against Keras: Flatten (order folded into Dense), Reshape, Permute,
RepeatVector, ZeroPadding/Cropping/UpSampling 1D-3D, in both input formats."""

import keras
import pytest
from exactness import assert_exact

import kerastorch_magic as k2t
from kerastorch_magic.registry import LayerCall

FORMATS = ["channels_first", "channels_last"]
L = keras.layers


# Whether converters see the whole graph (LayerCall.readers_of), so a flatten can fold through dropouts.
LOOKS_AHEAD = hasattr(LayerCall, "readers_of")


def tiny(shape, *layers):
    return keras.Sequential([keras.Input(shape), *layers])


# -- Flatten ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
def test_flatten_folds_into_dense(fmt):
    conversion, _ = assert_exact(tiny((6, 5, 3), L.Conv2D(4, 3), L.Flatten(), L.Dense(7)), fmt)
    if fmt == "channels_first":
        assert "permute" not in conversion.code
        assert "reordered" in conversion.code
    assert "x = torch.flatten(x, 1)" in conversion.code


@pytest.mark.parametrize("fmt", FORMATS)
def test_flatten_as_model_output_permutes_first(fmt):
    conversion, _ = assert_exact(tiny((6, 5, 3), L.Conv2D(4, 3), L.Flatten()), fmt)
    assert "x = x.permute(0, 2, 3, 1)" in conversion.code
    assert "Keras flattens in channels-last order" in conversion.code


@pytest.mark.parametrize("fmt", FORMATS)
def test_unit_axes_need_no_permute(fmt):
    """(N, C, 1, 1) lists its elements as its Keras twin (N, 1, 1, C) does: flatten or reshape it
    as it is (MobileNetV3's 1x1 logits); a 2x1 map still goes through Keras's order."""
    pooled = [L.GlobalAveragePooling2D(keepdims=True), L.Conv2D(5, 1)]
    conversion, _ = assert_exact(tiny((6, 5, 3), L.Conv2D(4, 3), *pooled, L.Flatten()), fmt)
    to_keras_order = "x = x.permute(0, 2, 3, 1)"  # (an input in channels_last is permuted the other way)
    assert to_keras_order not in conversion.code and "x = torch.flatten(x, 1)" in conversion.code
    conversion, _ = assert_exact(tiny((6, 5, 3), L.Conv2D(4, 3), *pooled, L.Reshape((5, 1))), fmt)
    assert to_keras_order not in conversion.code
    tall = [L.MaxPooling2D((2, 3)), L.Conv2D(5, 1), L.Flatten()]
    conversion, _ = assert_exact(tiny((4, 3, 3), *tall), fmt)
    assert to_keras_order in conversion.code


@pytest.mark.parametrize("fmt", FORMATS)
def test_flatten_dropout_dense(fmt):
    model = tiny((6, 5, 3), L.Conv2D(4, 3), L.Flatten(), L.Dropout(0.5), L.GaussianNoise(0.1), L.Dense(7))
    conversion, _ = assert_exact(model, fmt)
    if LOOKS_AHEAD and fmt == "channels_first":  # the order folds through the dropouts
        assert "permute" not in conversion.code
        assert "reordered" in conversion.code


@pytest.mark.parametrize("fmt", FORMATS)
def test_flatten_dropout_also_read_elsewhere_does_not_fold(fmt):
    inputs = keras.Input((5, 6, 2))
    dropped = L.Dropout(0.3)(L.Flatten()(L.Conv2D(3, 2)(inputs)))
    assert_exact(keras.Model(inputs, [L.Dense(4)(dropped), dropped]), fmt)
    keras.backend.clear_session()
    inputs = keras.Input((5, 6, 2))
    dropped = L.Dropout(0.3)(L.Flatten()(L.Conv2D(3, 2)(inputs)))
    assert_exact(keras.Model(inputs, [L.Dense(4)(dropped), L.ReLU()(dropped)]), fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_flatten_shared_by_two_dense(fmt):
    inputs = keras.Input((5, 6, 2))
    flat = L.Flatten()(L.Conv2D(3, 2)(inputs))
    model = keras.Model(inputs, [L.Dense(4)(flat), L.Dense(2, activation="tanh")(flat)])
    conversion, _ = assert_exact(model, fmt)
    if fmt == "channels_first":
        assert "permute" not in conversion.code


@pytest.mark.parametrize("fmt", FORMATS)
def test_flatten_read_by_dense_and_other_layer_does_not_fold(fmt):
    inputs = keras.Input((5, 6, 2))
    flat = L.Flatten()(L.Conv2D(3, 2)(inputs))
    model = keras.Model(inputs, [L.Dense(4)(flat), L.Activation("relu")(flat)])
    assert_exact(model, fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_flatten_before_shared_dense_does_not_fold(fmt):
    a, b = keras.Input((4, 4, 2)), keras.Input((32,))
    dense = L.Dense(3)
    flat = L.Flatten()(L.Conv2D(2, 1)(a))
    model = keras.Model([a, b], [dense(flat), dense(b)])
    assert_exact(model, fmt)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dense", [True, False])
def test_flatten_data_format_channels_first(dense, fmt):
    layers = [L.Flatten(data_format="channels_first")] + ([L.Dense(5)] if dense else [])
    assert_exact(tiny((3, 4, 5), *layers), fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_flatten_sequence_and_vector(fmt):
    assert_exact(tiny((7, 3), L.Conv1D(4, 3), L.Flatten(), L.Dense(3)), fmt)
    assert_exact(tiny((6,), L.Flatten(), L.Dense(3)), fmt)
    assert_exact(tiny((), L.Flatten()), fmt)  # Keras gives (batch, 1)
    assert_exact(tiny((4, 3, 2, 2), L.Conv3D(2, 1), L.Flatten(), L.Dense(3)), fmt)


# -- Reshape, Permute, RepeatVector -----------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
def test_reshape_dense_to_image(fmt):
    model = tiny((12,), L.Dense(32), L.Reshape((4, 4, 2)), L.Conv2D(3, 3, padding="same"))
    conversion, _ = assert_exact(model, fmt)
    assert "x = x.reshape(-1, 4, 4, 2)" in conversion.code


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("target", [(-1, 4), (30, 4), (5, 6, 4), (120,)])
def test_reshape_feature_map(target, fmt):
    assert_exact(tiny((7, 8, 3), L.Conv2D(4, 3), L.Reshape(target), L.Dense(2)), fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_reshape_with_unknown_steps(fmt):
    model = tiny((None, 6), L.Reshape((-1, 2, 3)))
    inputs = [keras.random.normal((2, 5, 6), seed=1).numpy()]
    conversion, _ = assert_exact(model, fmt, inputs=inputs)
    assert "x.reshape(x.shape[0], -1, 2, 3)" in conversion.code


PERMUTES = [(3, 1, 2), (2, 1, 3), (1, 3, 2), (2, 3, 1), (1, 2, 3)]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dims", PERMUTES)
def test_permute_feature_map(dims, fmt):
    model = tiny((5, 6, 3), L.Conv2D(4, 3), L.Permute(dims), L.Conv2D(2, 1))
    assert_exact(model, fmt)
    assert_exact(tiny((5, 6, 3), L.Conv2D(4, 3), L.Permute(dims)), fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_permute_sequence(fmt):
    assert_exact(tiny((6, 4), L.Permute((2, 1)), L.Conv1D(3, 2)), fmt)
    assert_exact(tiny((6, 4), L.Permute((2, 1)), L.Dense(3)), fmt)


def test_permute_code():
    # channels-first torch tensor + Keras Permute((3, 1, 2)) = channels-first Keras tensor: free
    model = tiny((5, 6, 3), L.Conv2D(4, 3), L.Permute((3, 1, 2)), L.Flatten())
    code = assert_exact(model)[0].code
    assert "permute" not in code
    code = assert_exact(tiny((5, 6, 3), L.Permute((2, 1, 3))), "channels_last")[0].code
    assert "x = x.permute(0, 2, 1, 3)" in code
    # height <-> width on a channels-first tensor feeding a convolution: swap the last two dims
    model = tiny((5, 6, 3), L.Conv2D(4, 3), L.Permute((2, 1, 3)), L.Conv2D(2, 1))
    code = assert_exact(model)[0].code
    assert "x = x.permute(0, 1, 3, 2)" in code
    assert code.count("permute") == 1


def test_reshape_and_repeat_vector_feeding_convolutions_go_channels_first():
    model = tiny((12,), L.Dense(32), L.Reshape((4, 4, 2)), L.Conv2D(3, 3))
    code = assert_exact(model)[0].code
    assert "x = x.permute(0, 3, 1, 2)" in code
    assert "channels-first for what follows" in code
    code = assert_exact(tiny((5,), L.RepeatVector(3), L.Conv1D(2, 2)))[0].code
    assert "x = x.unsqueeze(2).repeat(1, 1, 3)" in code
    assert "permute" not in code


@pytest.mark.parametrize("fmt", FORMATS)
def test_repeat_vector(fmt):
    assert_exact(tiny((5,), L.Dense(4), L.RepeatVector(3), L.Conv1D(2, 2)), fmt)
    conversion, _ = assert_exact(tiny((5,), L.Dense(4), L.RepeatVector(3)), fmt)
    assert "x.unsqueeze(1).repeat(1, 3, 1)" in conversion.code


# -- ZeroPadding, Cropping --------------------------------------------------------------------------
PAD_2D = [1, (2, 1), ((1, 2), (0, 3)), ((0, 0), (2, 0))]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("after_conv", [True, False])
@pytest.mark.parametrize("padding", PAD_2D)
def test_zero_padding2d(padding, after_conv, fmt):
    layers = [L.Conv2D(3, 1)] if after_conv else []
    assert_exact(tiny((5, 4, 3), *layers, L.ZeroPadding2D(padding), L.Conv2D(2, 3)), fmt)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("padding", [2, (1, 3)])
def test_zero_padding1d(padding, fmt):
    assert_exact(tiny((6, 3), L.ZeroPadding1D(padding)), fmt)
    assert_exact(tiny((6, 3), L.ZeroPadding1D(padding), L.Conv1D(2, 3)), fmt)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("padding", [1, ((1, 0), (0, 2), (2, 1))])
def test_zero_padding3d(padding, fmt):
    assert_exact(tiny((3, 4, 2, 2), L.ZeroPadding3D(padding), L.Conv3D(2, 2)), fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_padding_and_cropping_data_format_channels_first(fmt):
    model = tiny(
        (2, 5, 6),
        L.ZeroPadding2D(((1, 2), (3, 0)), data_format="channels_first"),
        L.Cropping2D(((0, 1), (2, 1)), data_format="channels_first"),
    )
    assert_exact(model, fmt)


def test_zero_padding_code():
    model = tiny((5, 4, 3), L.Conv2D(3, 1), L.ZeroPadding2D(((1, 2), (3, 4))))
    code = assert_exact(model)[0].code
    assert "x = F.pad(x, (3, 4, 1, 2))" in code
    assert "F.pad lists the last dimension first" in code
    code = assert_exact(tiny((5, 4, 3), L.ZeroPadding2D(1)), "channels_last")[0].code
    assert "x = F.pad(x, (0, 0, 1, 1, 1, 1))" in code  # Keras layout: channels untouched
    assert "permute" not in code


CROP_2D = [1, (2, 1), ((1, 2), (0, 3)), ((0, 0), (2, 0)), ((0, 1), (0, 0))]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("cropping", CROP_2D)
def test_cropping2d(cropping, fmt):
    assert_exact(tiny((7, 8, 3), L.Conv2D(3, 1), L.Cropping2D(cropping), L.Conv2D(2, 2)), fmt)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("cropping", [1, (0, 2), (3, 0)])
def test_cropping1d(cropping, fmt):
    assert_exact(tiny((7, 3), L.Cropping1D(cropping)), fmt)
    assert_exact(tiny((7, 3), L.Conv1D(3, 1), L.Cropping1D(cropping), L.Conv1D(2, 2)), fmt)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("cropping", [1, ((1, 0), (0, 2), (2, 1))])
def test_cropping3d(cropping, fmt):
    assert_exact(tiny((4, 5, 6, 2), L.Conv3D(2, 1), L.Cropping3D(cropping)), fmt)


def test_cropping_code():
    model = tiny((7, 8, 3), L.Conv2D(3, 1), L.Cropping2D(((1, 2), (0, 3))))
    assert "x = x[:, :, 1:-2, :-3]" in assert_exact(model)[0].code
    model = tiny((7, 8, 3), L.Conv2D(3, 1), L.Cropping2D(((0, 1), (0, 0))))
    assert "x = x[:, :, :-1]" in assert_exact(model)[0].code


# -- UpSampling -------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
@pytest.mark.parametrize("size", [2, (2, 3), 3, (1, 4)])
def test_up_sampling2d(size, interpolation, fmt):
    layer = L.UpSampling2D(size, interpolation=interpolation)
    assert_exact(tiny((5, 4, 3), L.Conv2D(3, 1), layer), fmt)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_up_sampling2d_data_format_channels_first(interpolation, fmt):
    layer = L.UpSampling2D((2, 3), data_format="channels_first", interpolation=interpolation)
    assert_exact(tiny((3, 5, 4), layer), fmt)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("size", [2, 3])
def test_up_sampling1d(size, fmt):
    assert_exact(tiny((5, 3), L.UpSampling1D(size)), fmt)
    assert_exact(tiny((5, 3), L.Conv1D(3, 1), L.UpSampling1D(size), L.Conv1D(2, 2)), fmt)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("size", [2, (1, 2, 3)])
def test_up_sampling3d(size, fmt):
    assert_exact(tiny((3, 4, 2, 2), L.UpSampling3D(size)), fmt)


def test_up_sampling_code():
    model = tiny(
        (5, 4, 3),
        L.Conv2D(3, 1),
        L.UpSampling2D(2),
        L.UpSampling2D((1, 3)),
        L.UpSampling2D(2, interpolation="bilinear"),
    )
    code = assert_exact(model)[0].code
    assert 'x = F.interpolate(x, scale_factor=2, mode="nearest")' in code
    assert "x = x.repeat_interleave(3, dim=3)" in code
    assert 'F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)' in code


@pytest.mark.parametrize("interpolation", ["bicubic", "lanczos3"])
def test_unsupported_interpolation_is_refused_by_name(interpolation):
    model = tiny((5, 4, 3), L.UpSampling2D(2, interpolation=interpolation, name="grow"))
    with pytest.raises(k2t.ConversionError, match=f"'grow'.*UpSampling2D.*{interpolation}") as error:
        k2t.convert(model)
    assert error.value.layers == [("grow", "UpSampling2D")]
