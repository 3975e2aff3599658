"""``%%keras2torch`` on a model with traced layers (a custom layer with a weight, a random
``Sampling``, a Lambda), run in-process: the class, its traced classes and the comparison."""

from __future__ import annotations

import keras
import numpy as np
import torch

CLASSES = """
import keras
from keras import layers, ops


class Sampling(layers.Layer):
    def call(self, inputs):
        z_mean, z_log_var = inputs
        epsilon = keras.random.normal(shape=ops.shape(z_mean))
        return z_mean + ops.exp(0.5 * z_log_var) * epsilon


class Scale(layers.Layer):
    def build(self, shape):
        self.w = self.add_weight(shape=(shape[-1],), initializer="random_normal")

    def call(self, x):
        return x * self.w
"""

MODEL_CELL = """%%keras2torch --insert none
inputs = keras.Input((6,), name="features")
h = Scale(name="scale")(layers.Dense(8, activation="relu", name="encoder")(inputs))
z_mean, z_log_var = layers.Dense(3, name="z_mean")(h), layers.Dense(3, name="z_log_var")(h)
z = Sampling(name="sampling")([z_mean, z_log_var])
model = keras.Model(inputs, layers.Lambda(lambda t: 2.0 * t, name="twice")(layers.Dense(4, name="head")(z)))
"""


def test_magic_on_traced_layers_compares_them_and_marks_the_random_one(monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell

    from kerastorch_magic import magic

    shown = []
    monkeypatch.setattr(magic, "_show_comparison", shown.append)
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "kerastorch_magic")
    assert shell.run_cell(CLASSES).success
    assert shell.run_cell(MODEL_CELL).success
    namespace = shell.user_ns
    net, model = namespace["net"], namespace["model"]
    assert {"Scale", "Sampling", "Lambda"} <= set(namespace)  # the traced classes are defined too
    assert type(net.scale).__name__ == "Scale" and type(net.sampling).__name__ == "Sampling"
    (comparison,) = shown
    statuses = dict(zip((layer.keras_layer for layer in comparison.layers), comparison.statuses()))
    assert statuses == {
        "encoder": "ok",
        "scale": "ok",
        "z_mean": "ok",
        "z_log_var": "ok",
        "sampling": "random",
        "head": "ok",
        "twice": "ok",
    }
    assert comparison.ok and comparison.max_rel_diff <= 1e-5
    assert next(layer for layer in comparison.layers if layer.keras_layer == "scale").torch_module == "scale"
    # The class itself: exact wherever no random draw is involved (up to the Sampling's inputs).
    x = np.random.default_rng(0).normal(size=(3, 6)).astype("float32")
    encoder = torch.nn.Sequential(net.encoder, torch.nn.ReLU(), net.scale)
    expected = keras.Model(model.inputs, model.get_layer("scale").output)(x)
    with torch.no_grad():
        got = encoder(torch.from_numpy(x)).numpy()
    assert np.abs(got - np.asarray(expected)).max() <= 1e-5 * np.abs(np.asarray(expected)).max()
