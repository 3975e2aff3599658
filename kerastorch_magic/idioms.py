"""Standard compositions, recognised in the graph and written as the torch idiom.

Keras code often spells out an activation torch has a name for: MobileNetV3 writes hard-sigmoid
as ``ReLU(6.0)(x + 3.0) * (1.0 / 6.0)``, other code ``x * sigmoid(x)`` (SiLU) or
``x * hard_sigmoid(x)`` (hard-swish), GPT-style code GELU's tanh approximation
``0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x**3)))``. A hand port writes
``F.hardsigmoid(x)``, ``F.silu(x)``, ``F.hardswish(x)``, ``F.gelu(x, approximate="tanh")``.
:func:`rewrite` finds such chains in the :class:`~ir.Graph` before conversion and replaces each
by one :class:`Fused` node whose layer is the equivalent Keras layer or op
(``Activation("hard_sigmoid")``, ``keras.ops.gelu``), so the existing converter writes the idiom.
With ``fold_batchnorm`` it also folds BatchNormalization into the convolution or Dense before it
(:mod:`folding`), by the same mechanism.

Every node of a chain but the last stays in the graph as a :class:`Skipped` placeholder (no
inputs, no outputs, no code), so the conversion still has one trace per Keras layer call, in
Keras's order: ``compare`` shows the swallowed layers as fused (skipped) and compares the fused
result at the chain's last layer.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .ir import Graph, Node, Value


@dataclass(eq=False)
class Fused(Node):
    """The node standing for a whole chain: ``layer`` is the Keras layer computing all of it.

    ``original`` is the chain's last node (its trace is the chain's: compare reads the fused
    result there); ``note`` explains the fusion in the generated code (None: the converter's
    own notes say enough).
    """

    original: Node | None = None
    note: str | None = None
    # Per spatial dimension, zeros a folded ZeroPadding layer adds on both sides (zero_padding.py):
    # the converter writes them as the module's padding=.
    zero_padding: tuple[int, ...] | None = None


@dataclass(eq=False)
class Skipped(Node):
    """A node swallowed by a fusion: no code; ``into`` says where its effect is compared."""

    original: Node | None = None
    into: str = ""


@dataclass
class Fusion:
    """One chain of nodes (graph order) replaced by ``layer`` reading ``inputs``."""

    nodes: list[Node]
    layer: Any
    inputs: list[Value]
    note: str | None = None
    how: str = "fused"  # on the swallowed layers' comparison rows, before "compared at <last>"
    zero_padding: tuple[int, ...] | None = None  # see Fused.zero_padding


@dataclass(eq=False)
class RewrittenGraph(Graph):
    """A graph after :func:`rewrite`; ``docstring_notes`` go into the generated class docstring."""

    docstring_notes: list[str] = field(default_factory=list)


_INFERENCE_ONLY = (
    "Deployment variant: each BatchNormalization that follows a convolution or Dense layer is "
    "folded into that layer (weight * s, (bias - mean) * s + beta, s = gamma / sqrt(var + eps)), "
    "exact in eval mode only. Do not train this class as if it had BatchNorm: convert without "
    "fold_batchnorm for that."
)


def rewrite(graph: Graph, fold_batchnorm: bool = False) -> Graph:
    """``graph`` with its idioms fused (and BatchNorms folded when asked); ``graph`` if none."""
    from . import folding, zero_padding

    nodes = [_rewrite_inner(node, fold_batchnorm) for node in graph.nodes]
    graph = dataclasses.replace(graph, nodes=nodes) if nodes != graph.nodes else graph
    fusions = _activation_fusions(graph)
    fusions += _keepdims_pooling_fusions(graph, {id(n) for f in fusions for n in f.nodes})
    folded = (
        folding.batchnorm_fusions(graph, {id(n) for f in fusions for n in f.nodes}) if fold_batchnorm else []
    )
    # A ZeroPadding before a convolution joins that convolution's BatchNorm fold, if it has one.
    padded = zero_padding.fold_into(graph, folded, {id(n) for f in fusions for n in f.nodes})
    fusions += padded[len(folded) :]
    folded = padded[: len(folded)]
    # Folded inside a traced layer counts too: the outer class is then inference-only as well.
    folded_inside = any(getattr(node.subgraph, "docstring_notes", None) for node in graph.nodes)
    if not fusions and not folded and not folded_inside:
        return graph
    replaced: dict[int, Node] = {}
    for fusion in [*fusions, *folded]:
        last = fusion.nodes[-1]
        for node in fusion.nodes[:-1]:
            where = f"{fusion.how}: compared at {last.qualified_name!r}"
            replaced[id(node)] = Skipped(
                node.layer, node.scope, [], [], node.keras_node, node.scope_classes, original=node, into=where
            )
        replaced[id(last)] = Fused(
            fusion.layer,
            last.scope,
            list(fusion.inputs),
            list(last.outputs),
            fusion.nodes[0].keras_node,
            last.scope_classes,
            original=last,
            note=fusion.note,
            zero_padding=fusion.zero_padding,
        )
    fields = {f.name: getattr(graph, f.name) for f in dataclasses.fields(Graph)}
    fields["nodes"] = [replaced.get(id(node), node) for node in graph.nodes]
    return RewrittenGraph(**fields, docstring_notes=[_INFERENCE_ONLY] if folded or folded_inside else [])


def _rewrite_inner(node: Node, fold_batchnorm: bool) -> Node:
    """A traced custom layer's own graph gets the same treatment."""
    if node.subgraph is None:
        return node
    inner = rewrite(node.subgraph, fold_batchnorm)
    return node if inner is node.subgraph else dataclasses.replace(node, subgraph=inner)


