"""The converter registry: entries as data, two tables, explicit overrides."""

from __future__ import annotations

import keras
import pytest

import kerastorch_magic as k2t
from kerastorch_magic import registry
from kerastorch_magic.registry import Converted, Fragment, Step, Submodule, converter

# Registrations made here are removed afterwards (conftest.py): the registry is process-wide.
pytestmark = pytest.mark.usefixtures("restore_registry")


def _identity(call):
    return Converted([], [call.inputs[0]])


def _double(call):
    return Converted([Step("{x} * 2")], [call.inputs[0]])


def test_entries_are_frozen_specs_naming_their_converter():
    spec = registry.find("Conv2D")
    assert isinstance(spec, registry.ConverterSpec)
    assert (spec.kind, spec.key, spec.channels_first) == ("layer", "Conv2D", True)
    assert spec.name == "converters.conv.convert_conv"
    with pytest.raises(AttributeError):
        spec.channels_first = False  # frozen: flags are data, not function attributes


def test_layers_and_operations_live_in_separate_tables():
    layer, operation = registry.find("Softmax"), registry.find("Softmax", operation=True)
    assert layer.kind == "layer" and operation.kind == "operation"
    assert registry.find("GetItem") is None  # an operation only
    assert registry.find("GetItem", operation=True).name == "converters.ops_shape.convert_get_item"
    assert registry.find("Add").name == "converters.merging.convert_add"
    assert registry.find("Add", operation=True).name == "converters.ops_math.convert_operator"
    assert "GetItem" in registry.supported_operations() and "GetItem" not in registry.supported_layers()


def test_spec_of_a_node():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs) + 1.0)
    from kerastorch_magic.graph import read_model

    names = [registry.spec_of(node).name for node in read_model(model).nodes]
    assert names == ["converters.core.convert_dense", "converters.ops_math.convert_operator"]


def test_registering_a_name_twice_raises_unless_override():
    converter("MyLayerForRegistryTest")(_identity)
    with pytest.raises(ValueError, match="MyLayerForRegistryTest.*override=True"):
        converter("MyLayerForRegistryTest")(_double)
    assert registry.find("MyLayerForRegistryTest").function is _identity
    converter("MyLayerForRegistryTest", override=True)(_double)
    assert registry.find("MyLayerForRegistryTest").function is _double


def test_a_builtin_converter_is_replaced_only_explicitly():
    with pytest.raises(ValueError, match="Conv2D.*converters.conv.convert_conv"):
        converter("Conv2D")(_identity)
    with pytest.raises(ValueError, match="operation 'Add'"):
        converter("Add", operation=True)(_identity)
    converter("Add", operation=True, passthrough=True, override=True)(_double)
    inputs = keras.Input((3,))
    code = k2t.convert(keras.Model(inputs, inputs + 1.0)).code
    assert "x * 2" in code  # the override converts the op; the Add layer keeps its converter
    assert registry.find("Add").name == "converters.merging.convert_add"


def test_rerunning_the_same_definition_replaces_silently():
    """A notebook cell defining a converter may run twice: that is an edit, not a conflict."""
    source = "@converter('ReRunLayer')\ndef convert_it(call):\n    return None\n"
    first, second = ({"converter": converter, "__name__": "notebook_cell"} for _ in range(2))
    exec(source, first)  # noqa: S102
    exec(source, second)  # noqa: S102
    assert registry.find("ReRunLayer").function is second["convert_it"]


def test_fragments_compose_in_order_and_become_a_converted():
    pad = Fragment(
        [Step("F.pad({x}, (0, 1))", "odd pixel after")], ["TF pads after"], {"pad": "def pad(): ..."}
    )
    act = Fragment([Step("F.softmax({x}, dim=1)")], ["softmax note"], {"sparsemax": "def sparsemax(): ..."})
    both = pad + act
    assert [step.expr for step in both.steps] == ["F.pad({x}, (0, 1))", "F.softmax({x}, dim=1)"]
    assert both.notes == ["TF pads after", "softmax note"]
    assert list(both.helpers) == ["pad", "sparsemax"]  # insertion order: the generated file's order
    assert (len(pad.steps), pad.notes, list(pad.helpers)) == (1, ["TF pads after"], ["pad"])  # unchanged
    both += Fragment(notes=["last"])
    assert both.notes[-1] == "last" and len(both.steps) == 2
    module = Submodule("nn.Identity()")
    spec = object()
    result = Converted.from_fragment(both, [spec], {"": module})
    assert (result.steps, result.notes, result.helpers) == (both.steps, both.notes, both.helpers)
    assert result.outputs == [spec] and result.modules == {"": module}
    assert Converted.from_fragment(Fragment(), [spec]).modules == {}
