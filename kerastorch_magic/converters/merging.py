"""Merging layers: Add."""

from __future__ import annotations

from ..registry import Converted, LayerCall, Step, converter


@converter("Add", passthrough=True)
def convert_add(call: LayerCall) -> Converted:
    perm = call.inputs[0].perm
    terms = [call.input_as(i, perm) for i in range(len(call.inputs))]
    return Converted([Step(" + ".join(terms))], [call.output_spec(perm)])
