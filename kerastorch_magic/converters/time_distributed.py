"""TimeDistributed: the wrapped layer's own converter, applied to the steps folded into the batch.

Keras runs the inner layer once per step (N, T, ...) -> T x (N, ...). torch modules take any
batch size, so the generated code folds the steps into the batch, ``(N * T, ...)``, runs the inner
layer's code once and unfolds: the same numbers, one call instead of T. A wrapped model becomes
its own generated class (converted with Keras's layouts), declared as the submodule.
"""

from __future__ import annotations

from dataclasses import replace

from .. import naming
from ..ir import Node, TensorSpec, Value
from ..registry import Converted, LayerCall, Step, converter, find


@converter("TimeDistributed")
def convert_time_distributed(call: LayerCall) -> Converted:
    import keras

    inner = call.layer.layer
    name = type(inner).__name__
    if isinstance(inner, keras.Model):
        return _wrapped_model(call, inner)
    function = find(name)
    if function is None:
        raise call.unsupported(f"the wrapped layer {inner.name!r} ({name}) has no converter")
    if call.argument_inputs("mask") and getattr(inner, "_call_has_mask_arg", False):
        raise call.unsupported(f"the wrapped {name} would read the mask of each step")
    spec = call.inputs[0]
    steps_count = spec.keras_shape[1]
    if steps_count is None:
        raise call.unsupported("the number of steps is unknown (None): give the Input a fixed length")
    # Batch and steps must lead in torch to fold them; the other axes keep their torch order.
    folded = (0, 1, *(axis for axis in spec.perm if axis > 1))
    steps = call.relayout(folded) if len(call.inputs) == 1 else _relayout(call, folded)
    steps.append(
        Step("{x}.flatten(0, 1)", f"TimeDistributed({name}): the {steps_count} steps folded into the batch")
    )
    inner_call = _inner_call(call, inner, TensorSpec(
        (None, *spec.keras_shape[2:]), (0, *(axis - 1 for axis in folded[2:])), spec.dtype
    ))  # fmt: skip
    result = function(inner_call)
    for position, step in enumerate(result.steps):
        expr = step.expr.replace("{x0}", "{x}") if position == 0 else step.expr
        if "{x0}" in expr or "{x1}" in expr:
            raise call.unsupported(f"the wrapped {name}'s code reads its input twice")
        steps.append(Step(expr, step.comment))
    inner_out = result.outputs[0]
    if inner_out.flat_order is not None:
        raise call.unsupported(f"the wrapped {name} flattens in a folded order")
    steps.append(Step(f"{{x}}.unflatten(0, (-1, {steps_count}))", "back to (N, steps, ...)"))
    perm = (0, 1, *(axis + 1 for axis in inner_out.perm[1:]))
    return Converted(steps, [call.output_spec(perm)], result.modules, result.notes, result.helpers)


def _relayout(call: LayerCall, wanted: tuple[int, ...]) -> list[Step]:
    expr = call.input_as(0, wanted).replace("{x0}", "{x}")
    return [] if expr == "{x}" else [Step(expr, f"TimeDistributed folds {len(wanted)} axes")]


def _inner_call(call: LayerCall, inner, spec: TensorSpec) -> LayerCall:
    """A call of the wrapped layer on one step: (N, ...) in, (N, ...) out."""
    out_shape = call.output_shapes[0]
    node = Node(
        inner,
        call.node.scope,
        [Value(spec.keras_shape, spec.dtype)],
        [Value((None, *out_shape[2:]), call.node.outputs[0].dtype)],
        keras_node=None,
        scope_classes=call.node.scope_classes,
    )
    return replace(call, node=node, inputs=[spec], readers=[], is_model_output=False, _config=None)


def _wrapped_model(call: LayerCall, model) -> Converted:
    """A model under TimeDistributed: its own converted class, called on the folded steps.

    The inner class takes and returns Keras's layouts (``input_format="channels_last"``), so the
    folded steps go in as Keras lays them out.
    """
    import numpy as np

    from .. import codegen
    from ..conversion import convert
    from ..registry import ConversionError, Submodule

    spec = call.inputs[0]
    steps_count = spec.keras_shape[1]
    if steps_count is None or len(model.inputs) != 1 or len(model.outputs) != 1:
        raise call.unsupported(
            f"it wraps model {model.name!r} with several inputs/outputs or an unknown number of steps"
        )
    class_name = "".join(part.capitalize() for part in naming.identifier(model.name).split("_")) or "Step"
    try:
        inner = convert(model, class_name=f"{class_name}Step", input_format="channels_last")
    except ConversionError as error:
        raise call.unsupported(f"its model {model.name!r} cannot be converted: {error}") from error
    source = replace(inner._source, helpers={}, classes=[], header=[])
    text = codegen.render(source)
    helpers = {**inner._source.helpers, inner.class_name: text[text.index("class ") :]}
    state = {key: np.asarray(value) for key, value in inner.state_dict.items()}
    identity = tuple(range(spec.rank))
    steps = call.relayout(identity) if len(call.inputs) == 1 else _relayout(call, identity)
    steps += [
        Step(
            "{x}.flatten(0, 1)",
            f"TimeDistributed({model.name}): the {steps_count} steps folded into the batch",
        ),
        Step("{m}({x})"),
        Step(f"{{x}}.unflatten(0, (-1, {steps_count}))", "back to (N, steps, ...)"),
    ]
    module = Submodule(f"{inner.class_name}()", state)
    out = call.output_spec(tuple(range(len(call.output_shapes[0]))))
    return Converted(steps, [out], {"": module}, [str(note) for note in inner.notes], helpers)
