"""Every class keras.layers exports either converts or is refused with its reason, and says so."""

import keras
import numpy as np
import pytest

import kerastorch_magic as k2t
from kerastorch_magic import registry
from kerastorch_magic.converters import refused


def test_every_keras_layer_class_converts_or_is_refused_with_a_reason():
    classes = refused.keras_layer_classes()
    assert len(classes) > 100, classes
    converted = set(registry.supported_layers())
    neither = [name for name in classes if name not in converted and name not in refused.REFUSED]
    assert neither == [], f"keras.layers classes neither converted nor refused with a reason: {neither}"
    both = sorted(converted & set(refused.REFUSED))
    assert both == [], f"refused but converted: {both}"
    stale = sorted(set(refused.REFUSED) - set(classes))
    assert stale == [], f"refused classes keras.layers does not export: {stale}"


def test_stacked_cells_called_on_their_own_are_refused_and_convert_inside_rnn():
    steps = keras.Input((5, 3))
    state = keras.Input((4,))
    stacked = keras.layers.StackedRNNCells([keras.layers.SimpleRNNCell(4)], name="cells")
    output, _ = stacked(steps[:, 0], [state])
    with pytest.raises(k2t.ConversionError, match=r"'cells' \(StackedRNNCells\).*wrap the cell in RNN"):
        k2t.convert(keras.Model([steps, state], output))
    k2t.convert(keras.Sequential([steps, keras.layers.RNN(keras.layers.SimpleRNNCell(4))]))


def test_refusal_names_the_layer_and_the_reason():
    tokens = keras.Input((1,), dtype="int64")
    hashed = keras.layers.Hashing(num_bins=8, name="bucket")(tokens)
    model = keras.Model(tokens, keras.layers.Embedding(8, 4)(hashed))
    with pytest.raises(k2t.ConversionError, match="FarmHash64") as info:
        k2t.convert(model)
    assert info.value.layers == [("bucket", "Hashing")]
    assert "'bucket' (Hashing)" in str(info.value)


def test_readme_catalogue_is_generated_from_the_table():
    text = refused.README.read_text()
    assert refused.readme_catalogue(text) == refused.catalogue_section(), (
        "README.md's layer catalogue is stale: run .venv/bin/python scripts/layer_catalogue.py --write"
    )
    order = [
        text.index(h) for h in ("## Supported layers", "## What converts and what does not", "## Pitfalls")
    ]
    assert order == sorted(order)
    for name in ("TextVectorization", "StringLookup"):
        assert f"| `{name}` | works on string tensors" in text


# -- the numeric preprocessing layers converted here (converters/encoding.py) ----------------------
@pytest.mark.parametrize("fmt", ["channels_first", "channels_last"])
def test_category_encoding_discretization_integer_lookup(fmt):
    ids = keras.Input((4,), dtype="int32", name="ids")
    one = keras.Input((1,), dtype="int64", name="one")
    grid = keras.Input((3, 4), dtype="int32", name="grid")
    values = keras.Input((5,), name="values")
    encode = keras.layers.CategoryEncoding
    boundaries = [-1.0, 0.0, 0.5, 2.0]
    vocabulary = [12, 3, 7, 40, 5]
    lookup = keras.layers.IntegerLookup
    out = {
        "multi_hot": encode(12, output_mode="multi_hot")(ids),
        "count": encode(12, output_mode="count")(ids),
        "one_hot of (N, 1)": encode(12, output_mode="one_hot")(one),
        "one_hot of (N, 3, 4)": encode(12, output_mode="one_hot")(grid),
        "multi_hot of (N, 3, 4)": encode(12, output_mode="multi_hot")(grid),
        "Discretization int": keras.layers.Discretization(boundaries)(values),
        "Discretization one_hot": keras.layers.Discretization(boundaries, output_mode="one_hot")(
            keras.layers.Reshape((5, 1))(values)
        ),
        "Discretization count": keras.layers.Discretization(boundaries, output_mode="count")(values),
        "IntegerLookup": lookup(vocabulary=vocabulary)(ids),
        "IntegerLookup, mask 0, 3 OOV": lookup(vocabulary=vocabulary, mask_token=0, num_oov_indices=3)(ids),
        "IntegerLookup multi_hot": lookup(vocabulary=vocabulary, output_mode="multi_hot")(ids),
    }
    model = keras.Model([ids, one, grid, values], list(out.values()))
    rng = np.random.default_rng(0)
    inputs = [
        rng.choice([0, 3, 5, 7, 11, 12, 40, 9], (4, 4)).astype("int32") % 12,
        rng.integers(0, 12, (4, 1)).astype("int64"),
        rng.integers(0, 12, (4, 3, 4)).astype("int32"),
        np.array(
            [[-2, -1, 0, 0.25, 0.5], [2, 3, -0.5, 1.9, 2.0], [0, 0, 0, 0, 0], [9, -9, 1, 0.4, 0.6]], "float32"
        ),
    ]
    inputs[0][0] = [12 % 12, 3, 7, 5]  # vocabulary hits, a 0 (the mask), and misses elsewhere
    from test_activations import assert_each_output_exact

    _, errors = assert_each_output_exact(model, fmt, list(out), inputs=inputs)
    assert max(errors.values()) == 0.0