# -- matching helpers ---------------------------------------------------------------------------


def _kind(node: Node) -> str:
    """``op:Add`` for a keras.ops call, ``Multiply`` for a layer."""
    return f"op:{node.class_name}" if node.is_operation else node.class_name


def _scalar_operand(node: Node, second: bool = False) -> float | None:
    """The Python/numpy number a binary keras.ops call takes besides its one tensor, if any.

    ``second``: only as the second operand (``x / 6``, not ``6 / x``).
    """
    arguments = getattr(node.keras_node, "arguments", None)
    if arguments is None or len(node.inputs) != 1 or arguments.kwargs or len(arguments.args) != 2:
        return None
    numbers = [_number(a) for a in arguments.args]
    found = [i for i, number in enumerate(numbers) if number is not None]
    if len(found) != 1 or (second and found != [1]):
        return None
    return numbers[found[0]]


def _number(value) -> float | None:
    """``value`` as a float when it is a constant number: a Python/numpy scalar, or a 0-d tensor
    computed eagerly (``keras.ops.sqrt(2 / math.pi)`` is one, not a graph node)."""
    import keras

    if isinstance(value, (bool, keras.KerasTensor)) or tuple(getattr(value, "shape", ())) != ():
        return None
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):
        return None
    return float(array) if array.dtype.kind in "iuf" else None


def _is_constant_op(
    node: Node, kinds: tuple[str, ...], value: float, second: bool = False, ulps: int = 0
) -> bool:
    """``x + 3.0`` (``kinds`` ("op:Add",), ``value`` 3): the op with this constant, float32-equal
    or within ``ulps`` float32 steps (a constant computed in float32, ``ops.sqrt(2 / pi)``)."""
    number = _scalar_operand(node, second) if _kind(node) in kinds else None
    if number is None:
        return False
    return abs(np.float32(number) - np.float32(value)) <= ulps * np.spacing(np.float32(value))


def _is_activation(node: Node, name: str, op_class: str) -> bool:
    """``Activation(name)``, or the ``keras.ops`` call of class ``op_class``."""
    if node.is_operation:
        return node.class_name == op_class and len(node.inputs) == 1
    if node.class_name != "Activation":
        return False
    import keras

    try:
        return node.layer.activation is keras.activations.get(name)
    except ValueError:
        return False


def _is_relu6(node: Node) -> bool:
    if node.class_name == "ReLU" and not node.is_operation:
        layer = node.layer
        return (
            layer.max_value is not None
            and float(layer.max_value) == 6.0
            and not float(layer.negative_slope)
            and not float(layer.threshold)
        )
    return _is_activation(node, "relu6", "Relu6")


