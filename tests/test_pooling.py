"""Pooling converters against Keras: local pooling 1D/2D/3D ('valid'/'same', strides, data formats)
and global pooling (keepdims), in both input formats."""

import keras
import numpy as np
import pytest
from exactness import assert_exact, unwrap

FORMATS = ["channels_first", "channels_last"]
L = keras.layers


def tiny(shape, *layers):
    return keras.Sequential([keras.Input(shape), *layers])


# (input spatial size, pool_size, strides, padding): odd/even sizes, strides smaller/larger than the
# window, 'same' with symmetric, asymmetric and size-dependent padding.
CASES_2D = [
    ((8, 8), 2, None, "valid"),
    ((9, 7), 3, 2, "valid"),
    ((7, 9), (2, 3), (1, 2), "valid"),
    ((8, 8), 2, None, "same"),
    ((7, 7), 2, None, "same"),  # odd size: one trailing window
    ((7, 8), 3, 1, "same"),  # symmetric pad 1
    ((8, 7), 3, 2, "same"),  # even -> pad (0, 1), odd -> pad (1, 1)
    ((6, 6), 4, 1, "same"),  # even window, stride 1: pad (1, 2)
    ((10, 5), (3, 2), (2, 3), "same"),
    ((5, 5), 5, 2, "same"),
    ((6, 9), 1, 3, "same"),  # window smaller than stride: no padding at all
    ((3, 3), 4, 1, "same"),  # window larger than the input
]
CASES_1D = [
    ((8,), 2, None, "valid"),
    ((9,), 3, 2, "valid"),
    ((7,), 2, None, "same"),
    ((8,), 4, 1, "same"),
    ((9,), 3, 2, "same"),
    ((10,), 3, 3, "same"),
]
CASES_3D = [
    ((4, 6, 5), 2, None, "valid"),
    ((5, 4, 6), (2, 3, 2), (1, 2, 2), "valid"),
    ((5, 4, 7), 2, None, "same"),
    ((5, 6, 4), 3, (2, 1, 2), "same"),
]
CHANNELS = {1: 4, 2: 3, 3: 2}  # input channels per spatial rank


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", ["Max", "Average"])
@pytest.mark.parametrize("spatial, pool, strides, padding", CASES_1D + CASES_2D + CASES_3D)
def test_pooling(kind, spatial, pool, strides, padding, fmt):
    rank = len(spatial)
    layer = getattr(L, f"{kind}Pooling{rank}D")(pool, strides=strides, padding=padding)
    assert_exact(tiny((*spatial, CHANNELS[rank]), layer), fmt)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", ["Max", "Average"])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_pooling2d_data_format_channels_first(kind, padding, fmt):
    layer = getattr(L, f"{kind}Pooling2D")(3, strides=2, padding=padding, data_format="channels_first")
    assert_exact(tiny((3, 8, 7), layer), fmt)


def test_pooling_after_conv_needs_no_permute():
    model = tiny((9, 9, 3), L.Conv2D(4, 3), L.MaxPooling2D(2, padding="same"), L.Conv2D(2, 1))
    code = unwrap(assert_exact(model)[0].code)
    assert "self.max_pooling2d = nn.MaxPool2d(2, ceil_mode=True)" in code
    assert "permute" not in code


def test_same_pooling_reads_like_torch():
    model = tiny(
        (8, 8, 3),
        L.MaxPooling2D(3, strides=1, padding="same"),
        L.AveragePooling2D(3, strides=2, padding="same"),
        L.AveragePooling2D(2, strides=1, padding="same"),
        L.MaxPooling2D((2, 3), strides=1, padding="same"),
    )
    code = unwrap(assert_exact(model)[0].code)
    assert "nn.MaxPool2d(3, stride=1, padding=1)" in code
    # pads (0, 1) at stride 2: ceil_mode adds the last window; padded cells stay out of the mean
    assert "nn.AvgPool2d(3, stride=2, ceil_mode=True, count_include_pad=False)" in code
    assert "they do not count in the mean" in code
    # pads (0, 1) at stride 1: pad 1 both sides, drop the first window
    assert "nn.AvgPool2d(2, stride=1, padding=1, count_include_pad=False)" in code
    assert "x = self.average_pooling2d_1(x)[:, :, 1:, 1:]" in code
    # max pooling with an odd cell at stride 1: explicit -inf padding, last dim first
    assert 'x = F.pad(x, (1, 1, 0, 1), value=float("-inf"))' in code
    assert "nn.MaxPool2d((2, 3), stride=1)" in code


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", ["Max", "Average"])
@pytest.mark.parametrize("pool, strides", [(2, None), (3, 2), ((3, 2), (2, 1))])
def test_same_pooling_with_unknown_size(kind, pool, strides, fmt):
    layer = getattr(L, f"{kind}Pooling2D")(pool, strides=strides, padding="same")
    model = tiny((None, None, 3), layer)
    for shape in [(2, 7, 8, 3), (2, 8, 5, 3)]:  # one conversion, any size
        inputs = [np.random.default_rng(1).normal(size=shape).astype("float32")]
        conversion, _ = assert_exact(model, fmt, inputs=inputs)
    assert "_pad_same(" in conversion.code