# -- the other layers converted with the catalogue (adaptive pooling, wrappers, embeddings, images) --
@pytest.mark.parametrize("fmt", ["channels_first", "channels_last"])
def test_adaptive_pooling_spectral_normalization_auto_contrast(fmt):
    sequence, image, volume = keras.Input((10, 3)), keras.Input((9, 7, 3)), keras.Input((6, 5, 7, 2))
    vector = keras.Input((6,))
    conv = keras.layers.Conv2D(4, 1)(image)
    out = {}
    for kind in ("Average", "Max"):
        layer = getattr(keras.layers, f"Adaptive{kind}Pooling1D")
        out[f"{kind} 1D"] = layer(4)(sequence)
        out[f"{kind} 2D after a conv"] = getattr(keras.layers, f"Adaptive{kind}Pooling2D")((4, 3))(conv)
        out[f"{kind} 2D"] = getattr(keras.layers, f"Adaptive{kind}Pooling2D")(5)(image)
        out[f"{kind} 3D"] = getattr(keras.layers, f"Adaptive{kind}Pooling3D")((3, 2, 4))(volume)
    out["SpectralNormalization(Dense)"] = keras.layers.SpectralNormalization(keras.layers.Dense(5))(vector)
    out["SpectralNormalization(Conv2D)"] = keras.layers.SpectralNormalization(keras.layers.Conv2D(3, 2))(
        image
    )
    out["AutoContrast"] = keras.layers.AutoContrast()(image)
    out["AutoContrast (0, 1) after a conv"] = keras.layers.AutoContrast(value_range=(0, 1))(conv)
    model = keras.Model([sequence, image, volume, vector], list(out.values()))
    from test_activations import assert_each_output_exact

    code = assert_each_output_exact(model, fmt, list(out))[0].code
    assert "nn.AdaptiveAvgPool2d((4, 3))" in code and "nn.AdaptiveMaxPool3d((3, 2, 4))" in code
    assert "spectral_norm" in code


def test_reversible_embedding():
    tokens = keras.Input((5,), dtype="int32")
    tied = keras.layers.ReversibleEmbedding(30, 8)
    untied = keras.layers.ReversibleEmbedding(30, 8, tie_weights=False, logit_soft_cap=3.0)
    hidden = keras.layers.Dense(8)(tied(tokens))
    out = {
        "tied, reverse": tied(hidden, reverse=True),
        "untied, soft cap, reverse": untied(keras.layers.Dense(8)(untied(tokens)), reverse=True),
    }
    model = keras.Model(tokens, list(out.values()))
    from test_activations import assert_each_output_exact

    code = assert_each_output_exact(model, "channels_first", list(out))[0].code
    assert "F.linear(" in code and "nn.Linear(8, 30, bias=False)" in code and "torch.tanh(" in code


@pytest.mark.parametrize("fmt", ["channels_first", "channels_last"])
def test_stft_spectrogram(fmt):
    pytest.importorskip("scipy")  # Keras builds the layer's window with scipy.signal
    signal, planar = keras.Input((64, 2), name="signal"), keras.Input((2, 50), name="planar")
    stft = keras.layers.STFTSpectrogram
    out = {}
    for mode in ("log", "magnitude", "psd", "real", "imag", "angle", "stft"):
        out[mode] = stft(mode=mode, frame_length=16, frame_step=8, fft_length=16)(signal)
    out["same padding, expand_dims"] = stft(
        frame_length=16, frame_step=6, fft_length=32, padding="same", expand_dims=True, window="hamming"
    )(signal)
    out["channels_first, same"] = stft(
        frame_length=12, frame_step=5, padding="same", data_format="channels_first"
    )(planar)
    out["channels_first, expand_dims"] = stft(
        mode="psd", frame_length=10, expand_dims=True, data_format="channels_first"
    )(planar)
    model = keras.Model([signal, planar], list(out.values()))
    from test_activations import assert_each_output_exact

    code = assert_each_output_exact(model, fmt, list(out))[0].code
    assert "nn.Conv1d(1, 9, 16, stride=8, bias=False)" in code