def _is_product_of_two(node: Node) -> bool:
    """``a * b`` of two tensors: the keras.ops call or a two-input Multiply layer."""
    return node.class_name == "Multiply" and len(node.inputs) == 2 and len(node.outputs) == 1


class _Matcher:
    """Walks a graph's single-reader chains."""

    def __init__(self, graph: Graph):
        self.readers = graph.readers()
        self.outputs = {id(v) for v in graph.outputs}
        self.taken: set[int] = set()

    def only_reader(self, value: Value) -> Node | None:
        """The one node reading ``value``, when it is the only use (not a model output either)."""
        readers = self.readers.get(id(value), [])
        if len(readers) != 1 or id(value) in self.outputs or id(readers[0]) in self.taken:
            return None
        return readers[0]

    def free(self, *nodes: Node) -> bool:
        return all(id(n) not in self.taken and len(n.outputs) == 1 for n in nodes)


def _hard_sigmoid_chain(match: _Matcher, add: Node) -> list[Node] | None:
    """``relu6(x + 3) * (1 / 6)`` (or ``/ 6``) starting at the ``x + 3`` node."""
    if not match.free(add) or not _is_constant_op(add, ("op:Add",), 3.0):
        return None
    relu6 = match.only_reader(add.outputs[0])
    if relu6 is None or not _is_relu6(relu6):
        return None
    scale = match.only_reader(relu6.outputs[0])
    if scale is None or not (
        _is_constant_op(scale, ("op:Multiply",), 1.0 / 6.0)
        or _is_constant_op(scale, ("op:Divide", "op:TrueDivide"), 6.0, second=True)
    ):
        return None
    return [add, relu6, scale]


def _times_input(match: _Matcher, gate: Node, source: Value) -> Node | None:
    """The product ``source * gate(source)`` reading ``gate``'s output, if that is its only use."""
    product = match.only_reader(gate.outputs[0])
    if product is None or not _is_product_of_two(product):
        return None
    ids = {id(v) for v in product.inputs}
    return product if ids == {id(source), id(gate.outputs[0])} else None


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
# Followed by the Gelu converter's comment (keras.ops.gelu's default is the tanh approximation,
# F.gelu's the erf form), which says why approximate="tanh".
_GELU_NOTE = (
    "The Keras model writes out keras.ops.gelu(x): "
    "0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x**3)))."
)


def _gelu_tanh_chain(
    match: _Matcher, tanh: Node, producer: dict[int, Node]
) -> tuple[list[Node], Value] | None:
    """``0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x**3)))`` around its ``tanh`` node:
    the chain's nodes (graph order is the caller's) and ``x``.

    Walked outwards from the tanh, the one node every spelling shares; each inner value must have
    its one reader in the chain.
    """

    def made_by(value: Value, reader: Node) -> Node | None:
        node = producer.get(id(value))
        return node if node is not None and match.free(node) and match.only_reader(value) is reader else None

    if not match.free(tanh) or not _is_activation(tanh, "tanh", "Tanh"):
        return None
    scale = made_by(tanh.inputs[0], tanh)
    # ops.sqrt(2 / pi) in float32 is one float32 step below sqrt(2 / pi) rounded to float32.
    if scale is None or not _is_constant_op(scale, ("op:Multiply",), _SQRT_2_OVER_PI, ulps=2):
        return None
    inner = made_by(scale.inputs[0], scale)  # x + 0.044715 * x**3
    if inner is None or inner.class_name != "Add" or len(inner.inputs) != 2:
        return None
    for x, cubic_term in (inner.inputs, inner.inputs[::-1]):
        term = made_by(cubic_term, inner)
        if term is None or not _is_constant_op(term, ("op:Multiply",), 0.044715):
            continue
        cube = made_by(term.inputs[0], term)
        if cube is not None and cube.inputs[0] is x and _is_constant_op(cube, ("op:Power",), 3.0, True):
            break
    else:
        return None
    plus_one = match.only_reader(tanh.outputs[0])
    if plus_one is None or not match.free(plus_one) or not _is_constant_op(plus_one, ("op:Add",), 1.0):
        return None
    product = match.only_reader(plus_one.outputs[0])
    if product is None or not match.free(product) or not _is_product_of_two(product):
        return None
    others = [v for v in product.inputs if v is not plus_one.outputs[0]]
    half = made_by(others[0], product) if len(others) == 1 else None
    if half is None or not _is_constant_op(half, ("op:Multiply",), 0.5) or half.inputs[0] is not x:
        return None
    return [half, cube, term, inner, scale, tanh, plus_one, product], x


