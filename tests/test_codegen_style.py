"""Generated code reads like a hand port: ``x`` on the main path, short branch names, each
explanation once per class (issue 11, points 1 and 2).

Exactness of the applications in both formats is test_applications.py's; here the targets are
asserted on ResNet50 and MobileNetV3Small (96x96, converted once each), and small models with
skip connections check that reused names keep both outputs and ``compare``'s taps exact.
"""

from __future__ import annotations

import ast

import keras
import pytest
from exactness import assert_exact, random_inputs, randomise_weights

import kerastorch_magic as k2t

FORMATS = ["channels_first", "channels_last"]
L = keras.layers

BATCHNORM_NOTE = "momentum 0.99"  # the first words of the BatchNorm eps/momentum explanation


def forward_locals(code: str, class_name: str = "Net") -> set[str]:
    """The names ``forward`` of ``class_name`` assigns or takes."""
    tree = ast.parse(code)
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name)
    forward = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "forward")
    names = {arg.arg for arg in forward.args.args if arg.arg != "self"}
    for node in ast.walk(forward):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return names


@pytest.fixture(scope="module")
def applications() -> dict[str, str]:
    """ResNet50 and MobileNetV3Small at 96x96 (random weights), converted once for all tests.

    The one-class form: these targets are about one class's forward and comments; the block
    classes of the default form are checked per class in test_blocks.py.
    """
    codes = {}
    for name in ("ResNet50", "MobileNetV3Small"):
        model = getattr(keras.applications, name)(weights=None, input_shape=(96, 96, 3))
        codes[name] = k2t.convert(model, structure="flat").code
    return codes


@pytest.mark.parametrize("name, most", [("ResNet50", 4), ("MobileNetV3Small", 5)])
def test_forward_uses_few_short_locals(applications, name, most):
    names = forward_locals(applications[name])
    assert "x" in names
    assert len(names) <= most, sorted(names)
    assert max(len(n) for n in names) <= 20, sorted(names)


def test_resnet_blocks_read_like_torchvision(applications):
    code = applications["ResNet50"]
    # A projection block: the shortcut convolution, then the main path in x, then the sum.
    assert "shortcut = self.conv2_block1_0_conv(x)" in code
    # An identity block keeps its input while the main path runs.
    assert "shortcut = x\n        x = self.conv2_block2_1_conv(x)" in code
    # One sum per bottleneck, into the BatchNorm's new output as torchvision's `out += identity`.
    assert code.count("x = self.conv2_block1_3_bn(x)\n        x += shortcut") == 1
    assert code.count("x += shortcut") == 16


def test_squeeze_excite_is_named_se(applications):
    code = applications["MobileNetV3Small"]
    assert "se = x.mean(dim=(2, 3), keepdim=True)" in code
    assert "x = x * se" in code


@pytest.mark.parametrize("name", ["ResNet50", "MobileNetV3Small"])
def test_explanations_appear_once_per_class(applications, name):
    code = applications[name]
    assert code.count(BATCHNORM_NOTE) == 1
    assert code.count("F.pad lists the last dimension first") <= 1
    assert code.count("TF 'same' padding puts the odd pixel after") <= 1
    assert code.count("nn.BatchNorm2d(") > 30  # ... above the first of many layers


def _skip_model():
    """A residual block, a squeeze-excite gate, a U-Net style skip and a two-way fork."""
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, padding="same", name="stem")(inputs)
    shortcut = x
    x = L.Conv2D(4, 3, padding="same", activation="relu")(x)
    x = L.Conv2D(4, 3, padding="same")(x)
    x = L.Add()([shortcut, x])
    se = L.GlobalAveragePooling2D(keepdims=True)(x)
    se = L.Conv2D(4, 1, activation="sigmoid")(se)
    x = L.Multiply()([x, se])
    skip = x
    x = L.MaxPooling2D()(x)
    x = L.Conv2D(6, 3, padding="same", activation="relu")(x)
    x = L.UpSampling2D()(x)
    x = L.Concatenate()([x, skip])
    left = L.Conv2D(3, 1, name="left")(x)
    right = L.Conv2D(3, 3, padding="same", name="right")(x)
    x = L.Add()([left, right])
    return keras.Model(inputs, L.GlobalAveragePooling2D()(x))


@pytest.mark.parametrize("fmt", FORMATS)
def test_reused_names_stay_exact_and_comparable(fmt):
    model = _skip_model()
    conversion, _ = assert_exact(model, fmt)
    names = forward_locals(conversion.code)
    assert {"x", "shortcut", "se", "skip"} <= names and len(names) <= 5, sorted(names)
    # compare taps each layer right after its assignment: every layer is compared and exact.
    inputs = random_inputs(model)
    comparison = k2t.compare(model, conversion, inputs=inputs, device="cpu")
    assert comparison.first_failure is None
    compared = {row.keras_layer for row in comparison.layers}
    assert {layer.name for layer in model.layers[1:]} <= compared


def test_several_outputs_are_named_after_their_layers():
    inputs = keras.Input((5,), name="features")
    hidden = L.Dense(4, activation="relu", name="hidden")(inputs)
    model = keras.Model(inputs, [L.Dense(2, name="mean")(hidden), L.Dense(2, name="log_var")(hidden)])
    conversion, _ = assert_exact(model, "channels_first")
    assert "return mean, log_var" in conversion.code


def test_code_is_identical_when_the_cell_is_re_run():
    """Keras numbers automatic names per session; the names in forward must not follow them."""

    def cell():
        inputs = keras.Input((6, 6, 2))
        x = L.Conv2D(3, 3, padding="same")(inputs)
        y = L.Conv2D(3, 1)(x)
        x = L.Conv2D(3, 3, padding="same")(L.ReLU()(x))
        x = L.Add()([x, y])
        x = L.BatchNormalization()(x)
        return keras.Model(inputs, L.Dense(2)(L.Flatten()(L.BatchNormalization()(x))))

    first, second = cell(), cell()
    assert first.layers[1].name != second.layers[1].name  # Keras did renumber
    for model in (first, second):
        randomise_weights(model)
    assert k2t.convert(first).code == k2t.convert(second).code


def test_locals_never_shadow_python_builtins():
    import builtins

    from keras import ops

    inputs = keras.Input((4, 6))
    x = keras.layers.Dense(6)(inputs)
    outputs = [ops.sum(x, axis=1), ops.max(x, axis=1), ops.abs(x), x[:, 1:3]]
    conversion, _ = assert_exact(keras.Model(inputs, outputs))
    shadowing = forward_locals(conversion.code) & set(dir(builtins))
    assert not shadowing, conversion.code
    assert "sum_ = " in conversion.code  # PEP 8's trailing underscore
