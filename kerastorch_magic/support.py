"""Before converting: does every node of the graph (traced sub-graphs included) have a converter?

:func:`check_supported` raises one :class:`ConversionError` naming every layer and keras.ops call
that nothing converts, each with the true reason (a catalogued refusal, a Lambda not asked to run,
the mask Keras computes itself, a built-in layer without a converter yet).
"""

from __future__ import annotations

from . import registry, tracing
from .converters import refused
from .errors import ConversionError
from .ir import Graph, Node


def _unsupported_nodes(graph: Graph, missing: dict[int, tuple[Node, Graph]]) -> None:
    """Collect the nodes of ``graph`` (traced sub-graphs included) that nothing converts."""
    for node in graph.nodes:
        if node.subgraph is not None:
            _unsupported_nodes(node.subgraph, missing)
        elif not is_pseudo(node) and registry.spec_of(node) is None:
            missing.setdefault(id(node.layer), (node, graph))


def is_pseudo(node: Node) -> bool:
    """A trace's own entry point: a weight read or an eagerly computed constant."""
    operation = node.layer
    return (
        tracing.is_variable_read(operation)
        or tracing.is_constant(operation)
        or tracing.is_random_draw(operation)
    )


def _keras_mask_reader(graph: Graph, node: Node) -> Node | None:
    """The layer whose ``mask=`` argument ``node``'s output is, if Keras added it for a mask."""
    for reader in graph.readers().get(id(node.outputs[0]), []):
        if reader.is_operation:
            continue
        positions = registry.argument_inputs(reader, "mask")
        if any(reader.inputs[i] is node.outputs[0] for i in positions):
            return reader
    return None


def _why_missing(graph: Graph, node: Node) -> str:
    if node.class_name == "Lambda":
        return (
            "a Lambda layer, not traced because its code was not asked to run "
            "(load the file with safe_mode=False to trace it)"
        )
    if node.is_operation:
        reader = _keras_mask_reader(graph, node)
        if reader is not None:
            return (
                f"the mask Keras computes itself for the mask= argument of {reader.qualified_name!r} "
                f"({reader.class_name}); keras.ops.{node.class_name} has no converter"
            )
        return f"keras.ops.{node.class_name} call with no converter (kerastorch_magic.converter can add one)"
    if refused.refusal_reason(node.class_name) is not None:
        return refused.refusal_reason(node.class_name)
    if tracing.is_builtin(node.layer):
        return "a built-in Keras layer with no converter yet (kerastorch_magic.converter can add one)"
    return "no converter registered (kerastorch_magic.converter can add one)"


def check_supported(graph: Graph) -> None:
    found: dict[int, tuple[Node, Graph]] = {}
    _unsupported_nodes(graph, found)
    if not found:
        return
    nodes = [node for node, _ in found.values()]
    lines = [
        f"  - {node.qualified_name!r} ({node.class_name}): {_why_missing(owner, node)}"
        for node, owner in found.values()
    ]
    layers = [(n.qualified_name, n.class_name) for n in nodes]
    raise ConversionError(
        f"cannot convert Keras model {graph.name!r}: no converter for {named_layers(layers)}:\n"
        + "\n".join(lines),
        layers,
    )


def named_layers(layers: list[tuple[str, str]], limit: int = 5) -> str:
    """``'a' (Lambda), 'b' (Foo) and 3 more``: a refusal's first line names the layers."""
    unique = list(dict.fromkeys(layers))
    named = ", ".join(f"{name!r} ({kind})" for name, kind in unique[:limit])
    return named + (f" and {len(unique) - limit} more" if len(unique) > limit else "")
