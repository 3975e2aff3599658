"""Layout helpers that every converter family shares (source-text formatters live in :mod:`._source`).

One definition each, so that no family module imports another one for them: the output spec of
a layer that keeps its input's layout, the layout several inputs are merged in, and whether Keras
attached a mask to an input.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from ..ir import TensorSpec
from ..registry import LayerCall


def same_layout(call: LayerCall, spec: TensorSpec | None = None) -> TensorSpec:
    """Output spec of a layer that keeps its input's shape and layout (and folded flatten order).

    Element-wise layers (and softmax-like ones over the flattened axis, which permute along with
    it) may sit between a Flatten and the Dense that absorbs its order. ``spec`` defaults to the
    first input's.
    """
    spec = spec or call.inputs[0]
    out = call.output_spec(spec.perm)
    return replace(out, flat_order=spec.flat_order) if spec.flat_order is not None else out


def common_perm(specs: list[TensorSpec]) -> tuple[int, ...]:
    """The layout most of the highest-rank inputs already have (the first of them on a tie).

    Re-laying the others to it costs the fewest permutes; the merging layers and the keras.ops
    element-wise converters (ops_math) choose their output layout this way.
    """
    rank = max(spec.rank for spec in specs)
    perms = [spec.perm for spec in specs if spec.rank == rank]
    counts = Counter(perms)
    best = max(counts.values())
    return next(perm for perm in perms if counts[perm] == best)


def has_keras_mask(call: LayerCall, index: int = 0) -> bool:
    """Whether input ``index`` carries a Keras mask (Embedding(mask_zero=True), Masking)."""
    tensors = getattr(call.node.keras_node, "input_tensors", None) or []
    return index < len(tensors) and getattr(tensors[index], "_keras_mask", None) is not None
