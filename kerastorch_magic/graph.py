"""keras.Model -> :class:`ir.Graph`.

Reads the symbolic graph Keras 3 keeps for Functional and Sequential models (``model.inputs``,
``model.outputs`` and each tensor's ``_keras_history``; Keras serialises the same links as
``inbound_nodes`` in ``get_config``, but the live graph also carries every tensor's shape).
Nested models are flattened into their parent; a layer called twice stays one layer with two nodes.
"""

from __future__ import annotations

from .errors import ConversionError
from .ir import Graph, Node, Value
from .masks import implicit_masks


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
    """A Functional or Sequential model: flattened into its parent."""
    from .tracing import is_functional

    return is_functional(operation)


def read_model(model, trace_lambda: bool = True) -> Graph:
    """The flattened graph of ``model`` (nodes in topological order).

    A subclassed model (``keras.Model`` with its own ``call()``) is traced: its graph is its
    ``call()``'s, and layers without a converter are traced into sub-graphs (see :mod:`tracing`).
    """
    from . import legacy, tracing

    model = legacy.as_keras3(model)  # a Keras 2 (tf_keras) model: read through Keras 3's .h5 reader
    reader = _Reader(trace_lambda)
    if not _is_model(model) and tracing.traceable(model):
        graph = reader.traced(model, tracing.trace_model(model, model.name), (), ())
        _refuse_reduced_precision(model.name, graph.nodes)
        _token_inputs(graph)
        return graph
    inputs = [
        Value(tuple(t.shape), str(t.dtype), name=t._keras_history.operation.name)
        for t in _model_io(model, "inputs")
    ]
    nodes: list[Node] = []
    outputs = reader.expand(model, inputs, (), nodes)
    _refuse_reduced_precision(model.name, nodes)
    return Graph(model.name, inputs, outputs, nodes, type(model).__name__)


def _refuse_reduced_precision(model_name: str, nodes: list[Node]) -> None:
    """Refuse layers that Keras computes in float16/bfloat16 (``mixed_float16``, ``float16``...).

    A float32 port cannot match them within float32's tolerance, and ports computing in float16
    would be compared against round-off, not semantics: the user converts the float32 model and
    gets float16 from ``torch.autocast``, which is what mixed precision means in PyTorch.
    """
    reduced = [
        (node, node.layer.dtype_policy)
        for node in nodes
        if getattr(getattr(node.layer, "dtype_policy", None), "compute_dtype", "float32")
        in ("float16", "bfloat16")
    ]
    if not reduced:
        return
    node, policy = reduced[0]
    others = f" (and {len(reduced) - 1} more layers)" if len(reduced) > 1 else ""
    raise ConversionError(
        f"layer {node.qualified_name!r} ({node.class_name}) of model {model_name!r}{others} computes in "
        f"{policy.compute_dtype} (dtype policy {policy.name!r}), which a float32 port cannot match; "
        "build the model under keras.mixed_precision.set_global_policy('float32') (copy the weights "
        "over with set_weights), convert that, and run the port under "
        f"torch.autocast('cuda', dtype=torch.{policy.compute_dtype}) to compute as Keras did",
        [(n.qualified_name, n.class_name) for n, _ in reduced],
    )


def read_trace(layer, trace, scope: tuple[str, ...], classes: tuple[str, ...] = ()) -> Graph:
    """The graph of a call() traced apart from any model's walk (one step of an RNN's custom cell)."""
    return _Reader(trace_lambda=True).traced(layer, trace, scope, classes)


def _token_inputs(graph: Graph) -> None:
    """A subclassed model's inputs read only by Embeddings hold token ids: int32, not float32.

    Keras records the shapes a subclassed model was built with, not the dtypes, so the trace ran
    on float32 inputs; the port takes the ids as integers, like the Keras model's users pass them.
    """
    for value in graph.inputs:
        readers = graph.readers_inside(value)
        if readers and all(node.class_name == "Embedding" for node in readers):
            object.__setattr__(value, "dtype", "int32")  # Value is frozen; set before any use


