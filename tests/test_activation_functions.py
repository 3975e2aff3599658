"""``activation=`` given a keras.ops or TensorFlow function object: exact, with Keras's defaults.

keras-io examples write ``Dense(units, activation=tf.nn.gelu)``, ``activation=ops.gelu`` and
``mlp(x, activation=tf.tanh)``; they were refused as custom functions. Their formulas are known.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from exactness import assert_exact

import kerastorch_magic as k2t
from kerastorch_magic.converters import activation_functions

KERAS_OPS = activation_functions._KERAS_OPS_AS_ACTIVATIONS
TF_PATHS = sorted(activation_functions._TF_AS_ACTIVATIONS)


def _tf_function(path: str):
    function = tf
    for part in path.split("."):
        function = getattr(function, part)
    return function


def _dense(activation, units: int = 6):
    return keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(units, activation=activation, name="dense")]
    )


@pytest.mark.parametrize("name", KERAS_OPS)
def test_keras_ops_functions_share_the_activations_formula_and_defaults(name):
    """The table's premise, checked against Keras itself: ops.X(x) == activations.X(x)."""
    x = np.random.default_rng(0).normal(scale=3.0, size=(4, 6)).astype("float32")
    expected = keras.ops.convert_to_numpy(getattr(keras.activations, name)(x))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(getattr(keras.ops, name)(x)), expected, rtol=1e-6)


@pytest.mark.parametrize("name", [*KERAS_OPS, "exp", "gelu"])
def test_keras_ops_function_as_activation_is_exact(name):
    model = _dense(getattr(keras.ops, name))
    conversion, _ = assert_exact(model)
    assert "custom function" not in conversion.code


@pytest.mark.parametrize("path", TF_PATHS)
def test_tensorflow_function_as_activation_is_exact(path):
    assert_exact(_dense(_tf_function(path)))


def test_keras_ops_gelu_is_the_tanh_form_and_says_why():
    conversion, _ = assert_exact(_dense(keras.ops.gelu))
    assert 'F.gelu(self.dense(x), approximate="tanh")' in conversion.code
    assert "approximate=True" in conversion.code  # the comment: Keras's ops and activations differ
    exact_form, _ = assert_exact(_dense(tf.nn.gelu))
    assert "F.gelu(self.dense(x))" in exact_form.code


def test_a_conv_with_an_ops_activation_in_both_formats():
    for input_format in ("channels_first", "channels_last"):
        model = keras.Sequential(
            [keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, activation=keras.ops.gelu)]
        )
        assert_exact(model, input_format)


def test_a_users_own_function_is_still_refused_by_name():
    def gelu(x):  # same name as keras.ops.gelu, another formula
        return x * keras.ops.sigmoid(1.702 * x)

    with pytest.raises(k2t.ConversionError, match="custom function"):
        k2t.convert(_dense(gelu))
