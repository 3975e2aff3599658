"""When Keras itself cannot run the model it was given: compare() and the magic say so, precisely.

Models written for the JAX or torch backend often compute in ``channels_first``
(``keras.config.set_image_data_format("channels_first")``, as keras-io's SSVEPFormer EEG example
does). TensorFlow runs those convolutions on a CPU only with oneDNN, which it turns on by itself
only on some Intel CPUs. The conversion does not run Keras and is exact (checked here against Keras
with oneDNN on); the comparison needs Keras's outputs, so without oneDNN it must stop with a
:class:`KerasRunError` that names the layer and the way out, and the magic, whose class was already
delivered, must not fail the cell (a notebook's Run All goes on).

A real kernel with ``TF_ENABLE_ONEDNN_OPTS=0`` makes that machine on any CPU (the test process
itself runs TensorFlow with oneDNN on, see conftest.py).
"""

from __future__ import annotations

import pytest
from kernel_helpers import KernelSession

import kerastorch_magic as k2t

SETUP = """
import keras
import kerastorch_magic as k2t

def channels_first_model():
    keras.config.set_image_data_format("channels_first")
    try:
        inputs = keras.Input((16, 40))  # (channels, time), as the EEG example feeds it
        x = keras.layers.Conv1D(8, 1, padding="same", name="channel_comb")(inputs)
        x = keras.layers.LayerNormalization(name="norm")(x)
        x = keras.layers.MaxPooling1D(2, name="pool")(x)
        x = keras.layers.Flatten(name="flat")(x)
        return keras.Model(inputs, keras.layers.Dense(3, name="head")(x), name="eeg")
    finally:
        keras.config.set_image_data_format("channels_last")
"""


@pytest.fixture(scope="module")
def kernel():
    session = KernelSession(env={"TF_ENABLE_ONEDNN_OPTS": "0"})
    client = session.client()
    setup = client.execute(SETUP)
    assert setup.status == "ok", setup.text
    session.a = client
    yield session
    session.shutdown()


@pytest.fixture(autouse=True)
def _seed():  # the conftest's seeding is for in-process tests; the kernel has its own state
    yield


def test_channels_first_model_converts_exactly_where_keras_can_run_it():
    from exactness import assert_exact

    namespace: dict = {}
    exec(SETUP, namespace)  # the kernel's model, built here, where TensorFlow has oneDNN on
    assert_exact(namespace["channels_first_model"]())


def test_compare_raises_keras_run_error_naming_the_layer_and_the_remedy(kernel):
    run = kernel.a.execute(
        "model = channels_first_model()\n"
        "conversion = k2t.convert(model)  # converting does not need Keras to run\n"
        "try:\n"
        "    k2t.compare(model, conversion)\n"
        "except k2t.KerasRunError as error:\n"
        "    print('LAYER', error.layer, isinstance(error, RuntimeError))\n"
        "    print(error)\n"
    )
    assert run.status == "ok", run.text
    assert "LAYER channel_comb True" in run.stdout
    message = run.stdout.split("\n", 1)[1]
    assert message.startswith("running Keras layer 'channel_comb' failed:")
    assert "NHWC" in message  # TensorFlow's own words stay
    assert "keras.config.image_data_format() is 'channels_first'" not in message  # the layer says it
    assert "its data_format is 'channels_first'" in message
    assert "TF_ENABLE_ONEDNN_OPTS=1" in message and "KERAS_BACKEND=torch" in message


def test_magic_delivers_the_class_and_reports_why_it_cannot_compare(kernel):
    kernel.a.execute("%load_ext kerastorch_magic")
    run = kernel.a.execute("%%keras2torch --insert none\nmodel = channels_first_model()")
    assert run.status == "ok", run.text  # the cell succeeds: Run All goes on
    assert "keras2torch: converted model (Keras model 'eeg') to class Net" in run.stdout
    assert "keras2torch: no comparison: running Keras layer 'channel_comb' failed" in run.stderr
    assert "TF_ENABLE_ONEDNN_OPTS=1" in run.stderr
    assert not any("Comparison" in d.get("text/plain", "") for d in run.displays)
    defined = kernel.a.execute("print(type(net).__name__, net.training)")
    assert defined.stdout.split() == ["Net", "False"]


def test_keras_run_error_is_public():
    assert "KerasRunError" in k2t.__all__ and issubclass(k2t.KerasRunError, RuntimeError)
