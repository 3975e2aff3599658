"""Keras 2 (tf_keras) models: converted through Keras 3's reader of legacy .h5 files, or refused."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import kerastorch_magic as k2t
from kerastorch_magic import legacy, training

tf_keras = pytest.importorskip("tf_keras", reason="the tf_keras package (Keras 2) is not installed")


def _randomise(model, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    weights = [(rng.normal(size=array.shape) * 0.5).astype(array.dtype) for array in model.get_weights()]
    # Batch-norm variances must stay positive: they are the 4th weight of each BatchNormalization.
    index = 0
    for layer in model.layers:
        count = len(layer.get_weights())
        if type(layer).__name__ == "BatchNormalization":
            weights[index + 3] = np.abs(weights[index + 3]) + 0.5
        index += count
    model.set_weights(weights)


def _cnn():
    layers = tf_keras.layers
    model = tf_keras.Sequential(
        [
            layers.Conv2D(4, 3, padding="same", activation="relu", input_shape=(8, 8, 3)),
            layers.BatchNormalization(),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dropout(0.3),
            layers.Dense(5, activation="softmax"),
        ],
        name="keras2_cnn",
    )
    _randomise(model)
    model.compile(
        optimizer=tf_keras.optimizers.Adam(0.01), loss="categorical_crossentropy", metrics=["accuracy"]
    )
    return model


def _functional():
    layers = tf_keras.layers
    image = tf_keras.Input((6, 6, 2), name="image")
    extra = tf_keras.Input((3,), name="extra")
    x = layers.Conv2D(3, 3, activation="tanh")(image)
    y = layers.Conv2D(3, 1)(x)
    x = layers.Add()([x, y])
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Concatenate()([x, layers.Dense(2)(extra)])
    model = tf_keras.Model([image, extra], layers.Dense(2)(x), name="keras2_functional")
    _randomise(model, 1)
    return model


def _assert_port_matches_original(model, conversion) -> None:
    """The port against the Keras 2 model itself (not its Keras 3 twin)."""
    rng = np.random.default_rng(4)
    arrays = [rng.normal(size=(3, *t.shape[1:])).astype("float32") for t in model.inputs]
    expected = model(arrays if len(arrays) > 1 else arrays[0], training=False).numpy()
    module = conversion.build()
    with torch.no_grad():
        actual = module(
            *[
                torch.from_numpy(np.ascontiguousarray(s.to_torch_layout(a)))
                for s, a in zip(conversion.inputs, arrays)
            ]
        ).numpy()
    error = np.abs(np.transpose(expected, conversion.outputs[0].perm) - actual).max() / np.abs(expected).max()
    assert error <= 1e-5, f"relative error {error:.3g}"


@pytest.mark.parametrize("input_format", ["channels_first", "channels_last"])
@pytest.mark.parametrize("build", [_cnn, _functional], ids=["sequential", "functional"])
def test_keras2_models_convert_and_compare(build, input_format):
    model = build()
    assert legacy.is_keras2(model)
    with pytest.warns(legacy.LegacyKerasWarning, match="Keras 2 .*reader of legacy .h5"):
        conversion = k2t.convert(model, input_format=input_format)
    _assert_port_matches_original(model, conversion)
    with warnings.catch_warnings():
        warnings.simplefilter("error", legacy.LegacyKerasWarning)  # the same twin: no second reload
        assert k2t.compare(model, conversion, device="cpu").ok


def test_twin_follows_weight_changes():
    model = _cnn()
    first = legacy.as_keras3(model)
    assert legacy.as_keras3(model) is first
    _randomise(model, seed=9)
    second = legacy.as_keras3(model)
    assert second is not first
    np.testing.assert_array_equal(second.get_weights()[0], model.get_weights()[0])


def test_training_setup_of_a_keras2_model():
    model = _cnn()
    conversion = k2t.convert(model)
    snippet = training.training_snippet(model, conversion)
    assert "torch.optim.Adam(" in snippet and "lr=0.01," in snippet and '"accuracy":' in snippet


def test_keras2_h5_file_converts(tmp_path):
    model = _functional()
    path = tmp_path / "keras2.h5"
    model.save(path)
    _assert_port_matches_original(model, k2t.convert_file(path))


def test_subclassed_keras2_model_is_refused():
    class Small(tf_keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = tf_keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    model = Small()
    model(np.zeros((1, 3), "float32"))
    with pytest.raises(
        k2t.ConversionError, match=r"Keras 2 \(tf_keras\) Small: a subclassed model.*set_weights"
    ):
        k2t.convert(model)


def test_custom_keras2_layer_is_refused_by_name():
    class Twice(tf_keras.layers.Layer):
        def call(self, x):
            return 2.0 * x

    model = tf_keras.Sequential([tf_keras.layers.Dense(3, input_shape=(4,)), Twice()])
    with pytest.raises(
        k2t.ConversionError, match=r"custom Keras 2 layer classes \(Twice\).*keras.layers.Layer"
    ):
        k2t.convert(model)
