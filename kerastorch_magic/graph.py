"""keras.Model -> :class:`ir.Graph`.

Reads the symbolic graph Keras 3 keeps for Functional and Sequential models (``model.inputs``,
``model.outputs`` and each tensor's ``_keras_history``; Keras serialises the same links as
``inbound_nodes`` in ``get_config``, but the live graph also carries every tensor's shape).
Nested models are flattened into their parent; a layer called twice stays one layer with two nodes.
"""

from __future__ import annotations

from .ir import Graph, Node, Value
from .registry import ConversionError


def _model_io(model, role: str) -> list:
    try:
        tensors = getattr(model, role)
    except (AttributeError, ValueError) as error:
        tensors = None
        reason = str(error)
    else:
        reason = ""
    if not tensors:
        kind = type(model).__name__
        if kind == "Sequential":
            how = (
                "give it an input shape: start it with keras.Input(shape=...), or call "
                "model.build((None, ...)) or run it once on data"
            )
        else:
            how = (
                "subclassed models are not supported yet: build a Functional model "
                "(keras.Model(inputs, outputs)) or a Sequential one"
            )
        raise ConversionError(
            f"model {model.name!r} ({kind}) has no symbolic {role}{': ' + reason if reason else ''}; {how}"
        )
    return list(tensors)


def _is_model(operation) -> bool:
    import keras

    return isinstance(operation, keras.Model)


def read_model(model) -> Graph:
    """The flattened graph of ``model`` (nodes in topological order)."""
    inputs = [
        Value(tuple(t.shape), str(t.dtype), name=t._keras_history.operation.name)
        for t in _model_io(model, "inputs")
    ]
    nodes: list[Node] = []
    outputs = _expand(model, inputs, (), nodes)
    return Graph(model.name, inputs, outputs, nodes, type(model).__name__)


def _expand(
    model, inputs: list[Value], scope: tuple[str, ...], nodes: list[Node], classes: tuple[str, ...] = ()
) -> list[Value]:
    """Append ``model``'s nodes (fed with ``inputs``) to ``nodes``; return its output values."""
    model_inputs = _model_io(model, "inputs")
    if len(model_inputs) != len(inputs):
        raise ConversionError(
            f"model {'/'.join(scope) or model.name!r} expects {len(model_inputs)} inputs, got {len(inputs)}"
        )
    values: dict[int, Value] = {id(t): v for t, v in zip(model_inputs, inputs)}
    # Iterative post-order walk from the outputs: deep models (EfficientNetV2L has 1,000+ layers)
    # would exceed Python's recursion limit.
    stack = [(t, False) for t in reversed(_model_io(model, "outputs"))]
    while stack:
        tensor, ready = stack.pop()
        if id(tensor) in values:
            continue
        history = tensor._keras_history
        operation = history.operation
        keras_node = operation._inbound_nodes[history.node_index]
        parents = list(keras_node.input_tensors)
        if not ready:
            stack.append((tensor, True))
            stack.extend((p, False) for p in reversed(parents) if id(p) not in values)
            continue
        node_inputs = [values[id(p)] for p in parents]
        if _is_model(operation):
            node_outputs = _expand(
                operation,
                node_inputs,
                (*scope, operation.name),
                nodes,
                (*classes, type(operation).__name__),
            )
        else:
            node_outputs = [Value(tuple(t.shape), str(t.dtype)) for t in keras_node.outputs]
            nodes.append(Node(operation, scope, node_inputs, node_outputs, keras_node, classes))
        for produced, value in zip(keras_node.outputs, node_outputs):
            values[id(produced)] = value
    return [values[id(t)] for t in _model_io(model, "outputs")]
