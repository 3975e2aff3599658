"""The converter API and its registry.

A converter is a pure function ``(LayerCall) -> Converted``: it reads a Keras layer's config, its
weights (numpy) and the layouts of its inputs, and returns the torch submodules to declare (with
their state tensors and Keras-equivalent initialisation), the ``forward`` steps as source text, the
layouts of its outputs and the notes worth a comment. It never runs generated code and never
touches notebooks. Register one with::

    @converter("Conv1D", "Conv2D", "Conv3D")
    def convert_conv(call: LayerCall) -> Converted: ...

Custom layers register the same way (``kerastorch_magic.converter("MyLayer")``); converters of
keras.ops calls (``Add``, ``GetItem``, ``Einsum``...) with ``converter("Einsum", operation=True)``.
Each registration is a :class:`ConverterSpec` in one of two tables (layers, operations); a name
registered twice raises unless ``override=True``.

Code travels between a converter's parts as a :class:`Fragment` (steps + notes + helpers,
composed with ``+``); :meth:`Converted.from_fragment` turns the whole into the result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import layout
from .errors import ConversionError
from .ir import Node, TensorSpec

LAYER, OPERATION = "layer", "operation"


@dataclass(frozen=True)
class ConverterSpec:
    """One registry entry: a converter function and what the builder needs to know about it.

    ``key`` is a Keras layer class name (``kind`` "layer") or a keras.ops Operation class name
    (``kind`` "operation": ``Add``, ``Einsum``, ``GetItem``...). The two kinds live in separate
    tables: the ``Softmax`` layer and the ``keras.ops.softmax`` call are different things.
    ``channels_first``: the converter computes channels-first in torch (convolutions, pooling...),
    so a model input feeding it is taken channels-first. ``passthrough``: it is indifferent to
    layout (element-wise), so that decision looks through it. ``origin``: the module defining the
    Keras class when the name alone is ambiguous (the custom layers of ``keras.applications``).
    Calling the spec calls the converter.
    """

    key: str
    function: Callable[[LayerCall], Converted]
    kind: str = LAYER
    channels_first: bool = False
    passthrough: bool = False
    origin: str | None = None

    def __call__(self, call: LayerCall) -> Converted:
        return self.function(call)

    @property
    def name(self) -> str:
        """Where the converter lives, for error messages and comparison rows.

        ``converters.conv.convert_conv`` for the built-in ones (relative to the package),
        ``module.function`` for a user's.
        """
        module = getattr(self.function, "__module__", None) or "__main__"
        package = __name__.rsplit(".", 1)[0] + "."
        if module.startswith(package):
            module = module[len(package) :]
        return f"{module}.{getattr(self.function, '__qualname__', repr(self.function))}"


_TABLES: dict[str, dict[str, ConverterSpec]] = {LAYER: {}, OPERATION: {}}
_REGISTRY = _TABLES[LAYER]  # the layer table (older tests patch it directly)


def register(spec: ConverterSpec, override: bool = False) -> ConverterSpec:
    """Add ``spec`` to its table; a key registered already raises ``ValueError`` unless ``override``.

    Re-running the same definition (a notebook cell run twice, a module reloaded: same module and
    function name) replaces the entry silently: that is an edit, not a conflict.
    """
    table = _TABLES[spec.kind]
    existing = table.get(spec.key)
    if existing is not None and not override and existing.name != spec.name:
        raise ValueError(
            f"a converter for the Keras {spec.kind} {spec.key!r} is registered already "
            f"({existing.name}); pass override=True to replace it with {spec.name}"
        )
    table[spec.key] = spec
    return spec


def converter(
    *class_names: str,
    channels_first: bool = False,
    passthrough: bool = False,
    operation: bool = False,
    override: bool = False,
    origin: str | None = None,
):
    """Register the decorated function as the converter of the given Keras classes.

    A converter is a pure function ``(LayerCall) -> Converted``: it reads the layer, its weights
    and input specs from the :class:`LayerCall` and returns submodules with their state, the
    ``forward`` steps as source text, the output specs and notes (DESIGN.md §4). It never runs
    generated code.

    Args:
        *class_names: Keras layer class names (``"Conv2D"``); with ``operation=True``, keras.ops
            Operation class names, the nodes a functional model records for ``keras.ops`` calls
            and operators between layers (``x + 1.0`` is an ``Add``, ``x[:, 2:]`` a ``GetItem``).
        channels_first: the converter computes channels-first in torch (convolutions,
            pooling...), so a model input feeding it is taken channels-first.
        passthrough: the converter is indifferent to layout (element-wise), so that decision
            looks through it.
        operation: the names are keras.ops Operation classes, not layer classes.
        override: replace a converter registered already for one of the names (a built-in
            one by your own).
        origin: the module defining the Keras class, when the name alone is ambiguous.

    Returns:
        A decorator that registers the function (one :class:`ConverterSpec` per name) and
        returns it unchanged.

    Raises:
        ValueError: a name has a converter already (from another function) and ``override``
            is False.

    Example:
        >>> @k2t.converter("L2Normalize", passthrough=True)  # doctest: +SKIP
        ... def convert_l2_normalize(call):
        ...     dim = call.inputs[0].torch_dim(call.layer.axis)
        ...     return Converted([Step(f"F.normalize({{x}}, dim={dim})")], [call.inputs[0]])
    """
    kind = OPERATION if operation else LAYER

    def register_function(function: Callable[[LayerCall], Converted]):
        for class_name in class_names:
            register(ConverterSpec(class_name, function, kind, channels_first, passthrough, origin), override)
        return function

    return register_function


def find(class_name: str, operation: bool = False) -> ConverterSpec | None:
    """The converter registered for a Keras layer class, or for a keras.ops Operation class."""
    return _TABLES[OPERATION if operation else LAYER].get(class_name)


def spec_of(node: Node) -> ConverterSpec | None:
    """The converter that converts ``node`` (``spec_of(node).name`` names it in a report)."""
    return find(node.class_name, node.is_operation)


def supported_layers() -> list[str]:
    """Every Keras layer class name with a converter, sorted (the README's list comes from it)."""
    from . import converters  # noqa: F401  (importing registers the built-in converters)

    return sorted(_TABLES[LAYER])


def supported_operations() -> list[str]:
    """Every keras.ops Operation class name with a converter, sorted (the README lists them)."""
    from . import converters  # noqa: F401  (importing registers the built-in converters)

    return sorted(_TABLES[OPERATION])


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
    # Every operand of ``expr`` has the result's shape and dtype (no broadcasting, no promotion):
    # the result may be computed into an operand no other name reads (``x += shortcut``).
    alike: bool = False


@dataclass
class Fragment:
    """Part of a layer's generated code: ``forward`` steps, the notes they need, the helpers they call.

    The one shape in which converters pass code around: an activation, TF's padding, a recurrent
    layer's dropout each make one, and ``a + b`` runs ``a``'s steps then ``b``'s, keeps both
    notes in that order and merges the helpers (module-level function sources by name; the same
    name always holds the same source). A converter turns the whole into its result with
    :meth:`Converted.from_fragment`.
    """

    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    helpers: dict[str, str] = field(default_factory=dict)  # name -> module-level function source

    def __add__(self, other: Fragment) -> Fragment:
        return Fragment(
            [*self.steps, *other.steps], [*self.notes, *other.notes], {**self.helpers, **other.helpers}
        )


@dataclass
class Converted:
    """A converter's result: a :class:`Fragment`'s steps, notes and helpers, plus what it declares.

    ``outputs`` are the specs of the layer's outputs, ``modules`` the submodules to declare.
    """

    steps: list[Step]
    outputs: list[TensorSpec]
    modules: dict[str, Submodule] = field(default_factory=dict)  # "" is the main submodule
    notes: list[str] = field(default_factory=list)
    helpers: dict[str, str] = field(default_factory=dict)  # name -> module-level function source

    @classmethod
    def from_fragment(
        cls, code: Fragment, outputs: list[TensorSpec], modules: dict[str, Submodule] | None = None
    ) -> Converted:
        return cls(code.steps, outputs, modules or {}, code.notes, code.helpers)


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
    readers: list[Node]  # nodes reading this call's first output
    is_model_output: bool
    # id(Value) -> the nodes reading it, whole graph (see :meth:`readers_of`)
    all_readers: dict[int, list[Node]] = field(default_factory=dict, repr=False)
    model_outputs: set[int] = field(default_factory=set, repr=False)  # id() of the model's outputs
    # Source of a tensor holding a keras.Variable or a concrete array that a keras.ops call takes
    # as an argument, supplied by the builder (see :meth:`operand`).
    constant_source: Callable[[Any], str] | None = field(default=None, repr=False)
    # The builder's generated class for a traced call() that is part of this layer (an RNN's
    # custom cell): ``traced_class(node, input_specs)`` with ``node.subgraph`` set returns its
    # class name, state, whether it has reset_parameters() and a comment (conversion's traced use).
    traced_class: Callable[[Node, list[TensorSpec]], Any] | None = field(default=None, repr=False)
    # The same for a traced parameter-free function (a custom activation):
    # ``traced_function(node, input_specs, docstring)`` returns ``(name, def source, helpers)``
    # for a module-level function, or None when the function holds weights or constants.
    traced_function: Callable[[Node, list[TensorSpec], str], Any] | None = field(default=None, repr=False)
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

    def operand(self, value: Any) -> str:
        """Source text of a non-tensor argument of a keras.ops call, usable inside a ``Step``.

        Python numbers, bools, None, strings, tuples and lists become literals (floats losslessly,
        ``repr``; infinities and NaN as ``math.inf``/``math.nan``); a dtype goes through
        ``ops_common.torch_dtype`` instead. A ``keras.Variable`` (a custom layer's weight) or a concrete
        array (numpy, or a backend tensor: ``ops.convert_to_tensor(...)`` constants) goes to the
        builder's ``constant_source`` callback, which declares what holds it and returns its
        expression: a Variable becomes an ``nn.Parameter`` (a buffer when not trainable) named
        after it, in Keras's layout; an array becomes a registered buffer with the array's values
        as given (converters re-lay an array in numpy before passing it, e.g. to broadcast it
        against a channels-first tensor). Braces are escaped for ``Step`` templates.
        """
        import keras

        if value is None or isinstance(value, (bool, np.bool_)):
            return repr(None if value is None else bool(value))
        if isinstance(value, (int, np.integer)):
            return repr(int(value))
        if isinstance(value, (float, np.floating)):
            number = float(value)
            if np.isnan(number):
                return "math.nan"
            if np.isinf(number):
                return "math.inf" if number > 0 else "-math.inf"
            return repr(number)
        if isinstance(value, str):
            return repr(value).replace("{", "{{").replace("}", "}}")
        if isinstance(value, (tuple, list)):
            items = [self.operand(item) for item in value]
            if isinstance(value, tuple):
                return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"
            return f"[{', '.join(items)}]"
        if isinstance(value, keras.KerasTensor):
            raise self.unsupported("a symbolic tensor where a constant was expected (converter bug)")
        if isinstance(value, keras.Variable) or hasattr(value, "shape"):
            if self.constant_source is None:
                raise self.unsupported(
                    f"a keras.ops call with a constant {type(value).__name__} of shape "
                    f"{tuple(value.shape)}: this conversion cannot hold constants"
                )
            return self.constant_source(value).replace("{", "{{").replace("}", "}}")
        raise self.unsupported(f"a keras.ops call with an argument of type {type(value).__name__}")

    def readers_of(self, value) -> list[Node]:
        """The nodes reading ``value`` anywhere in the graph (to look past a layer's readers)."""
        return self.all_readers.get(id(value), [])

    def is_output(self, value) -> bool:
        return id(value) in self.model_outputs

    def final_readers(self, transparent: Callable[[Node], bool]) -> list[Node] | None:
        """The nodes reading this call's output, looking through those ``transparent`` says to.

        None when the output, or a looked-through node's output, is a model output or unread:
        then no reader alone decides how the value is used.
        """
        if self.is_model_output or not self.readers:
            return None
        pending, seen, final = list(self.readers), set(), []
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
        kind = "keras.ops call" if self.node.is_operation else "layer"
        return f"{kind} {self.node.qualified_name!r} ({self.class_name})"

    def unsupported(self, why: str) -> ConversionError:
        """An error naming this layer and the option it cannot convert."""
        return ConversionError(f"{self.describe()}: {why}", [(self.node.qualified_name, self.class_name)])
