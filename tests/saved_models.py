"""Small Keras models saved in each file kind, for the file and command-line tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from exactness import random_inputs, randomise_weights, relative_error

# The architecture, as a --build script would define it (the .weights.h5 round trip imports it).
BUILD_SCRIPT = textwrap.dedent(
    """
    import keras


    def build():
        inputs = keras.Input((8, 8, 3), name="image")
        x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
        x = keras.layers.BatchNormalization(name="norm")(x)
        x = keras.layers.MaxPooling2D(name="pool")(x)
        x = keras.layers.Flatten(name="flatten")(x)
        outputs = keras.layers.Dense(5, activation="softmax", name="dense")(x)
        return keras.Model(inputs, outputs, name="small_cnn")
    """
)


def build_cnn(directory: Path):
    """The CNN of BUILD_SCRIPT with random weights, compiled, and the script written to ``directory``."""
    script = directory / "architecture.py"
    script.write_text(BUILD_SCRIPT)
    namespace: dict = {}
    exec(compile(BUILD_SCRIPT, str(script), "exec"), namespace)
    model = namespace["build"]()
    randomise_weights(model, inputs=random_inputs(model))
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    return model, script


def save_all(model, directory: Path) -> dict[str, Path]:
    """The model as a .keras archive, a legacy .h5 file and a .weights.h5 file."""
    paths = {
        "keras": directory / "model.keras",
        "h5": directory / "model.h5",
        "weights": directory / "model.weights.h5",
    }
    model.save(paths["keras"])
    model.save(paths["h5"])
    model.save_weights(paths["weights"])
    return paths


def assert_same_outputs(model, module, conversion, rtol: float = 1e-5) -> float:
    """``module`` (the port, any origin) gives the Keras model's outputs on random inputs."""
    import torch

    inputs = random_inputs(model, batch=3, seed=5)
    expected = np.asarray(model(inputs[0], training=False))
    spec = conversion.inputs[0]
    with torch.no_grad():
        actual = module(torch.from_numpy(np.ascontiguousarray(spec.to_torch_layout(inputs[0])))).numpy()
    error = relative_error(np.transpose(expected, conversion.outputs[0].perm), actual)
    assert error <= rtol, f"relative error {error:.3g}"
    return error
