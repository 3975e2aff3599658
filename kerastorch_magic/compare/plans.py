"""How PyTorch outputs reach the comparison rows: one :class:`Plan` per kind of PyTorch side.

* :class:`ConversionPlan`: the generated ``forward`` of a :class:`~kerastorch_magic.Conversion`,
  traced (``conversion.build_traced``): it calls a tap after every Keras layer's output, and the
  trace specs say how each torch tensor lines up with Keras's.
* :class:`ModulePlan`: any ``nn.Module``, read through forward hooks on the submodules a
  ``mapping`` names (or that are named like the Keras layers) and through its outputs.

The runner (:mod:`.run`) only talks to the :class:`Plan` protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from .. import devices, layout, registry, traced
from ..ir import Graph, Node
from . import inputs as input_data
from .mapping import TapSpec, align_auto, candidate_names, count_like_keras, fused_activation, pick, unalign

# tap(row index, torch tensor) -> a replacement for the tensor (None keeps it): what a plan's
# forward calls for every row it reaches.
Tap = Callable[[int, object], object]


@dataclass
class Row:
    """One Keras layer output: the unit of comparison."""

    index: int
    node: Node
    output_index: int
    torch_module: str = ""
    torch_params: int | None = None
    params_note: str = ""  # why the PyTorch count leaves parameters out (a zero second bias)
    note: str = ""
    converter: str = ""
    # Random at inference (a traced layer drawing keras.random): the runner marks the row
    # ``random`` and feeds the next layers Keras's own output instead of comparing values.
    random: bool = False

    @property
    def output(self) -> str:
        """Which output of a layer with several this row is (``""`` for a single output)."""
        return output_label(self.node, self.output_index)


def output_label(node: Node, index: int) -> str:
    """``"sequence"``, ``"state h"``, ``"backward state c"`` for a recurrent layer returning its
    states (Keras's order: the output, then each direction's states), else ``"output 2 of 3"``."""
    count = len(node.outputs)
    if count == 1:
        return ""
    layer = node.layer
    if getattr(layer, "return_state", False):
        if index == 0:
            return "sequence" if getattr(layer, "return_sequences", False) else "last step"
        directions = ("forward ", "backward ") if node.class_name == "Bidirectional" else ("",)
        per_direction = (count - 1) // len(directions)
        names = {1: ["state"], 2: ["state h", "state c"]}.get(per_direction)
        position = index - 1
        prefix = directions[position // per_direction] if per_direction else ""
        if names is not None:
            return prefix + names[position % per_direction]
        return f"{prefix}state {position % per_direction}"
    return f"output {index} of {count}"


class Plan(Protocol):
    rows: list[Row]
    device: torch.device
    input_format: str

    def wanted(self) -> set[int]:
        """The rows the PyTorch side can produce (the Keras stepper keeps those values)."""

    def torch_inputs(self, arrays: list[np.ndarray]) -> list[torch.Tensor]:
        """The Keras-layout input arrays as the PyTorch side takes them."""

    def run(self, tap: Tap, inputs: list[torch.Tensor]) -> None:
        """One forward pass calling ``tap`` for each row reached, in forward order."""

    def align(self, index: int, tensor, keras_shape: tuple, shapes: dict) -> torch.Tensor | None:
        """Row ``index``'s torch output in Keras's layout (None when it cannot be lined up)."""

    def force(self, index: int, tensor, keras_tensor: torch.Tensor) -> tuple[object, str]:
        """Isolation: make the forward continue from Keras's values; (replacement, why not)."""

    def note(self, index: int) -> str:
        """What to say about how row ``index`` was compared ("" for nothing)."""

    def missing(self, index: int) -> str:
        """Why a wanted row was never reached although the forward ran through."""


def _same_layer(ours: Node, theirs: Node) -> bool:
    """Whether two graphs' nodes are the same layer's call.

    A traced call() that creates a layer each time it runs (keras-io's semantic image clustering:
    ``layers.Concatenate(axis=0)(augmented)``) has a new instance, and name, in every trace: a
    weightless layer of the same class stands for it.
    """
    if ours.layer is theirs.layer:
        return True
    return type(ours.layer) is type(theirs.layer) and not getattr(ours.layer, "weights", None)


def _conversion_rows(conversion, graph: Graph) -> list[Row]:
    order: list[Node] = []
    seen: set[int] = set()
    for trace in conversion.traces:
        if id(trace.node) not in seen:
            seen.add(id(trace.node))
            order.append(trace.node)
    if len(order) != len(graph.nodes) or not all(map(_same_layer, order, graph.nodes)):
        raise ValueError(
            f"this conversion ({conversion.class_name} of Keras model {conversion.model_name!r}) was not "
            "made from this model: convert it again"
        )
    ours = {id(a): b for a, b in zip(order, graph.nodes)}
    rows = []
    for trace in conversion.traces:
        node = ours[id(trace.node)]
        rows.append(
            Row(
                trace.index,
                node,
                trace.output_index,
                ", ".join(trace.modules),
                note=trace.fused_into,  # a layer fused into a later one: skipped, compared there
                converter=_converter_name(node),
                random=trace.random,
            )
        )
    return rows


