"""Normalisation layers against Keras: BatchNormalization, LayerNormalization, GroupNormalization,
RMSNormalization, UnitNormalization, over ranks, axes, center/scale and both input formats."""

import keras
import pytest
import torch
from exactness import assert_exact

FORMATS = ["channels_first", "channels_last"]
L = keras.layers
CENTER_SCALE = [(True, True), (False, True), (True, False), (False, False)]


def model(shape, *layers):
    return keras.Sequential([keras.Input(shape), *layers])


# -- BatchNormalization ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "shape, before, axis",
    [
        ((6,), [L.Dense(5)], -1),  # rank 2, after Dense: BatchNorm1d
        ((7, 4), [], -1),  # rank 3 sequence, channels last: BatchNorm1d on (N, C, L)
        ((7, 4), [L.Conv1D(5, 3)], -1),  # rank 3 after a channels-first conv
        ((7, 4), [], 1),  # rank 3, normalising the time axis
        ((9, 8, 3), [L.Conv2D(4, 3)], -1),  # rank 4: BatchNorm2d
        ((9, 8, 3), [L.Conv2D(4, 3)], 1),  # rank 4 over the height axis
        ((9, 8, 3), [], -1),  # straight on the model input
        ((5, 6, 7, 2), [L.Conv3D(3, 2)], -1),  # rank 5: BatchNorm3d
    ],
)
def test_batch_norm_ranks_and_axes(shape, before, axis, fmt):
    assert_exact(model(shape, *before, L.BatchNormalization(axis=axis)), fmt)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("center, scale", CENTER_SCALE)
def test_batch_norm_center_scale(center, scale, fmt):
    net = model((9, 8, 3), L.Conv2D(4, 3), L.BatchNormalization(center=center, scale=scale), L.ReLU())
    conversion, _ = assert_exact(net, fmt)
    module = conversion.build()
    norm = module.batch_normalization
    if not (center or scale):
        assert "affine=False" in conversion.code
        assert norm.weight is None
    else:
        assert norm.weight.requires_grad == scale
        assert norm.bias.requires_grad == center
        # reset_parameters keeps the frozen one at its fixed value
        module.reset_parameters()
        assert torch.all(norm.weight == 1) and torch.all(norm.bias == 0)


def test_batch_norm_eps_and_momentum_are_keras_s():
    net = model((9, 8, 3), L.Conv2D(4, 3), L.BatchNormalization(epsilon=1.001e-5, momentum=0.9))
    conversion, _ = assert_exact(net)
    assert "nn.BatchNorm2d(4, eps=1.001e-05, momentum=0.1)" in conversion.code
    default = assert_exact(model((9, 8, 3), L.Conv2D(4, 3), L.BatchNormalization()))[0].code
    assert "nn.BatchNorm2d(4, eps=0.001, momentum=0.01)" in default
    assert "eps=0.001 (torch default 1e-5)" in default


def test_batch_norm_custom_initialisers_reach_reset_parameters():
    norm = L.BatchNormalization(gamma_initializer="zeros", moving_variance_initializer="zeros")
    code = assert_exact(model((9, 8, 3), L.Conv2D(4, 3), norm))[0].code
    assert "nn.init.zeros_(self.batch_normalization.weight)" in code
    assert "nn.init.zeros_(self.batch_normalization.running_var)" in code


