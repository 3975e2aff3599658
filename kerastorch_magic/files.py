"""Keras models saved as files: load them the way Keras does, safely, and convert them.

Which loader runs is decided by what the path is, before Keras sees it, so that each kind of
wrong input gets one clear :class:`FileError` instead of a deep Keras or h5py traceback:

* ``.keras``: Keras 3's zip archive, loaded with ``safe_mode=True``: a ``Lambda`` layer's pickled
  Python is not run unless ``unsafe=True`` (the refusal says so);
* ``.h5`` / ``.hdf5``: a legacy full-model file (the Keras 2 era), read by Keras 3's legacy reader;
* ``.weights.h5``: weights only; ``build`` (``"script.py:function"`` or ``"module:function"``)
  rebuilds the architecture, then the weights are loaded into it;
* a TensorFlow SavedModel directory: refused, with what to do instead (Keras 3 can wrap one as an
  inference-only ``TFSMLayer``, but not rebuild its layers, so there is nothing to convert).

Custom layer classes saved in an archive are found through ``custom_objects`` (a dict, or
``"module:attr"`` strings naming a dict, a class or a function) or by importing the module that
registers them (``imports``); a class still missing is named in the error.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
import warnings
import zipfile
from collections.abc import Iterable
from pathlib import Path

KERAS_SUFFIX = ".keras"
WEIGHTS_SUFFIX = ".weights.h5"
H5_SUFFIXES = (".h5", ".hdf5")


class FileError(ValueError):
    """A model file that cannot be loaded: the message says what the path is and what to do."""


# -- loading ----------------------------------------------------------------------------------------
def load_model(
    path,
    *,
    unsafe: bool = False,
    custom_objects=None,
    imports: Iterable[str] = (),
    build: str | None = None,
    compile: bool = True,
):
    """The Keras 3 model saved at ``path`` (see this module's docstring for the kinds of file).

    ``compile=True`` restores the optimizer and loss the model was saved with (what
    :mod:`kerastorch_magic.training` translates); a model saved uncompiled loads uncompiled.
    Raises :class:`FileError` for a path that cannot be loaded, saying why.
    """
    import keras

    path = Path(path).expanduser()
    kind = file_kind(path)
    objects = resolve_custom_objects(custom_objects, imports)
    if kind == "weights":
        return _load_weights(path, build, objects)
    if build is not None:
        raise FileError(f"{path}: build= is for a .weights.h5 file; a {kind} file has its own architecture")
    _check_container(path, kind)
    try:
        with keras.saving.custom_object_scope(objects), warnings.catch_warnings():
            # A model compiled but saved before training has fewer optimizer variables than the
            # rebuilt optimizer: Keras warns, and there is nothing to restore anyway.
            warnings.filterwarnings("ignore", "Skipping variable loading for optimizer")
            return keras.saving.load_model(
                path, custom_objects=objects, compile=compile, safe_mode=not unsafe
            )
    except Exception as error:  # noqa: BLE001 - every Keras/h5py/zip failure becomes one message
        raise _load_error(path, kind, error) from error


def file_kind(path: Path) -> str:
    """``"keras"``, ``"h5"`` or ``"weights"``; :class:`FileError` for anything else."""
    if not path.exists():
        raise FileError(f"{path}: no such file")
    if path.is_dir():
        if (path / "saved_model.pb").exists() or (path / "saved_model.pbtxt").exists():
            raise FileError(
                f"{path} is a TensorFlow SavedModel directory: Keras 3 cannot rebuild its layers "
                "(keras.layers.TFSMLayer only wraps it for inference), so there is nothing to convert. "
                "Save the model from the code that built it with model.save('model.keras'); for a "
                "Keras 2 (tf_keras) model, tf_keras.models.load_model(path).save('model.h5') gives a "
                "legacy .h5 file that this tool reads."
            )
        raise FileError(f"{path} is a directory; give a .keras, .h5 or .weights.h5 file")
    name = path.name.lower()
    if name.endswith(WEIGHTS_SUFFIX):
        return "weights"
    if name.endswith(KERAS_SUFFIX):
        return "keras"
    if name.endswith(H5_SUFFIXES):
        return "h5"
    raise FileError(
        f"{path}: unknown kind of file {path.suffix or '(no suffix)'!r}; give a Keras 3 archive (.keras), "
        "a legacy full model (.h5) or weights (.weights.h5 with a build function)"
    )


def _check_container(path: Path, kind: str) -> None:
    """The zip or HDF5 container is whole: truncated downloads fail here with a plain message."""
    if kind == "keras":
        try:
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
                broken = archive.testzip()
        except (zipfile.BadZipFile, OSError) as error:
            raise FileError(
                f"{path} is not a readable .keras archive (corrupt or truncated zip file: {error})"
            ) from None
        if broken is not None:
            raise FileError(f"{path}: the archive's member {broken!r} is corrupt (CRC mismatch)")
        if "config.json" not in names:
            raise FileError(f"{path} is a zip file but not a Keras archive (it has no config.json)")
    else:
        import h5py

        if not h5py.is_hdf5(path):
            raise FileError(f"{path} is not an HDF5 file (corrupt or truncated, or not a Keras .h5 file)")


def _load_error(path: Path, kind: str, error: Exception) -> FileError:
    text = str(error)
    if "safe_mode" in text or "unsafe" in text.lower() and "lambda" in text.lower():
        return FileError(
            f"{path} holds a Lambda layer (pickled Python code), which is not run while loading in "
            "safe mode. Only if you trust where the file came from: pass unsafe=True (command line: "
            "--unsafe). Lambda layers then still need a converter."
        )
    missing = _missing_class(text)
    if missing:
        return FileError(
            f"{path} uses the custom class or function {missing!r}, which is not defined here. Give "
            "it with custom_objects (command line: --custom-objects module:attr), or import the "
            "module that registers it (@keras.saving.register_keras_serializable; command line: "
            "--import module)."
        )
    if isinstance(error, (OSError, zipfile.BadZipFile, KeyError, EOFError)):
        return FileError(f"{path}: the {kind} file is corrupt or truncated ({type(error).__name__}: {text})")
    first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return FileError(f"{path}: Keras could not load the model ({type(error).__name__}: {first})")


_MISSING_PATTERNS = (
    re.compile(r"Could not locate (?:class|function) '([^']+)'"),
    re.compile(r"Unknown (?:layer|object|class|function)[^:']*:\s*'?([\w.>]+)"),
)


def _missing_class(text: str) -> str | None:
    for pattern in _MISSING_PATTERNS:
        match = pattern.search(text)
        if match:
            return match.group(1)
    return None


def _load_weights(path: Path, build: str | None, objects: dict):
    import keras

    if build is None:
        raise FileError(
            f"{path} holds weights only, not the architecture: give the function that builds the "
            "model (build='script.py:function'; command line: --build script.py:function)"
        )
    import h5py

    if not h5py.is_hdf5(path):
        raise FileError(f"{path} is not an HDF5 file (corrupt or truncated weights file)")
    function = _import_attr(build, "--build")
    with keras.saving.custom_object_scope(objects):
        model = function()
    if not isinstance(model, keras.Model):
        raise FileError(f"--build {build}: returned a {type(model).__name__}, not a keras.Model")
    try:
        model.load_weights(path)
    except Exception as error:  # noqa: BLE001 - shape/count mismatches come in many types
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise FileError(
            f"{path}: the weights do not fit the model built by {build} ({type(error).__name__}: {first})"
        ) from error
    return model


# -- custom objects and build functions -------------------------------------------------------------
def resolve_custom_objects(custom_objects=None, imports: Iterable[str] = ()) -> dict:
    """A ``{name: object}`` dict from a dict and/or ``"module:attr"`` strings; imports ``imports``.

    ``attr`` may name a dict of custom objects, or one class/function (registered under its
    ``__name__``, the name Keras saved it under by default).
    """
    for module in imports:
        _import_module(module, "--import")
    if custom_objects is None:
        return {}
    if isinstance(custom_objects, dict):
        return dict(custom_objects)
    if isinstance(custom_objects, str):
        custom_objects = [custom_objects]
    objects: dict = {}
    for spec in custom_objects:
        value = _import_attr(spec, "--custom-objects")
        if isinstance(value, dict):
            objects.update(value)
        else:
            objects[getattr(value, "__name__", spec.rpartition(":")[2])] = value
    return objects


def _import_module(name: str, option: str):
    """Import ``name`` (a dotted module, or a ``.py`` file path)."""
    if name.endswith(".py"):
        file = Path(name).expanduser()
        if not file.is_file():
            raise FileError(f"{option} {name}: no such file")
        spec = importlib.util.spec_from_file_location(file.stem, file)
        module = importlib.util.module_from_spec(spec)
        sys.modules.setdefault(file.stem, module)
        try:
            spec.loader.exec_module(module)
        except Exception as error:
            raise FileError(f"{option} {name}: running it raised {type(error).__name__}: {error}") from error
        return module
    if str(Path.cwd()) not in sys.path and "" not in sys.path:  # `python -m` and scripts differ here
        sys.path.insert(0, str(Path.cwd()))
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise FileError(f"{option} {name}: cannot import it ({error})") from None


def _import_attr(spec: str, option: str):
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise FileError(f"{option} {spec!r}: write it as module:attribute (or script.py:attribute)")
    module = _import_module(module_name, option)
    try:
        value = module
        for part in attr.split("."):
            value = getattr(value, part)
    except AttributeError:
        raise FileError(f"{option} {spec}: {module_name} has no attribute {attr!r}") from None
    return value


# -- converting -------------------------------------------------------------------------------------
def convert_file(
    path,
    class_name: str = "Net",
    input_format: str = "channels_first",
    *,
    unsafe: bool = False,
    custom_objects=None,
    imports: Iterable[str] = (),
    build: str | None = None,
):
    """Load the Keras model saved at ``path`` and convert it (:func:`kerastorch_magic.convert`).

    Args:
        path: a ``.keras`` archive, a legacy ``.h5``/``.hdf5`` full-model file, or a
            ``.weights.h5`` file together with ``build`` (this module's docstring says more).
        class_name, input_format: as for :func:`~kerastorch_magic.convert`.
        unsafe: load a ``.keras`` file with ``safe_mode=False`` and trace its ``Lambda`` layers;
            only for files you trust (their pickled Python runs).
        custom_objects: the custom classes and functions the file names: a dict, or
            ``"module:attr"`` strings naming a dict, a class or a function.
        imports: modules to import first (those that register custom objects).
        build: for a ``.weights.h5`` file, ``"script.py:function"`` or ``"module:function"``
            returning the model to load the weights into.

    Returns:
        The :class:`~kerastorch_magic.Conversion`; its ``model`` attribute is the loaded Keras
        model (for :func:`~kerastorch_magic.compare` or
        :func:`~kerastorch_magic.training.training_snippet`).

    Raises:
        FileError: the file cannot be loaded (the message says what the path is and what to do).
        ConversionError: the loaded model cannot be converted.

    Example:
        >>> conv = k2t.convert_file("model.keras", class_name="Net")  # doctest: +SKIP
        >>> k2t.compare(conv.model, conv).ok  # doctest: +SKIP
    """
    from .conversion import convert

    model = load_model(path, unsafe=unsafe, custom_objects=custom_objects, imports=imports, build=build)
    # A Lambda layer's code is traced only when the caller vouched for the file (it did not load otherwise).
    conversion = convert(model, class_name=class_name, input_format=input_format, trace_lambda=unsafe)
    conversion.model = model
    return conversion