def keras_params(node: Node) -> int:
    """The Keras layer's parameter count (0 for an unbuilt layer or an operation)."""
    built = getattr(node.layer, "built", False) and hasattr(node.layer, "count_params")
    return int(node.layer.count_params()) if built else 0


def _converter_name(node: Node) -> str:
    """``converters.conv.convert_conv``: the converter that wrote this layer's code."""
    spec = registry.spec_of(node)
    return spec.name if spec is not None else ""


class ConversionPlan:
    """Taps of the generated ``forward``: one per Keras layer output, layouts from the specs."""

    def __init__(self, conversion, graph: Graph, device: torch.device):
        self.conversion, self.device, self.input_format = conversion, device, conversion.input_format
        self.rows = _conversion_rows(conversion, graph)
        self.specs = [trace.spec for trace in conversion.traces]

    def wanted(self) -> set[int]:
        """Every row but those of layers fused into a later one (they have no output of their own)."""
        return {i for i, trace in enumerate(self.conversion.traces) if not trace.fused_into}

    def torch_inputs(self, arrays):
        return [
            input_data.to_torch(np.transpose(a, spec.perm), self.device)
            for spec, a in zip(self.conversion.inputs, arrays)
        ]

    def run(self, tap: Tap, inputs) -> None:
        module = self.conversion.build_traced(tap, device=self.device)  # isolation writes in place
        for row in self.rows:
            trace = self.conversion.traces[row.index]
            if trace.output_index == 0 and not trace.fused_into:
                modules = [getattr(module, name) for name in trace.modules]
                row.torch_params, row.params_note = count_like_keras(modules, keras_params(row.node))
        with torch.no_grad():
            module(*inputs)

    def align(self, index, tensor, keras_shape, shapes):
        """The generated forward's tensor re-laid in Keras's layout (a view when possible)."""
        spec = self.specs[index]
        if spec.flat_order is not None:
            inverse = torch.as_tensor(np.argsort(spec.flat_order), device=tensor.device)
            tensor = tensor.index_select(1, inverse)
        if not layout.is_identity(spec.perm):
            tensor = tensor.permute(*np.argsort(spec.perm).tolist())
        return tensor

    def force(self, index, tensor, keras_tensor):
        """Overwrite the generated forward's tensor with Keras's values (in place)."""
        spec = self.specs[index]
        target = keras_tensor.permute(*spec.perm) if not layout.is_identity(spec.perm) else keras_tensor
        if spec.flat_order is not None:
            target = target.index_select(
                1, torch.as_tensor(np.asarray(spec.flat_order), device=target.device)
            )
        try:
            tensor.copy_(target)
        except RuntimeError as error:  # e.g. a broadcast view that cannot be written
            return None, f"not isolated ({error})"
        return None, ""

    def note(self, index: int) -> str:
        return ""

    def missing(self, index: int) -> str:
        return "no PyTorch output seen for this layer"


