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


def test_a_function_sharing_a_builtin_name_is_traced_not_mistaken_for_it():
    def relu(x):  # not keras.activations.relu
        return x * 2

    conversion, _ = assert_exact(_dense(relu))
    assert "def relu(x):" in conversion.code and "x = relu(self.dense(x))" in conversion.code
    assert "F.relu" not in conversion.code


def _gelu(x):
    return 0.5 * x * (1.0 + keras.ops.tanh(0.7978845608 * (x + 0.044715 * x**3)))


@pytest.mark.parametrize("input_format", ["channels_first", "channels_last"])
def test_a_users_own_function_becomes_a_def_in_both_layouts(input_format):
    def channel_softmax(x):  # reads an axis: the def must follow the tensor's torch layout
        return keras.ops.softmax(x * 2.0, axis=-1)

    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3, activation=_gelu),
            keras.layers.Conv2D(5, 3, activation=channel_softmax),
            keras.layers.Flatten(),
            keras.layers.Dense(6, activation=_gelu),
            keras.layers.Dense(3, activation=lambda x: x * keras.ops.sigmoid(x)),
        ]
    )
    conversion, _ = assert_exact(model, input_format)
    code = conversion.code
    assert code.count("def gelu(x):") == 1 and code.count("gelu(self.") == 2  # one def, two calls
    assert "def channel_softmax(x):" in code and "def activation(x):" in code
    assert "F.softmax(x, dim=1)" in code  # Keras's channel axis, where the conv's output has it


def test_two_functions_with_one_name_get_two_defs():
    def act(x):
        return x * 2.0

    first = act

    def act(x):  # noqa: F811 - a second function of the same name, another formula
        return x - 1.0

    model = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(4, activation=first), keras.layers.Dense(3, activation=act)]
    )
    conversion, _ = assert_exact(model)
    assert "def act(x):" in conversion.code and "def act2(x):" in conversion.code


def test_what_a_def_cannot_hold_is_refused_with_the_reason():
    table = np.linspace(0.5, 1.5, 6).astype("float32")

    def scaled(x):  # a constant array: a def has no self to keep it in
        return x * keras.ops.convert_to_tensor(table)

    with pytest.raises(k2t.ConversionError, match="holds weights or constants") as info:
        k2t.convert(_dense(scaled))
    assert info.value.layers == [("dense", "Dense")]

    def numpy_only(x):
        return np.tanh(x)  # NumPy on a symbolic tensor: nothing to trace

    with pytest.raises(k2t.ConversionError, match="cannot be traced"):
        k2t.convert(_dense(numpy_only))

    model = keras.Sequential([keras.Input((4, 3)), keras.layers.LSTM(5, activation=_gelu, name="lstm")])
    with pytest.raises(k2t.ConversionError, match="recurrent layer's step"):
        k2t.convert(model)
