"""Dense, Embedding, Masking and the training-only layers (dropouts, noise), against Keras."""

import re

import keras
import numpy as np
import pytest
import torch
from exactness import assert_exact
from test_activations import assert_each_output_exact

import kerastorch_magic as k2t

FORMATS = ["channels_first", "channels_last"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_dense_configurations(fmt):
    vector = keras.Input((7,), name="vector")
    sequence = keras.Input((4, 6), name="sequence")
    image = keras.Input((5, 5, 3), name="image")
    plain = keras.Input((3, 4, 2), name="plain")  # rank 4, no convolution: stays in Keras's layout
    L = keras.layers
    conv = L.Conv2D(4, 2, name="conv")(image)
    branches = {
        "Dense": L.Dense(5)(vector),
        "no bias": L.Dense(5, use_bias=False, name="no_bias")(vector),
        "relu": L.Dense(5, activation="relu")(vector),
        "he_normal": L.Dense(5, kernel_initializer="he_normal", name="he")(vector),
        "ones bias": L.Dense(5, bias_initializer="ones", name="ones")(vector),
        "rank 3": L.Dense(3, activation="tanh")(sequence),
        "rank 4 after conv": L.Dense(3, name="on_conv")(conv),
        "conv, Dense, conv": L.Conv2D(2, 2)(L.Dense(3)(conv)),
        "rank 4 plain": L.Dense(3)(plain),
        "Conv1D then Dense": L.Dense(2)(L.Conv1D(3, 2)(sequence)),
    }
    model = keras.Model([vector, sequence, image, plain], list(branches.values()))
    code = assert_each_output_exact(model, fmt, list(branches))[0].code
    assert "self.no_bias = nn.Linear(7, 5, bias=False)" in code
    assert "F.relu(self.dense_1(vector), inplace=True)" in code
    assert re.search(r"nn\.init\.trunc_normal_\(\s*self\.he\.weight", code)  # he_normal: truncated
    assert "nn.init.ones_(self.ones.bias)" in code
    # Dense on an NCHW tensor acts on Keras's last axis: channels go last first.
    assert "Dense acts on Keras's last (channel) axis" in code
    assert "on_conv = self.on_conv(image.permute(0, 2, 3, 1))" in code


@pytest.mark.parametrize("fmt", FORMATS)
def test_dense_after_flatten_and_dropout(fmt):
    """The Flatten order reaches the Dense through a Dropout (folded into its weight, or permuted)."""
    model = keras.Sequential(
        [
            keras.Input((6, 6, 3)),
            keras.layers.Conv2D(4, 3),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.5),
            keras.layers.GaussianNoise(0.1),
            keras.layers.Dense(5, activation="softmax"),
        ]
    )
    conversion, _ = assert_exact(model, fmt)
    assert "self.dropout = nn.Dropout(p=0.5)" in conversion.code
    assert "x = self.dropout(x)" in conversion.code


def test_dense_with_lora_merges_the_adapter():
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, name="dense")])
    model.layers[0].enable_lora(2)
    conversion, _ = assert_exact(model)  # the harness randomises lora_kernel_a/b too
    assert "LoRA adapter merged" in conversion.code
    assert set(conversion.state_dict) == {"dense.weight", "dense.bias"}


@pytest.mark.parametrize("fmt", FORMATS)
def test_activation_set_to_none_after_building(fmt):
    """keras-io's grad_cam: ``model.layers[-1].activation = None`` (logits): Keras skips it, and
    its get_config() cannot serialise None."""
    image = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(3, 3, activation="relu", name="conv")(image)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(image, keras.layers.Dense(4, activation="softmax", name="head")(x))
    for name in ("conv", "head"):
        model.get_layer(name).activation = None
    conversion, _ = assert_exact(model, fmt)
    assert "softmax" not in conversion.code and "relu" not in conversion.code
    assert model.get_layer("head").activation is None  # the user's layer is left as it was


def test_quantized_dense_is_refused_by_name():
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, name="q")])
    model.quantize("int8")
    with pytest.raises(k2t.ConversionError, match="quantized") as info:
        k2t.convert(model)
    assert info.value.layers == [("q", "Dense")]


# -- Embedding --------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
def test_embedding(fmt):
    tokens = keras.Input((5,), dtype="int32", name="tokens")
    grid = keras.Input((2, 3), dtype="int64", name="grid")
    L = keras.layers
    branches = {
        "embedding, flatten, dense": L.Dense(3)(L.Flatten()(L.Embedding(12, 4)(tokens))),
        "mask_zero": L.Embedding(10, 3, mask_zero=True, name="masked")(tokens),
        "rank 3 indices": L.Embedding(10, 2)(grid),
        "embedding then conv": L.Conv1D(2, 2)(L.Embedding(10, 4)(tokens)),
    }
    model = keras.Model([tokens, grid], list(branches.values()))
    code = assert_each_output_exact(model, fmt, list(branches))[0].code
    assert "self.embedding = nn.Embedding(12, 4)" in code
    assert re.search(
        r"nn\.init\.uniform_\((self\.embedding|layer)\.weight, -0\.05, 0\.05\)", code
    )  # "uniform"
    assert "not torch's padding_idx" in code
    assert "padding_idx=" not in code


def test_embedding_of_float_indices_casts_like_keras():
    inputs = keras.Input((4,), name="ids")  # float32: Keras casts to int32
    model = keras.Model(inputs, keras.layers.Embedding(10, 3)(inputs))
    data = [np.array([[0.0, 3.0, 9.0, 2.7], [1.2, 5.0, 7.9, 4.0]], "float32")]
    conversion, _ = assert_exact(model, inputs=data)
    assert "self.embedding(x.long())" in conversion.code