class ModulePlan:
    """Forward hooks on a user's module, rows mapped by ``mapping`` (or matching names)."""

    def __init__(
        self, module: torch.nn.Module, graph: Graph, mapping, device: torch.device, input_format: str
    ):
        self.module, self.graph, self.device, self.input_format = module, graph, device, input_format
        self.rows = [
            Row(0, node, index, random=traced.is_random(node))
            for node in graph.nodes
            for index in range(len(node.outputs))
        ]
        for position, row in enumerate(self.rows):
            row.index = position
        self.taps: dict[int, TapSpec] = {}  # row index -> how to read it
        named = dict(module.named_modules())
        if mapping:
            self._map(mapping, named)
        else:
            self._match_names(named)
        outputs = {id(v): i for i, v in enumerate(graph.outputs)}
        for row in self.rows:
            position = outputs.get(id(row.node.outputs[row.output_index]))
            if position is not None and row.index not in self.taps:
                self.taps[row.index] = TapSpec("", output=position)
        self.output_rows: dict[int, int] = {}  # row index -> position in the module's outputs
        for index, tap in self.taps.items():
            if not tap.module:
                row = self.rows[index]
                position = outputs.get(id(row.node.outputs[row.output_index]), 0)
                self.output_rows[index] = tap.output if tap.output is not None else position
        for row in self.rows:
            tap = self.taps.get(row.index)
            if tap is None:
                row.torch_module = ""
                row.note = "not mapped to a PyTorch submodule"
                continue
            row.torch_module = tap.module if tap.module else "(module output)"
            if tap.module and row.output_index == 0:
                row.torch_params, row.params_note = count_like_keras(
                    [named[tap.module]], keras_params(row.node)
                )
            tap.activation_fn, tap.activation_note = fused_activation(row.node, tap, named.get(tap.module))

    def _map(self, mapping: dict, named: dict) -> None:
        by_name: dict[str, list[Row]] = {}
        for row in self.rows:
            for name in {row.node.qualified_name, row.node.layer.name}:
                by_name.setdefault(name, []).append(row)
        unknown = []
        for key, value in mapping.items():
            rows = by_name.get(key)
            if rows is None:
                unknown.append(key)
                continue
            if isinstance(value, torch.nn.Module):
                value = next((n for n, m in named.items() if m is value), value)
            tap = TapSpec.parse(value)
            if tap.module not in named:
                raise ValueError(
                    f"mapping[{key!r}]: the module has no submodule {tap.module!r} (see named_modules())"
                )
            for row in rows:
                self.taps[row.index] = tap
        if unknown:
            layers = sorted({row.node.qualified_name for row in self.rows})
            raise ValueError(f"mapping names unknown Keras layer(s) {unknown}; the model has {layers}")

    def _match_names(self, named: dict) -> None:
        for row in self.rows:
            if row.output_index:
                continue
            for candidate in candidate_names(row.node):
                if candidate and candidate in named:
                    self.taps[row.index] = TapSpec(candidate)
                    break

    def wanted(self) -> set[int]:
        return set(self.taps)

    def torch_inputs(self, arrays):
        tensors = []
        for array in arrays:
            if self.input_format == "channels_first" and array.ndim >= 3 and array.dtype.kind == "f":
                array = np.transpose(array, layout.channels_first(array.ndim))
            tensors.append(input_data.to_torch(array, self.device))
        return tensors

    def run(self, tap: Tap, inputs) -> None:
        module = self.module
        by_module: dict[str, dict[int, list[int]]] = {}  # submodule -> {id(node): row indices}
        for index in sorted(self.taps):
            spec = self.taps[index]
            if spec.module:
                by_module.setdefault(spec.module, {}).setdefault(id(self.rows[index].node), []).append(index)
        named = dict(module.named_modules())
        handles = []
        original_device = devices.of_module(module)
        was_training = module.training

        def hook_for(calls: list[list[int]]):
            count = [0]

            def hook(_module, _args, output):
                # The k-th call of a submodule stands for the k-th call of its Keras layer.
                replacement = None
                if count[0] < len(calls):
                    rows = calls[count[0]]
                    for row_index in rows:
                        forced = tap(row_index, pick(output, self.rows[row_index].output_index))
                        if len(rows) == 1 and isinstance(output, torch.Tensor):
                            replacement = forced
                count[0] += 1
                return replacement  # None keeps the module's own output

            return hook

        try:
            if original_device != self.device:
                module.to(self.device)
            module.eval()
            for name, calls in by_module.items():
                handles.append(named[name].register_forward_hook(hook_for(list(calls.values()))))
            with torch.no_grad():
                result = module(*inputs)
            outputs = list(result) if isinstance(result, (tuple, list)) else [result]
            for row_index, position in sorted(self.output_rows.items()):
                if position < len(outputs):
                    tap(row_index, outputs[position])
        finally:
            for handle in handles:
                handle.remove()
            module.train(was_training)
            if original_device != self.device:
                module.to(original_device)

    def align(self, index, tensor, keras_shape, shapes):
        spec = self.taps[index]
        if spec.transform is not None:
            tensor = spec.transform(tensor)
        aligned = align_auto(tensor, keras_shape, spec.layout, self.rows[index].node, shapes)
        if aligned is not None and spec.activation_fn is not None:
            aligned = spec.activation_fn(aligned)
        return aligned

    def force(self, index, tensor, keras_tensor):
        """A replacement output for the hooked submodule: Keras's values in the module's layout."""
        spec = self.taps[index]
        if not spec.module:
            return None, ""  # the module's own output: nothing runs after it
        if spec.transform is not None or spec.activation_fn is not None:
            return None, "not isolated: compared after a transform, which cannot be undone"
        if not isinstance(tensor, torch.Tensor):
            return None, "not isolated: the submodule's output is not a tensor"
        target = unalign(tensor, keras_tensor, spec.layout)
        if target is None:
            return None, "not isolated: layout unknown"
        return target.to(tensor.dtype).contiguous(), ""

    def note(self, index: int) -> str:
        return self.taps[index].activation_note

    def missing(self, index: int) -> str:
        module = self.taps[index].module
        if module:
            return f"submodule {module!r} did not run in forward"
        return "no PyTorch output seen for this layer"
