"""Keras 2 models (the ``tf_keras`` package, ``TF_USE_LEGACY_KERAS=1``, TensorFlow <= 2.15).

Their graph is Keras 2's (``KerasHistory`` has ``layer``, not ``operation``), which this package
does not read. Keras 3 reads Keras 2's legacy HDF5 format, though: a Keras 2 Functional or
Sequential model is saved to a temporary ``.h5`` file and loaded back with Keras 3, weights,
compile settings and all; converting and comparing then run on that Keras 3 twin, which computes
what the original does (the comparison checks it against the converted code like any model).

What cannot go that way is refused with what the model is and what to do: a subclassed Keras 2
model (HDF5 holds no ``call()``), custom Keras 2 layer classes (Keras 3 cannot rebuild a
``tf_keras`` class), and anything the legacy reader rejects.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
import weakref

import numpy as np

from .registry import ConversionError

_KERAS2_ROOTS = ("tf_keras", "tensorflow")  # tf_keras, and tf.keras of TensorFlow <= 2.15
_KERAS2_MODULES = ("tf_keras.", "tensorflow.python.keras.", "keras.engine.", "keras.src.engine.")


class LegacyKerasWarning(UserWarning):
    """A Keras 2 model was converted through Keras 3's reader of its legacy .h5 format."""


def is_keras2(model) -> bool:
    """Whether ``model`` is a Keras 2 model (a ``tf_keras`` or ``tf.keras`` <= 2.15 class)."""
    import keras

    if isinstance(model, keras.Model):  # Keras 3 (its layers also derive from TensorFlow classes)
        return False
    return any(cls.__module__.startswith(_KERAS2_MODULES) for cls in type(model).__mro__)


def as_keras3(model):
    """``model`` itself, or for a Keras 2 model its Keras 3 twin (same layers and weights).

    Raises :class:`ConversionError` when a Keras 2 model cannot be brought over, saying why and
    what to do.
    """
    if not is_keras2(model):
        return model
    fingerprint = _fingerprint(model)
    cached = _TWINS.get(model)
    if cached is not None and cached[0] == fingerprint:
        return cached[1]
    twin = _load_twin(model)
    _TWINS[model] = (fingerprint, twin)
    return twin


# One twin per Keras 2 model while its weights and compile settings stay the same: convert() and
# compare() must see the same Keras 3 layers (compare() matches the conversion's layers by identity).
_TWINS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _fingerprint(model) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for array in model.get_weights():
        digest.update(np.ascontiguousarray(array).tobytes())
    optimizer = getattr(model, "optimizer", None)
    digest.update(repr((id(optimizer), getattr(model, "loss", None))).encode())
    return digest.hexdigest()


def _load_twin(model):
    import keras

    name, kind = getattr(model, "name", "?"), type(model).__name__
    what = f"Keras model {name!r} is a Keras 2 (tf_keras) {kind}"
    if kind == "Sequential" and not getattr(model, "built", False):
        raise ConversionError(f"{what} without an input shape: build it (model.build((None, ...))) first")
    if not getattr(model, "_is_graph_network", False):
        raise ConversionError(
            f"{what}: a subclassed model, whose call() Keras 3 cannot read from Keras 2. Rebuild it "
            "with Keras 3 (import keras; the same layers), copy the weights with "
            "model3.set_weights(model.get_weights()), and convert that"
        )
    custom = sorted({type(layer).__name__ for layer in _layers(model) if not is_builtin_keras2(layer)})
    if custom:
        raise ConversionError(
            f"{what} with custom Keras 2 layer classes ({', '.join(custom)}) that Keras 3 cannot "
            "rebuild. Port those classes to Keras 3 (subclass keras.layers.Layer), rebuild the "
            "model with them, copy the weights with model3.set_weights(model.get_weights()), and "
            "convert that"
        )
    with tempfile.TemporaryDirectory(prefix="keras2torch-legacy-") as directory:
        path = os.path.join(directory, "model.h5")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "HDF5 is legacy", "input_shape" advice: not the user's
                model.save(path)  # the .h5 suffix picks Keras 2's HDF5 format
                # The Lambda layers' code is the caller's own, already running in this process.
                twin = keras.saving.load_model(path, safe_mode=False)
        except Exception as error:  # noqa: BLE001 - one message whatever the legacy reader raised
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise ConversionError(
                f"{what} that Keras 3's reader of legacy .h5 models cannot load ({type(error).__name__}: "
                f"{first}). Rebuild it with Keras 3 (import keras) and copy the weights with "
                "model3.set_weights(model.get_weights())"
            ) from error
    _restore_optimizer(model, twin)
    warnings.warn(
        f"{what}: converted through Keras 3's reader of legacy .h5 files (a Keras 3 twin with the "
        "same layers and weights)",
        LegacyKerasWarning,
        stacklevel=3,
    )
    return twin


def _restore_optimizer(model, twin) -> None:
    """Give ``twin`` the Keras 2 model's optimizer hyper-parameters.

    Keras 3's legacy reader cannot deserialize a Keras 2 optimizer ("Custom>Adam") and falls back
    to the class's defaults, silently dropping the learning rate and the rest. Rebuilt here from
    the Keras 2 optimizer's config, with the options Keras 3 knows; None when that fails, so that
    no training setup is written from made-up values.
    """
    import inspect

    import keras

    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or getattr(twin, "optimizer", None) is None:
        return
    try:
        config = optimizer.get_config()
        kind = getattr(keras.optimizers, type(optimizer).__name__)
        accepted = set(inspect.signature(kind).parameters)
        # Keras 2 reports hyper-parameters as NumPy scalars, which Keras 3 refuses.
        options = {
            key: value.item() if isinstance(value, np.generic) else value
            for key, value in config.items()
            if key in accepted
        }
        if isinstance(options.get("learning_rate"), dict):
            options["learning_rate"] = keras.optimizers.schedules.deserialize(options["learning_rate"])
        twin.optimizer = kind(**options)
    except Exception:  # noqa: BLE001 - an optimizer Keras 3 does not have, or options it rejects
        twin.optimizer = None


def is_builtin_keras2(layer) -> bool:
    module = type(layer).__module__
    return module.split(".")[0] in _KERAS2_ROOTS and (".layers" in module or ".engine" in module)


def _layers(model):
    for layer in getattr(model, "layers", []):
        yield layer
        if getattr(layer, "layers", None):
            yield from _layers(layer)