# -- Masking ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("mask_value", [0.0, -1.0])
def test_masking(mask_value, fmt):
    model = keras.Sequential([keras.Input((6, 3)), keras.layers.Masking(mask_value), keras.layers.Dense(2)])
    data = np.random.default_rng(2).normal(size=(3, 6, 3)).astype("float32")
    data[0, 1] = mask_value
    data[2, 4:] = mask_value
    data[1, 2, 0] = mask_value  # one feature only: not masked
    conversion, _ = assert_exact(model, fmt, inputs=[data])
    assert f"x.ne({mask_value!r}).any(dim=2, keepdim=True)" in conversion.code


# -- training-only layers ---------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
def test_spatial_dropout(fmt):
    L = keras.layers
    sequence, image = keras.Input((8, 3), name="sequence"), keras.Input((5, 5, 3), name="image")
    volume, raw = keras.Input((4, 4, 4, 2), name="volume"), keras.Input((4, 4, 3), name="raw")
    cf_raw = keras.Input((3, 4, 4), name="cf_raw")
    branches = {
        "1D after Conv1D": L.SpatialDropout1D(0.3, name="sd1")(L.Conv1D(4, 2)(sequence)),
        "2D after Conv2D": L.SpatialDropout2D(0.3, name="sd2")(L.Conv2D(4, 2)(image)),
        "3D after Conv3D": L.SpatialDropout3D(0.3, name="sd3")(L.Conv3D(2, 2)(volume)),
        "2D on a Keras-layout tensor": L.SpatialDropout2D(0.3, name="sd2_raw")(raw),
        "2D channels_first data": L.SpatialDropout2D(0.3, data_format="channels_first", name="sd2_cf")(
            cf_raw
        ),
    }
    model = keras.Model([sequence, image, volume, raw, cf_raw], list(branches.values()))
    conversion, _ = assert_each_output_exact(model, fmt, list(branches))
    code = conversion.code
    assert "self.sd1 = nn.Dropout1d(p=0.3)" in code
    assert "self.sd2 = nn.Dropout2d(p=0.3)" in code
    assert "self.sd3 = nn.Dropout3d(p=0.3)" in code
    assert "self.sd2_raw(raw.movedim(3, 1)).movedim(1, 3)" in code  # channels-last tensor
    assert "self.sd2_cf(cf_raw)" in code
    # In training mode whole channels drop, as in Keras: each (sample, channel) map is all kept or
    # all zero, whatever the tensor's layout.
    module = conversion.build().train()
    ones = [torch.ones((8, *spec.torch_shape[1:])) for spec in conversion.inputs]
    outs = module(*ones)
    for label, spec, out in zip(branches, conversion.outputs, outs):
        keras_layout = out.detach().numpy().transpose(np.argsort(spec.perm))  # back to Keras's axes
        channels_last = np.moveaxis(keras_layout, 1 if "channels_first" in label else -1, -1)
        flat = channels_last.reshape(8, -1, channels_last.shape[-1])
        dropped, kept = (flat == 0).all(axis=1), (flat != 0).all(axis=1)
        assert (dropped | kept).all(), f"{label}: a channel was partly dropped"
        assert dropped.any(), f"{label}: nothing dropped in training mode"


@pytest.mark.parametrize("fmt", FORMATS)
def test_noise_and_regularisation_layers(fmt):
    L = keras.layers
    image, vector = keras.Input((5, 5, 3), name="image"), keras.Input((6,), name="vector")
    conv = L.Conv2D(4, 2, name="conv")(image)
    branches = {
        "GaussianNoise": L.GaussianNoise(0.2, name="noise")(conv),
        "GaussianDropout": L.GaussianDropout(0.3, name="gdrop")(conv),
        "AlphaDropout": L.AlphaDropout(0.2, name="adrop")(L.Dense(4, activation="selu")(vector)),
        "ActivityRegularization": L.ActivityRegularization(l1=0.01, name="reg")(conv),
        "Identity": L.Identity(name="same")(vector),
        "Dropout(noise_shape)": L.Dropout(0.4, noise_shape=(None, 1, 6), name="nsd")(
            L.Reshape((1, 6))(vector)
        ),
    }
    model = keras.Model([image, vector], list(branches.values()))
    conversion, _ = assert_each_output_exact(model, fmt, list(branches))
    code = conversion.code
    assert "noise = image + 0.2 * torch.randn_like(image) if self.training else image" in code
    assert "image * (1 + 0.654654 * torch.randn_like(image)) if self.training else image" in code
    assert "self.adrop = nn.AlphaDropout(p=0.2)" in code
    assert "self.reg = nn.Identity()" in code
    comments = " ".join(line.strip().lstrip("# ") for line in code.splitlines())  # wrapped comments
    assert "0.01 * sum(|x|)" in comments
    assert "noise_shape=(None, 1, 6)" in comments
    # Training mode adds noise; eval mode (what build() returns) is the identity.
    module = conversion.build()
    data = [torch.randn((2, *spec.torch_shape[1:])) for spec in conversion.inputs]
    with torch.no_grad():
        eval_out = module(*data)
        train_out = module.train()(*data)
    assert not torch.equal(eval_out[0], train_out[0])  # GaussianNoise
    assert not torch.equal(eval_out[1], train_out[1])  # GaussianDropout
    assert torch.equal(eval_out[3], train_out[3])  # ActivityRegularization is always the identity