# -- LayerNormalization ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "shape, before, axis",
    [
        ((6,), [L.Dense(5)], -1),
        ((7, 4), [], -1),
        ((7, 4), [L.Conv1D(5, 3)], -1),  # channels over a channels-first sequence
        ((7, 4), [L.Conv1D(5, 3)], [1, 2]),
        ((7, 4), [], 1),  # over time
        ((9, 8, 3), [L.Conv2D(4, 3)], -1),  # ConvNeXt's case: channels of an image
        ((9, 8, 3), [L.Conv2D(4, 3)], [1, 2, 3]),  # everything but the batch
        ((9, 8, 3), [L.Conv2D(4, 3)], [1, 2]),  # height and width
        ((9, 8, 3), [L.Conv2D(4, 3)], [3, 1]),  # unsorted list
        ((9, 8, 3), [L.Conv2D(4, 3)], 2),  # width only
    ],
)
def test_layer_norm_axes(shape, before, axis, fmt):
    assert_exact(model(shape, *before, L.LayerNormalization(axis=axis)), fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_layer_norm_then_conv_and_dense(fmt):
    """Channels-last LayerNorm between convolutions, and feeding a Dense on the feature map."""
    net = model(
        (9, 8, 3),
        L.Conv2D(4, 3),
        L.LayerNormalization(epsilon=1e-6),
        L.Conv2D(5, 3, padding="same"),
        L.LayerNormalization(),
        L.Dense(6),
        L.LayerNormalization(axis=[1, 2]),
    )
    conversion, _ = assert_exact(net, fmt)
    assert "nn.LayerNorm(4, eps=1e-06)" in conversion.code
    assert "nn.GroupNorm" not in conversion.code


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("center, scale", CENTER_SCALE)
def test_layer_norm_center_scale(center, scale, fmt):
    net = model((9, 8, 3), L.Conv2D(4, 3), L.LayerNormalization(center=center, scale=scale))
    conversion, _ = assert_exact(net, fmt)
    norm = conversion.build().layer_normalization
    if not (center or scale):
        assert norm.weight is None and norm.bias is None
    elif not center:
        assert "bias=False" in conversion.code and norm.bias is None
    else:
        assert norm.weight.requires_grad == scale and norm.bias.requires_grad


def test_layer_norm_as_model_output_keeps_the_requested_layout():
    conversion, _ = assert_exact(model((9, 8, 3), L.Conv2D(4, 3), L.LayerNormalization()))
    assert conversion.outputs[0].perm == (0, 3, 1, 2)


def test_layer_norm_rms_scaling_is_refused_by_name():
    import kerastorch_magic as k2t

    with pytest.warns(UserWarning):
        layer = L.LayerNormalization(rms_scaling=True, name="rms_ln")
    with pytest.raises(k2t.ConversionError, match="rms_ln"):
        k2t.convert(model((6,), layer))


# -- GroupNormalization, RMSNormalization, UnitNormalization ------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "shape, before, groups, axis",
    [
        ((9, 8, 3), [L.Conv2D(8, 3)], 4, -1),
        ((9, 8, 3), [L.Conv2D(8, 3)], 1, -1),
        ((9, 8, 3), [L.Conv2D(8, 3)], -1, -1),  # instance normalisation
        ((7, 4), [L.Conv1D(6, 3)], 3, -1),
        ((7, 6), [], 2, -1),
        ((6, 5, 4), [], 5, 2),  # a non-channel axis
        ((10,), [L.Dense(8)], 2, -1),
    ],
)
def test_group_norm(shape, before, groups, axis, fmt):
    assert_exact(model(shape, *before, L.GroupNormalization(groups=groups, axis=axis)), fmt)


@pytest.mark.parametrize("center, scale", CENTER_SCALE)
def test_group_norm_center_scale(center, scale):
    net = model((9, 8, 3), L.Conv2D(8, 3), L.GroupNormalization(4, center=center, scale=scale))
    conversion, _ = assert_exact(net)
    if center or scale:
        norm = conversion.build().group_normalization
        assert norm.weight.requires_grad == scale and norm.bias.requires_grad == center


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "shape, before, axis",
    [
        ((6,), [L.Dense(5)], -1),
        ((9, 8, 3), [L.Conv2D(4, 3)], -1),
        ((9, 8, 3), [L.Conv2D(4, 3)], [1, 2, 3]),
        ((9, 8, 3), [L.Conv2D(4, 3)], [2, 3]),
        # Not tested: a single non-last axis, which Keras 3.15 itself cannot run (its scale of
        # shape (n,) does not broadcast against the input).
    ],
)
def test_rms_norm(shape, before, axis, fmt):
    assert_exact(model(shape, *before, L.RMSNormalization(axis=axis, epsilon=1e-5)), fmt)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "shape, before, axis",
    [
        ((6,), [L.Dense(5)], -1),
        ((9, 8, 3), [L.Conv2D(4, 3)], -1),
        ((9, 8, 3), [L.Conv2D(4, 3)], [1, 2]),
        ((7, 4), [], 1),
    ],
)
def test_unit_norm(shape, before, axis, fmt):
    assert_exact(model(shape, *before, L.UnitNormalization(axis=axis)), fmt)
