"""Custom RNN cells (``keras.layers.RNN(MyCell(...))``): one step of the cell traced into a class.

The cell's ``call(inputs, states)`` is user code: it runs once on symbolic tensors (see
:mod:`kerastorch_magic.tracing`), and the builder turns that step into a generated class whose
weights are parameters named after the Keras variables. The ``keras_rnn_loop`` helper steps it
through time like a built-in explicit cell, so masks, ``return_sequences``, ``return_state``,
``go_backwards`` and ``initial_state`` behave as for Keras's own cells (see :mod:`recurrent`).

Keras's conventions kept: the cell gets its states as a list (one tensor per ``state_size``
entry, even for an int ``state_size``) and returns ``output, new_states``; the generated class
takes them flat, ``forward(inputs, *states)``, and returns ``(output, *new_states)``. The initial
state is zeros of ``state_size`` (what Keras's RNN uses when the cell has no
``get_initial_state``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

from .. import layout, tracing
from ..graph import read_trace
from ..ir import Node, TensorSpec, Value
from ..registry import LayerCall, Submodule, spec_of


@dataclass
class TracedCellPlan:
    """A custom cell as its generated class; read by :class:`recurrent._Run` like a ``CellPlan``."""

    kind: str  # the Keras class name
    units: int  # output size
    state_sizes: list[int]
    submodule: Submodule
    helpers: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    exact_module = False  # always stepped by keras_rnn_loop

    @property
    def n_states(self) -> int:
        return len(self.state_sizes)

    def explicit(self) -> Submodule:
        return self.submodule

    def zero_state(self, sequence: str) -> list[str]:
        """Keras's default initial state: zeros of each ``state_size``, for ``sequence``'s batch."""
        return [f"{sequence}.new_zeros({sequence}.shape[0], {size})" for size in self.state_sizes]


def is_custom_cell(cell) -> bool:
    """A cell the user wrote (traced), as opposed to one of Keras's own."""
    return tracing.traceable(cell)


def plan_traced_cell(call: LayerCall, cell) -> TracedCellPlan:
    """Trace one step of ``cell`` and have the builder generate its class."""
    state_sizes = _state_sizes(call, cell)
    if getattr(cell, "get_initial_state", None) is not None:
        raise call.unsupported(
            f"cell {type(cell).__name__} defines get_initial_state(): Keras starts from what it "
            "returns, which is not traced; pass the initial state as initial_state= instead"
        )
    if call.traced_class is None:  # a converter called outside a conversion's builder
        raise call.unsupported(f"custom cell {type(cell).__name__} can only be traced within convert()")
    input_size = int(call.node.inputs[0].shape[-1])
    output_size = getattr(cell, "output_size", None) or state_sizes[0]
    node = _traced_step(call, cell, input_size, state_sizes, output_size)
    specs = [TensorSpec(tuple(v.shape), layout.identity(2), v.dtype) for v in node.inputs]
    use = call.traced_class(node, specs)
    where = tracing.source_of(cell)
    comment = (
        f"Keras RNN cell {type(cell).__name__}{f' ({where})' if where else ''}: one step of its "
        "call(), traced at inference"
    )
    resets = ["{m}.reset_parameters()"] if use.resets else []
    submodule = Submodule(f"{use.class_name}()", use.state, resets, comment)
    return TracedCellPlan(type(cell).__name__, int(output_size), state_sizes, submodule)


def _state_sizes(call: LayerCall, cell) -> list[int]:
    size = cell.state_size
    sizes = [size] if isinstance(size, int) else list(size)
    if not sizes or not all(isinstance(s, int) for s in sizes):
        raise call.unsupported(
            f"cell {type(cell).__name__} has state_size={size!r}: only an int or a list of ints "
            "(one (N, size) state each) is traced"
        )
    return sizes


def _traced_step(call: LayerCall, cell, input_size: int, state_sizes: list[int], output_size: int) -> Node:
    """The cell's ``call(inputs, states)`` on symbolic (N, F) and (N, size) tensors, as a traced node."""
    import keras

    dtype = cell.compute_dtype
    step = keras.KerasTensor((None, input_size), dtype=dtype)
    states = [keras.KerasTensor((None, size), dtype=dtype) for size in state_sizes]
    arguments = SimpleNamespace(args=(step, states), kwargs={}, keras_tensors=[step, *states])
    scope = (*call.node.scope, call.layer.name)
    name = "/".join((*scope, cell.name))
    trace = tracing.trace(cell, arguments, name)
    classes = (*call.node.scope_classes, call.class_name)
    subgraph = read_trace(cell, trace, scope, classes)
    _check_supported(call, subgraph)
    if len(subgraph.outputs) != 1 + len(state_sizes):
        raise call.unsupported(
            f"custom cell {type(cell).__name__}'s call() returns {len(subgraph.outputs)} tensors: "
            f"Keras expects the output and {len(state_sizes)} state(s)"
        )
    inputs = [Value(tuple(t.shape), str(t.dtype)) for t in (step, *states)]
    outputs = [Value((None, output_size), dtype), *(Value((None, s), dtype) for s in state_sizes)]
    return Node(cell, scope, inputs, outputs, None, classes, subgraph)


def _check_supported(call: LayerCall, graph) -> None:
    """Refuse, by name, what the cell's step does that nothing converts."""
    for node in graph.nodes:
        if node.subgraph is not None:
            _check_supported(call, node.subgraph)
            continue
        operation = node.layer
        pseudo = (
            tracing.is_variable_read(operation)
            or tracing.is_constant(operation)
            or tracing.is_random_draw(operation)
        )
        if not pseudo and spec_of(node) is None:
            what = f"keras.ops.{node.class_name}" if node.is_operation else f"layer {node.class_name}"
            raise call.unsupported(
                f"custom cell {graph.class_name}'s call() uses {what}, which has no converter"
            )