class _Reader:
    def __init__(self, trace_lambda: bool):
        self.trace_lambda = trace_lambda

    def expand(
        self,
        model,
        inputs: list[Value],
        scope: tuple[str, ...],
        nodes: list[Node],
        classes: tuple[str, ...] = (),
    ) -> list[Value]:
        """Append ``model``'s nodes (fed with ``inputs``) to ``nodes``; return its output values."""
        model_inputs = _model_io(model, "inputs")
        if len(model_inputs) != len(inputs):
            where = "/".join(scope) or model.name
            raise ConversionError(f"model {where!r} expects {len(model_inputs)} inputs, got {len(inputs)}")
        return self.walk(model_inputs, inputs, _model_io(model, "outputs"), scope, nodes, classes)

    def walk(
        self, input_tensors, inputs, output_tensors, scope, nodes, classes, attributes=None
    ) -> list[Value]:
        """Append the nodes between ``input_tensors`` (read as ``inputs``) and ``output_tensors``.

        ``attributes`` (a traced call()'s): a nested model the user holds as ``self.ffn`` scopes
        its layers as ``ffn``, not under Keras's automatic ``sequential_3``.
        """
        attributes = attributes or {}
        from . import registry, tracing

        values: dict[int, Value] = {id(t): v for t, v in zip(input_tensors, inputs)}
        # Iterative post-order walk from the outputs: deep models (EfficientNetV2L has 1,000+ layers)
        # would exceed Python's recursion limit.
        stack = [(t, False) for t in reversed(output_tensors)]
        while stack:
            tensor, ready = stack.pop()
            if id(tensor) in values:
                continue
            history = getattr(tensor, "_keras_history", None)
            if history is None or history.operation is None:
                raise ConversionError(
                    f"{'/'.join(scope) or 'the model'}: a tensor that comes from no recorded operation "
                    "(a model input that is not declared, or a value computed outside Keras)"
                )
            operation = history.operation
            keras_node = operation._inbound_nodes[history.node_index]
            parents = [*keras_node.input_tensors, *(m for _, m in implicit_masks(operation, keras_node))]
            if not ready:
                stack.append((tensor, True))
                stack.extend((p, False) for p in reversed(parents) if id(p) not in values)
                continue
            node_inputs = [values[id(p)] for p in parents]
            if _is_model(operation):
                inner_scope = (*scope, attributes.get(id(operation), operation.name))
                inner_classes = (*classes, type(operation).__name__)
                if len(parents) > len(_model_io(operation, "inputs")):  # called with mask=
                    node_outputs = self.expand_masked(
                        operation, keras_node, node_inputs, inner_scope, nodes, inner_classes
                    )
                else:
                    node_outputs = self.expand(operation, node_inputs, inner_scope, nodes, inner_classes)
            else:
                node_outputs = [Value(tuple(t.shape), str(t.dtype)) for t in keras_node.outputs]
                node = Node(operation, scope, node_inputs, node_outputs, keras_node, classes)
                if registry.find(node.class_name, node.is_operation) is None and tracing.traceable(
                    operation, self.trace_lambda
                ):
                    name = node.qualified_name
                    trace = tracing.trace(operation, keras_node.arguments, name)
                    node.subgraph = self.traced(
                        operation, trace, (*scope, operation.name), (*classes, node.class_name)
                    )
                nodes.append(node)
            for produced, value in zip(keras_node.outputs, node_outputs):
                values[id(produced)] = value
        return [values[id(t)] for t in output_tensors]

    def expand_masked(self, model, keras_node, inputs, scope, nodes, classes) -> list[Value]:
        """A nested model called with Keras masks: its layers, as they run with the masks on.

        ``Functional.call`` sets the masks it is given (``mask=``, which Keras passes itself when
        the inputs carry masks) on its inputs, and the layers inside read them at run time: the
        keras-io translation transformer's decoder attends to the encoder's outputs through the
        encoder's padding mask. The graph Keras recorded inside the model was built without them,
        so its call() is traced afresh, with the masks on its fresh inputs.
        """
        from . import tracing

        trace = tracing.trace(model, keras_node.arguments, "/".join(scope))
        return self.walk(trace.inputs, inputs, trace.outputs, scope, nodes, classes, trace.attributes)

    def traced(self, layer, trace, scope: tuple[str, ...], classes: tuple[str, ...]) -> Graph:
        """The graph of one traced call() (its nodes scoped under the layer's name)."""
        inputs = [
            Value(tuple(t.shape), str(t.dtype), name=name) for t, name in zip(trace.inputs, trace.input_names)
        ]
        nodes: list[Node] = []
        outputs = self.walk(trace.inputs, inputs, trace.outputs, scope, nodes, classes, trace.attributes)
        return Graph(
            layer.name,
            inputs,
            outputs,
            nodes,
            type(layer).__name__,
            attributes=trace.attributes,
            input_names=trace.input_names,
            layer=layer,
            scope=scope,
        )
