"""Reading models: nesting, sharing, several inputs/outputs, bad input, untrusted names."""

import ast

import keras
import pytest
from exactness import assert_exact, check_source

import kerastorch_magic as k2t

FORMATS = ["channels_first", "channels_last"]


def nested_model():
    inner = keras.Sequential(
        [
            keras.Input((8, 8, 4)),
            keras.layers.Conv2D(4, 3, padding="same", name="conv2d"),
            keras.layers.ReLU(),
        ],
        name="block",
    )
    functional_inner = keras.Model(*_dense_pair(4), name="head")
    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(4, 1, name="conv2d")(inputs)
    x = keras.layers.Add()([x, inner(x)])
    x = keras.layers.Flatten()(keras.layers.MaxPooling2D()(x))
    outputs = functional_inner(keras.layers.Dense(4)(x))
    return keras.Model(inputs, outputs, name="outer")


def _dense_pair(width):
    inputs = keras.Input((width,))
    return inputs, keras.layers.Dense(3, name="logits")(keras.layers.Dense(width, activation="relu")(inputs))


@pytest.mark.parametrize("fmt", FORMATS)
def test_nested_models_are_flattened_with_prefixed_names(fmt):
    conversion, _ = assert_exact(nested_model(), fmt)
    assert "self.block_conv2d = nn.Conv2d" in conversion.code  # nested layer keeps its model's name
    assert "self.conv2d = nn.Conv2d" in conversion.code
    assert "self.head_logits = nn.Linear" in conversion.code


@pytest.mark.parametrize("fmt", FORMATS)
def test_shared_layer_is_one_submodule_called_twice(fmt):
    inputs = keras.Input((6,))
    shared = keras.layers.Dense(6, activation="tanh", name="shared")
    outputs = shared(shared(inputs))
    conversion, _ = assert_exact(keras.Model(inputs, outputs), fmt)
    assert conversion.code.count("self.shared = nn.Linear") == 1
    assert conversion.code.count("self.shared(") == 2
    assert len(conversion.state_dict) == 2


@pytest.mark.parametrize("fmt", FORMATS)
def test_several_inputs_and_outputs_keep_keras_order(fmt):
    image = keras.Input((10, 10, 2), name="image")
    extra = keras.Input((5,), name="extra")
    features = keras.layers.Flatten()(keras.layers.Conv2D(3, 3, name="conv")(image))
    merged = keras.layers.Add()([keras.layers.Dense(5)(features), extra])
    model = keras.Model([image, extra], [merged, keras.layers.Conv2D(2, 1)(image)])
    conversion, _ = assert_exact(model, fmt)
    assert [spec.name for spec in conversion.inputs] == ["image", "extra"]
    assert "def forward(self, image, extra):" in conversion.code
    expected_perm = (0, 3, 1, 2) if fmt == "channels_first" else (0, 1, 2, 3)
    assert conversion.inputs[0].perm == expected_perm
    assert conversion.outputs[1].perm == expected_perm


def test_untrusted_layer_names_stay_inert():
    evil = 'x"); import os; os.system("echo pwned")  #'
    inputs = keras.Input((4,), name="in\nput")
    x = keras.layers.Dense(4, name=evil)(inputs)
    x = keras.layers.Dense(4, name="class")(x)
    x = keras.layers.Dense(4, name="forward")(x)
    outputs = keras.layers.Dense(2, name="training\n# injected")(x)
    model = keras.Model(inputs, outputs, name='m"""\nimport os')
    conversion, _ = assert_exact(model)
    check_source(conversion.code)
    tree = ast.parse(conversion.code)
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    assert imported <= {"torch", "torch.nn.functional", "nn", "math"}
    assert "os" not in {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    assert "self.class_ = nn.Linear" in conversion.code
    assert "self.forward_1 = nn.Linear" in conversion.code  # never shadows nn.Module.forward


class _Opaque(keras.Operation):
    """A keras.ops-style operation no converter will ever know."""

    def call(self, x):
        return x

    def compute_output_spec(self, x):
        return keras.KerasTensor(x.shape, x.dtype)


def test_unsupported_layers_are_all_named_at_once():
    inputs = keras.Input((4,))
    x = keras.layers.Lambda(lambda t: t * 2, name="double")(inputs)
    x = keras.layers.Dense(4)(x)
    x = keras.layers.Lambda(lambda t: t + 1, name="plus_one")(x)
    with pytest.raises(k2t.ConversionError) as error:
        k2t.convert(keras.Model(inputs, x), trace_lambda=False)  # a .keras file in safe mode
    message = str(error.value)
    first_line = message.splitlines()[0]
    assert "'double' (Lambda)" in first_line and "'plus_one' (Lambda)" in first_line
    assert "safe_mode=False" in message
    assert {name for name, _ in error.value.layers} == {"double", "plus_one"}


def test_unbuilt_sequential_says_how_to_build_it():
    model = keras.Sequential([keras.layers.Dense(3)])
    with pytest.raises(k2t.ConversionError, match=r"keras\.Input\(shape=\.\.\.\)"):
        k2t.convert(model)


def test_tf_keras_models_convert_too():
    import tensorflow as tf

    model = tf.keras.Sequential([tf.keras.Input((5,)), tf.keras.layers.Dense(3, activation="relu")])
    assert_exact(model)


def test_bad_arguments_are_rejected():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="input_format"):
        k2t.convert(model, input_format="nhwc")
    with pytest.raises(ValueError, match="class name"):
        k2t.convert(model, class_name="not valid")


def test_rebuilding_a_model_in_the_same_session_gives_identical_code():
    """Keras numbers automatic names per session (conv2d_3...): re-running a cell must not rename."""

    def build():
        return keras.Sequential(
            [
                keras.Input((8, 8, 3)),
                keras.layers.Conv2D(4, 3),
                keras.layers.Conv2D(4, 3),
                keras.layers.Flatten(),
                keras.layers.Dense(2),
            ]
        )

    first, second = build(), build()
    assert first.layers[0].name != second.layers[0].name
    code = k2t.convert(first).code
    assert code == k2t.convert(second).code
    assert "self.conv2d = nn.Conv2d" in code and "self.conv2d_1 = nn.Conv2d" in code
    assert 'Keras model "sequential"' in code


def test_operation_without_converter_is_named_as_such():
    inputs = keras.Input((4, 6))
    outputs = keras.layers.Dense(2)(_Opaque(name="opaque")(inputs))
    with pytest.raises(k2t.ConversionError) as error:
        k2t.convert(keras.Model(inputs, outputs))
    first_line = str(error.value).splitlines()[0]
    assert "'opaque' (_Opaque)" in first_line
    assert "keras.ops._Opaque call with no converter" in str(error.value)


@pytest.mark.parametrize("fmt", FORMATS)
def test_one_tensor_returned_twice_is_relaid_once(fmt):
    inputs = keras.Input((6, 6, 2))
    conv = keras.layers.Conv2D(3, 3)(inputs)
    assert_exact(keras.Model(inputs, [conv, keras.layers.Identity()(conv)]), fmt)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16", "float16"])
def test_reduced_precision_is_refused_with_what_to_do(policy):
    """keras-io's fully_convolutional_network sets mixed_float16: the float32 port crashed on float16
    inputs, or differed by float16 round-off that compare blamed on the first Conv2D."""
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(3, name="half", dtype=policy),
            keras.layers.Dense(2, name="full"),
        ]
    )
    with pytest.raises(
        k2t.ConversionError, match=rf"'half' \(Dense\) of model .* computes in .*{policy!r}.*autocast"
    ) as error:
        k2t.convert(model)
    assert error.value.layers == [("half", "Dense")]