# -- global pooling ---------------------------------------------------------------------------------
GLOBAL = [
    ("1D", (7, 4)),
    ("2D", (5, 6, 3)),
    ("3D", (3, 4, 5, 2)),
]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("kind", ["Average", "Max"])
@pytest.mark.parametrize("dim, shape", GLOBAL)
def test_global_pooling(kind, dim, shape, keepdims, fmt):
    layer = getattr(L, f"Global{kind}Pooling{dim}")(keepdims=keepdims)
    conversion, _ = assert_exact(tiny(shape, layer), fmt)
    rank = len(shape) + 1
    assert conversion.outputs[0].rank == (rank if keepdims else 2)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("kind", ["Average", "Max"])
def test_global_pooling_data_format_channels_first(kind, keepdims, fmt):
    layer = getattr(L, f"Global{kind}Pooling2D")(keepdims=keepdims, data_format="channels_first")
    assert_exact(tiny((3, 5, 4), layer), fmt)


def test_global_pooling_code():
    model = tiny(
        (6, 6, 3),
        L.Conv2D(4, 3),
        L.GlobalAveragePooling2D(keepdims=True),
        L.Conv2D(5, 1),
        L.GlobalMaxPooling2D(),
        L.Dense(2),
    )
    conversion, _ = assert_exact(model)
    assert "x = x.mean(dim=(2, 3), keepdim=True)" in conversion.code
    assert "x = x.amax(dim=(2, 3))" in conversion.code
    assert "permute" not in conversion.code


def test_global_pooling_keepdims_output_stays_channels_first():
    model = tiny((5, 6, 3), L.Conv2D(4, 3), L.GlobalAveragePooling2D(keepdims=True))
    conversion, _ = assert_exact(model, "channels_first")
    assert conversion.outputs[0].perm == (0, 3, 1, 2)
    assert conversion.outputs[0].torch_shape[1:] == (4, 1, 1)


@pytest.mark.parametrize("fmt", FORMATS)
def test_masked_global_pooling_1d(fmt):
    """Keras averages over unmasked steps only; GlobalMaxPooling1D ignores the mask."""
    tokens = keras.Input((6,), dtype="int32", name="tokens")
    embedded = L.Embedding(10, 4, mask_zero=True, name="embedding")(tokens)
    conv = L.Conv1D(4, 1, name="conv")(embedded)  # channels-first in torch: the mask spreads over dim 2
    values = keras.Input((6, 3), name="values")
    masked = L.Masking(0.5, name="masking")(values)
    outputs = [
        L.GlobalAveragePooling1D(name="gap")(embedded),
        L.GlobalAveragePooling1D(keepdims=True, name="gap_keep")(embedded),
        L.GlobalMaxPooling1D(name="gmp")(embedded),
        L.GlobalAveragePooling1D(name="gap_masking")(masked),
        L.GlobalAveragePooling1D(name="gap_conv")(L.Masking(0.0, name="remask")(conv)),
    ]
    model = keras.Model([tokens, values], outputs)
    # Padding at the end and holes (a fully padded row averages 0 / 0 = nan in both: left out).
    ids = np.array([[1, 2, 3, 0, 0, 0], [4, 0, 5, 6, 0, 7], [0, 3, 0, 2, 1, 0]], dtype="int32")
    floats = np.random.default_rng(0).normal(size=(3, 6, 3)).astype("float32")
    floats[0, 2:], floats[1, 1], floats[2, 4] = 0.5, 0.5, 0.5
    conversion, _ = assert_exact(model, fmt, inputs=[ids, floats])
    assert "Keras averages over the unmasked steps only" in conversion.code
