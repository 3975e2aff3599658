"""The converter API and its one registry.

A converter is a pure function ``(LayerCall) -> Converted``: it reads a Keras layer's config, its
weights (numpy) and the layouts of its inputs, and returns the torch submodules to declare (with
their state tensors and Keras-equivalent initialisation), the ``forward`` steps as source text, the
layouts of its outputs and the notes worth a comment. It never runs generated code and never
touches notebooks. Register one with::

    @converter("Conv1D", "Conv2D", "Conv3D")
    def convert_conv(call: LayerCall) -> Converted: ...

Custom layers register the same way (``kerastorch_magic.converter("MyLayer")``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import layout
from .ir import Node, TensorSpec

_REGISTRY: dict[str, Callable[[LayerCall], Converted]] = {}


class ConversionError(Exception):
    """A model that cannot be converted; the message names every offending layer."""

    def __init__(self, message: str, layers: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.layers = layers or []  # (layer name, class name)


def converter(
    *class_names: str, channels_first: bool = False, passthrough: bool = False, operations: bool = False
):
    """Register the decorated function as the converter of the given Keras layer classes.

    ``channels_first``: the layer computes channels-first in torch (convolutions, pooling...), so a
    model input feeding it is taken channels-first. ``passthrough``: the layer is indifferent to
    layout (element-wise), so that decision looks through it. ``operations``: the converter also
    handles the ``keras.ops`` calls of the same class name that a functional model records as nodes
    (``x + 3.0`` is an ``Add`` operation); other converters never see those.
    """

    def register(function: Callable[[LayerCall], Converted]):
        function.channels_first = channels_first
        function.passthrough = passthrough
        function.operations = operations
        for class_name in class_names:
            _REGISTRY[class_name] = function
        return function

    return register


def find(class_name: str, operation: bool = False) -> Callable[[LayerCall], Converted] | None:
    """The converter for a layer class, or for a keras.ops call (``operation``) if it takes those."""
    function = _REGISTRY.get(class_name)
    if operation and function is not None and not getattr(function, "operations", False):
        return None
    return function


def supported_layers() -> list[str]:
    """Every Keras class name with a converter, sorted (the README's list is generated from it)."""
    from . import converters  # noqa: F401  (importing registers the built-in converters)

    return sorted(_REGISTRY)


@dataclass
class Submodule:
    """A torch submodule to declare in ``__init__``.

    ``ctor`` is source such as ``nn.Conv2d(3, 32, kernel_size=3)``; ``state`` maps the module's
    state_dict keys to arrays; ``init`` are ``reset_parameters`` lines where ``{m}`` stands for the
    module (``nn.init.zeros_({m}.bias)``); ``comment`` goes above the declaration.
    """

    ctor: str
    state: dict[str, np.ndarray] = field(default_factory=dict)
    init: list[str] = field(default_factory=list)
    comment: str | None = None


@dataclass
class Step:
    """One ``forward`` statement: ``out = expr``, with an optional trailing comment.

    In ``expr``, ``{x}`` is the step's input (the layer input for the first step, the previous
    step's result after), ``{x0}``, ``{x1}``... the layer's inputs, ``{m}`` the main submodule and
    ``{m_key}`` the submodule declared under ``key``.
    """

    expr: str
    comment: str | None = None


@dataclass
class Converted:
    steps: list[Step]
    outputs: list[TensorSpec]
    modules: dict[str, Submodule] = field(default_factory=dict)  # "" is the main submodule
    notes: list[str] = field(default_factory=list)
    helpers: dict[str, str] = field(default_factory=dict)  # name -> module-level function source


def argument_inputs(node: Node, name: str) -> list[int]:
    """See :meth:`LayerCall.argument_inputs`."""
    import inspect

    import keras

    arguments = getattr(node.keras_node, "arguments", None)
    if arguments is None:
        return []
    value = arguments.kwargs.get(name)
    if value is None and arguments.args:
        try:
            bound = inspect.signature(node.layer.call).bind_partial(*arguments.args)
        except (TypeError, ValueError):
            bound = None
        if bound is not None:
            value = bound.arguments.get(name)
    if value is None:
        return []
    position = {id(t): i for i, t in enumerate(arguments.keras_tensors)}
    return [
        position[id(t)]
        for t in keras.tree.flatten(value)
        if isinstance(t, keras.KerasTensor) and id(t) in position
    ]


@dataclass
class LayerCall:
    """Everything a converter may read about one call of one Keras layer."""

    node: Node
    inputs: list[TensorSpec]
    input_format: str  # "channels_first" | "channels_last": the user's choice for the model
    consumers: list[Node]  # nodes reading this call's first output
    is_model_output: bool
    readers: dict[int, list[Node]] = field(default_factory=dict, repr=False)  # id(Value) -> readers
    model_outputs: set[int] = field(default_factory=set, repr=False)  # id() of the model's outputs
    _config: dict | None = None

    def argument_inputs(self, name: str) -> list[int]:
        """Indices into ``inputs`` of the tensors passed as argument ``name`` of the layer's call.

        Keras passes more than the main input as tensors: ``mask=`` (from an
        ``Embedding(mask_zero=True)`` or ``Masking`` upstream, added by Keras itself),
        ``initial_state=``, an attention layer's ``value=``/``attention_mask=``... All of them are
        inputs of the node, in Keras's flattening order; this finds which ones belong to ``name``
        (given by keyword or positionally). [] when the argument was not passed or holds no tensor.
        """
        return argument_inputs(self.node, name)

    def readers_of(self, value) -> list[Node]:
        """The nodes reading ``value`` anywhere in the graph (to look past a layer's readers)."""
        return self.readers.get(id(value), [])

    def is_output(self, value) -> bool:
        return id(value) in self.model_outputs

    def final_readers(self, transparent: Callable[[Node], bool]) -> list[Node] | None:
        """The nodes reading this call's output, looking through those ``transparent`` says to.

        None when the output, or a looked-through node's output, is a model output or unread:
        then no reader alone decides how the value is used.
        """
        if self.is_model_output or not self.consumers:
            return None
        pending, seen, final = list(self.consumers), set(), []
        while pending:
            reader = pending.pop()
            if id(reader) in seen:
                continue
            seen.add(id(reader))
            if not transparent(reader):
                final.append(reader)
                continue
            value = reader.outputs[0]
            following = self.readers_of(value)
            if self.is_output(value) or not following:
                return None
            pending.extend(following)
        return final

    @property
    def layer(self) -> Any:
        return self.node.layer

    @property
    def class_name(self) -> str:
        return self.node.class_name

    @property
    def config(self) -> dict:
        if self._config is None:
            self._config = self.layer.get_config()
        return self._config

    @property
    def weights(self) -> dict[str, np.ndarray]:
        """The layer's weights by short name (``kernel``, ``bias``, ``gamma``...)."""
        return {w.name: np.asarray(w.numpy() if hasattr(w, "numpy") else w) for w in self.layer.weights}

    @property
    def output_shapes(self) -> list[tuple]:
        """Keras's own output shapes of this call (batch dimension included)."""
        return [tuple(v.shape) for v in self.node.outputs]

    def output_spec(self, perm: tuple[int, ...], index: int = 0) -> TensorSpec:
        """Spec of output ``index`` laid out as ``perm``."""
        value = self.node.outputs[index]
        return TensorSpec(tuple(value.shape), perm, value.dtype)

    def input_as(self, index: int, wanted: tuple[int, ...]) -> str:
        """Expression of input ``index`` re-laid as ``wanted`` (the bare placeholder if it is)."""
        spec = self.inputs[index]
        if spec.flat_order is not None:
            raise self.unsupported("its input is a flatten whose order was folded; cannot re-lay it")
        placeholder = "{x}" if len(self.inputs) == 1 else "{x" + str(index) + "}"
        return layout.permute_expression(placeholder, spec.perm, wanted) or placeholder

    def relayout(self, wanted: tuple[int, ...]) -> list[Step]:
        """The step bringing the single input to layout ``wanted``: [] if it already is."""
        expr = self.input_as(0, wanted)
        if expr == "{x}":
            return []
        return [Step(expr, f"{self.class_name} works {layout.describe(wanted)}")]

    def channels_first_perm(self, rank: int | None = None) -> tuple[int, ...]:
        """The torch layout of a channels-first op's input (for Keras ``data_format``)."""
        rank = rank or self.inputs[0].rank
        if self.config.get("data_format", "channels_last") == "channels_first":
            return layout.identity(rank)
        return layout.channels_first(rank)

    def describe(self) -> str:
        return f"layer {self.node.qualified_name!r} ({self.class_name})"

    def unsupported(self, why: str) -> ConversionError:
        """An error naming this layer and the option it cannot convert."""
        return ConversionError(f"{self.describe()}: {why}", [(self.node.qualified_name, self.class_name)])
