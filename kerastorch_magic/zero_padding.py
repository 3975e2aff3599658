"""A ZeroPadding layer folded into the convolution or max pooling it feeds: ``padding=p``.

Keras has no numeric ``padding=`` on its layers, so models pad explicitly:
``ZeroPadding2D(3)`` then ``Conv2D(64, 7, strides=2)`` is ResNet's stem, ``ZeroPadding2D(1)`` then
``MaxPooling2D(3, strides=2)`` its pooling. torchvision writes ``nn.Conv2d(..., padding=3)`` and
``nn.MaxPool2d(3, stride=2, padding=1)``: no padded copy of the activation, one statement less.
The fold is exact where the values are the same:

- a convolution pads with zeros, as ZeroPadding does (``padding_mode="zeros"``);
- max pooling pads with -inf, so only where its input is a ReLU's output (never negative: a zero
  pad cannot win a max a real cell would not tie) and the pad is at most half the window (torch's
  own rule, which also keeps a real cell in every window).

Only symmetric pads (torch's ``padding=`` is), ``padding="valid"`` on the reader, the same
``data_format`` on both, and a reader called once (a shared layer is one module, with one
``padding``). :func:`fold_into` returns the fusions, merging with a BatchNorm fold already found
on the same convolution so that both apply.
"""

from __future__ import annotations

from .idioms import Fused, Fusion, Skipped
from .ir import Graph, Node

_CONVOLUTIONS = {f"{kind}{rank}D" for kind in ("Conv", "DepthwiseConv") for rank in (1, 2, 3)}
_CONVOLUTIONS -= {"DepthwiseConv3D"}
_MAX_POOLING = {f"MaxPooling{rank}D" for rank in (1, 2, 3)}
_PADDINGS = {f"ZeroPadding{rank}D" for rank in (1, 2, 3)}


def fold_into(graph: Graph, fusions: list[Fusion], taken: set[int]) -> list[Fusion]:
    """``fusions`` (BatchNorm folds) with each foldable ZeroPadding added: a new fusion, or the
    front of the fold starting at its reader. Nodes in ``taken`` (other fusions) are left alone."""
    readers = graph.readers()
    outputs = {id(v) for v in graph.outputs}
    producer = graph.producers()
    calls = graph.calls_per_layer()
    starting = {id(f.nodes[0]): i for i, f in enumerate(fusions)}
    inside = {id(n) for f in fusions for n in f.nodes} | taken
    result = list(fusions)
    for pad in graph.nodes:
        if pad.class_name not in _PADDINGS or pad.is_operation or len(pad.inputs) != 1 or id(pad) in inside:
            continue
        value = pad.outputs[0]
        users = readers.get(id(value), [])
        if len(users) != 1 or id(value) in outputs or calls[id(users[0].layer)] != 1:
            continue
        reader = users[0]
        pads = _symmetric_pads(pad, reader, producer.get(id(pad.inputs[0])))
        if pads is None or (id(reader) in inside and id(reader) not in starting):
            continue
        note = f"{pad.layer.name!r} folded in: padding={_text(pads)} {_why(reader)}."
        how = f"folded into {reader.layer.name!r} as padding={_text(pads)}"
        if id(reader) in starting:  # a BatchNorm fold starts at this convolution: pad first
            index = starting[id(reader)]
            fold = result[index]
            notes = " ".join(n for n in (note, fold.note) if n)
            how = f"{pad.class_name} and BatchNorm folded into {reader.layer.name!r}"
            result[index] = Fusion([pad, *fold.nodes], fold.layer, list(pad.inputs), notes, how, pads)
        else:
            result.append(Fusion([pad, reader], reader.layer, list(pad.inputs), note, how, pads))
    return result


def _symmetric_pads(pad: Node, reader: Node, source: Node | None) -> tuple[int, ...] | None:
    """The per-dimension pad ``reader`` can take as ``padding=``, or None when it cannot."""
    if isinstance(reader, (Fused, Skipped)) or reader.is_operation or reader.subgraph is not None:
        return None
    layer = reader.layer
    pairs = pad.layer.padding
    pairs = (pairs,) if isinstance(pairs[0], int) else pairs  # ZeroPadding1D: one (before, after)
    same_format = getattr(pad.layer, "data_format", "channels_last") == getattr(layer, "data_format", None)
    if not same_format or any(before != after for before, after in pairs) or not any(b for b, _ in pairs):
        return None
    if layer.get_config().get("padding") != "valid":
        return None
    pads = tuple(int(before) for before, _ in pairs)
    if reader.class_name in _CONVOLUTIONS:
        return pads
    if reader.class_name in _MAX_POOLING:
        window = tuple(layer.pool_size)
        fits = all(p <= k // 2 for p, k in zip(pads, window))
        return pads if fits and _never_negative(source) else None
    return None


def _never_negative(node: Node | None) -> bool:
    """Whether ``node``'s output is a ReLU's (ReLU6's) output: no value below zero."""
    import keras

    if node is None or isinstance(node, (Fused, Skipped)) or node.is_operation:
        return False
    layer = node.layer
    if node.class_name == "ReLU":
        return not float(layer.negative_slope) and float(layer.threshold) >= 0
    activation = getattr(layer, "activation", None)
    return activation in (keras.activations.relu, keras.activations.relu6)


def _why(reader: Node) -> str:
    """What the reader's ``padding=`` pads with, and why that gives Keras's values."""
    if reader.class_name in _MAX_POOLING:
        return "pads -inf, the same max after a ReLU"
    return "pads the same zeros"


def _text(pads: tuple[int, ...]) -> str:
    return str(pads[0]) if len(set(pads)) == 1 else str(pads)
