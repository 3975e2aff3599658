"""convert_file / load_model: every file kind round-tripped, the safety refusals, bad files."""

from __future__ import annotations

import zipfile

import keras
import pytest
from saved_models import assert_same_outputs, build_cnn, save_all

import kerastorch_magic as k2t
from kerastorch_magic import files


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    directory = tmp_path_factory.mktemp("saved")
    model, script = build_cnn(directory)
    return model, script, save_all(model, directory)


@pytest.mark.parametrize("input_format", ["channels_first", "channels_last"])
@pytest.mark.parametrize("kind", ["keras", "h5", "weights"])
def test_round_trip(saved, kind, input_format):
    """Save, convert the file, compare with the model that was saved (and with the loaded one)."""
    model, script, paths = saved
    build = f"{script}:build" if kind == "weights" else None
    conversion = k2t.convert_file(paths[kind], class_name="Net", input_format=input_format, build=build)
    assert isinstance(conversion.model, keras.Model)
    assert_same_outputs(model, conversion.build(), conversion)
    assert k2t.compare(conversion.model, conversion, device="cpu").ok


def test_compiled_settings_survive(saved):
    """A .keras archive keeps the optimizer and loss: what the training snippet translates."""
    loaded = files.load_model(saved[2]["keras"])
    assert type(loaded.optimizer).__name__ == "Adam"
    assert loaded.loss == "categorical_crossentropy"


def test_weights_need_a_build_function(saved):
    with pytest.raises(files.FileError, match=r"weights only.*--build script.py:function"):
        files.load_model(saved[2]["weights"])


def test_build_function_errors(saved, tmp_path):
    paths = saved[2]
    with pytest.raises(files.FileError, match="write it as module:attribute"):
        files.load_model(paths["weights"], build="no_colon")
    with pytest.raises(files.FileError, match="no attribute 'missing'"):
        files.load_model(paths["weights"], build=f"{saved[1]}:missing")
    other = tmp_path / "other.py"
    other.write_text(
        "import keras\n\ndef build():\n"
        "    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])\n"
    )
    with pytest.raises(files.FileError, match="do not fit the model built by"):
        files.load_model(paths["weights"], build=f"{other}:build")


def _lambda_model():
    return keras.Sequential(
        [keras.Input((4,)), keras.layers.Lambda(lambda x: x * 2.0), keras.layers.Dense(3)]
    )


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_lambda_refused_in_safe_mode(tmp_path, suffix):
    path = tmp_path / f"lambda{suffix}"
    _lambda_model().save(path)
    with pytest.raises(files.FileError, match=r"Lambda layer .*not run.*--unsafe"):
        files.load_model(path)
    conversion = k2t.convert_file(path, unsafe=True)  # the caller vouched for the file: traced
    assert any(type(layer).__name__ == "Lambda" for layer in conversion.model.layers)
    assert k2t.compare(conversion.model, conversion, device="cpu").ok


def _custom_layer_class():
    """Defined here, unregistered: Keras cannot find it by the name saved in the file."""

    class Doubler(keras.layers.Layer):
        def call(self, x):
            return x * 2.0

    return Doubler


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_missing_custom_class_is_named(tmp_path, suffix):
    doubler = _custom_layer_class()
    path = tmp_path / f"custom{suffix}"
    keras.Sequential([keras.Input((4,)), doubler(name="twice"), keras.layers.Dense(3)]).save(path)
    with pytest.raises(files.FileError, match=r"custom class or function 'Doubler'.*--custom-objects"):
        files.load_model(path)
    loaded = files.load_model(path, custom_objects={"Doubler": doubler})
    assert type(loaded.get_layer("twice")) is doubler


def test_custom_objects_from_a_script(tmp_path):
    script = tmp_path / "layers.py"
    script.write_text(
        "import keras\n\n\nclass Doubler(keras.layers.Layer):\n"
        "    def call(self, x):\n        return x * 2.0\n"
        "\n\nOBJECTS = {'Doubler': Doubler}\n"
    )
    objects = files.resolve_custom_objects([f"{script}:Doubler"])
    assert list(objects) == ["Doubler"]
    assert files.resolve_custom_objects([f"{script}:OBJECTS"])["Doubler"].__name__ == "Doubler"
    with pytest.raises(files.FileError, match="cannot import it"):
        files.resolve_custom_objects(imports=["no_such_module_for_keras2torch"])


def test_bad_paths(tmp_path, saved):
    with pytest.raises(files.FileError, match="no such file"):
        files.load_model(tmp_path / "absent.keras")
    with pytest.raises(files.FileError, match="is a directory; give a .keras"):
        files.load_model(tmp_path)
    saved_model = tmp_path / "exported"
    saved_model.mkdir()
    (saved_model / "saved_model.pb").write_bytes(b"")
    with pytest.raises(files.FileError, match=r"SavedModel directory: Keras 3 cannot rebuild.*model.keras"):
        files.load_model(saved_model)
    other = tmp_path / "model.onnx"
    other.write_bytes(b"\0")
    with pytest.raises(files.FileError, match="unknown kind of file '.onnx'"):
        files.load_model(other)


@pytest.mark.parametrize("kind", ["keras", "h5"])
def test_truncated_files(tmp_path, saved, kind):
    data = saved[2][kind].read_bytes()
    path = tmp_path / f"truncated.{kind}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(files.FileError, match="corrupt or truncated"):
        files.load_model(path)


def test_corrupt_archive_member(tmp_path, saved):
    """A zip whose directory is intact but whose weights member is damaged (CRC mismatch)."""
    data = bytearray(saved[2]["keras"].read_bytes())
    with zipfile.ZipFile(saved[2]["keras"]) as archive:
        info = archive.getinfo("model.weights.h5")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 64
    data[start : start + 16] = bytes(16) if any(data[start : start + 16]) else b"\xff" * 16
    path = tmp_path / "damaged.keras"
    path.write_bytes(bytes(data))
    with pytest.raises(files.FileError, match="corrupt"):
        files.load_model(path)


def test_zip_that_is_not_a_keras_archive(tmp_path):
    path = tmp_path / "other.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(files.FileError, match="not a Keras archive"):
        files.load_model(path)