def _activation_layer(name: str, like: Node):
    import keras

    if name == "gelu_tanh":  # keras.ops.gelu(x) (approximate=True), as the ops converter writes it
        from keras.src.ops.nn import Gelu

        return Gelu(approximate=True, name=like.layer.name)
    return keras.layers.Activation(name, name=like.layer.name)


def _activation_fusions(graph: Graph) -> list[Fusion]:
    """Hard-sigmoid, hard-swish (``x * hard_sigmoid(x)``), SiLU (``x * sigmoid(x)``) and GELU's
    tanh approximation written out."""
    match = _Matcher(graph)
    producer = {id(value): node for node in graph.nodes for value in node.outputs}
    order = {id(node): index for index, node in enumerate(graph.nodes)}
    fusions: list[Fusion] = []
    for node in graph.nodes:
        if id(node) in match.taken or isinstance(node, (Fused, Skipped)) or node.subgraph is not None:
            continue
        source = node.inputs[0] if len(node.inputs) == 1 else None
        if source is None:
            continue
        chain, name = _hard_sigmoid_chain(match, node), "hard_sigmoid"
        if chain is not None:
            product = _times_input(match, chain[-1], source)
            if product is not None:
                chain, name = [*chain, product], "hard_swish"
        elif match.free(node) and _is_activation(node, "sigmoid", "Sigmoid"):
            product = _times_input(match, node, source)
            chain, name = ([node, product], "silu") if product is not None else (None, "")
        elif (gelu := _gelu_tanh_chain(match, node, producer)) is not None:
            (chain, source), name = gelu, "gelu_tanh"
            chain.sort(key=lambda n: order[id(n)])  # the product reads all the others: it stays last
        if chain is None:
            continue
        match.taken.update(id(n) for n in chain)
        fusions.append(
            Fusion(
                chain,
                _activation_layer(name, chain[-1]),
                [source],
                note=_GELU_NOTE if name == "gelu_tanh" else None,
                how=f"part of {name}, fused",
            )
        )
    return fusions


_GLOBAL_POOLING = {f"Global{kind}Pooling{rank}D" for kind in ("Average", "Max") for rank in (1, 2, 3)}


def _keepdims_pooling_fusions(graph: Graph, taken: set[int]) -> list[Fusion]:
    """Global pooling then a Reshape that puts the pooled axes back as 1s: ``keepdims=True``.

    EfficientNet's squeeze-excite writes ``Reshape((1, 1, filters))(GlobalAveragePooling2D()(x))``;
    a hand port writes ``x.mean(dim=(2, 3), keepdim=True)``, not a reshape to Keras's layout and
    a permute back to torch's.
    """
    match = _Matcher(graph)
    match.taken |= taken
    fusions: list[Fusion] = []
    for pooling in graph.nodes:
        if (
            pooling.class_name not in _GLOBAL_POOLING
            or pooling.is_operation
            or pooling.layer.get_config().get("keepdims")
            or isinstance(pooling, (Fused, Skipped))
            or len(pooling.inputs) != 1
            or pooling.keras_node is None
            or pooling.keras_node.arguments.kwargs.get("mask") is not None
            or not match.free(pooling)
        ):
            continue
        reshape = match.only_reader(pooling.outputs[0])
        if reshape is None or reshape.class_name != "Reshape" or reshape.is_operation:
            continue
        config = {**pooling.layer.get_config(), "keepdims": True, "name": reshape.layer.name}
        kept = type(pooling.layer).from_config(config)
        if tuple(reshape.outputs[0].shape) != tuple(kept.compute_output_shape(pooling.inputs[0].shape)):
            continue
        match.taken.update((id(pooling), id(reshape)))
        fusions.append(Fusion([pooling, reshape], kept, list(pooling.inputs), how="keepdims=True, fused"))
    return fusions
