"""``convert(model)``: the public entry point tying reading, converters and codegen together."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from . import codegen, layout, naming, registry
from .graph import read_model
from .ir import Graph, Node, TensorSpec
from .layout import INPUT_FORMATS
from .registry import ConversionError, Converted, LayerCall


@dataclass(frozen=True)
class Note:
    """A non-obvious mapping of one layer (also written as a comment in the code)."""

    layer: str
    text: str

    def __str__(self) -> str:
        return f"{self.layer}: {self.text}"


@dataclass(frozen=True)
class LayerTrace:
    """Where one Keras layer call's output lives in the generated ``forward``.

    ``index`` is the argument the traced forward passes to its tap; ``spec`` relates the torch
    tensor to the Keras one (``spec.to_torch_layout(keras_array)`` lines them up).
    """

    index: int
    node: Node
    output_index: int
    spec: TensorSpec
    variable: str
    modules: tuple[str, ...]  # attribute names of the submodules this call used

    @property
    def keras_name(self) -> str:
        return self.node.qualified_name


@dataclass
class Conversion:
    code: str
    class_name: str
    state_dict: dict
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    notes: list[Note]
    traces: list[LayerTrace]
    model_name: str
    input_format: str
    _source: codegen.ClassSource = field(repr=False)

    def build(self, device=None):
        """The generated class, instantiated in eval mode with the Keras weights loaded."""
        return self._instantiate(self.code, device)

    def build_traced(self, tap, device=None):
        """Like :meth:`build`, but ``forward`` calls ``tap(trace_index, tensor)`` after each layer.

        The module is built on the meta device and takes this conversion's tensors as its own
        (``assign=True``): no second copy of the weights while comparing. Not for training: its
        parameters are ``self.state_dict``'s tensors.
        """
        module = self._instantiate(codegen.render(self._source, trace=True), device, share=True)
        module._tap = tap
        return module

    def _instantiate(self, code: str, device, share: bool = False):
        import torch

        namespace: dict = {"__name__": f"kerastorch_magic_generated_{self.class_name}"}
        exec(compile(code, f"<generated {self.class_name}>", "exec"), namespace)  # noqa: S102
        if share:
            with torch.device("meta"):
                module = namespace[self.class_name]()
        else:
            module = namespace[self.class_name]()
        module.load_state_dict(self.state_dict, strict=True, assign=share)
        if device is not None:
            module = module.to(device)
        return module.eval()

    def __repr__(self) -> str:
        return (
            f"<Conversion {self.class_name} of Keras model {self.model_name!r}: "
            f"{len(self.traces)} layer outputs, {len(self.state_dict)} tensors, {len(self.notes)} notes>"
        )


def convert(model, class_name: str = "Net", input_format: str = "channels_first") -> Conversion:
    """Convert a built Keras model to PyTorch source plus a matching ``state_dict``.

    Raises :class:`ConversionError` naming every layer that cannot be converted.
    """
    from . import converters  # noqa: F401  (registers the built-in converters)

    if input_format not in INPUT_FORMATS:
        raise ValueError(f"input_format must be one of {INPUT_FORMATS}, not {input_format!r}")
    class_name = naming.class_identifier(class_name)
    graph = read_model(model)
    _check_supported(graph)
    return _Builder(graph, model, class_name, input_format).build()


def _module_attributes() -> set[str]:
    """Names a submodule attribute must not shadow (``training``, ``forward``, ``to``...)."""
    import torch

    return set(dir(torch.nn.Module)) | {"reset_parameters"}


def _check_supported(graph: Graph) -> None:
    missing: dict[int, Node] = {}
    for node in graph.nodes:
        if registry.find(node.class_name, node.is_operation) is None:
            missing.setdefault(id(node.layer), node)
    if not missing:
        return
    lines = []
    for node in missing.values():
        if node.class_name == "Lambda":
            why = "holds arbitrary Python; rewrite it as a layer and register a converter"
        elif node.is_operation:
            why = "a keras.ops call inside the model; wrap it in a layer with a converter"
        else:
            why = "no converter registered (kerastorch_magic.converter can add one)"
        lines.append(f"  - {node.qualified_name!r} ({node.class_name}): {why}")
    raise ConversionError(
        f"cannot convert Keras model {graph.name!r}: {len(missing)} unsupported layer(s):\n"
        + "\n".join(lines),
        [(n.qualified_name, n.class_name) for n in missing.values()],
    )


class _Builder:
    """One conversion's mutable state: names handed out, declarations, statements, state."""

    def __init__(self, graph: Graph, model, class_name: str, input_format: str):
        self.graph, self.model = graph, model
        self.class_name, self.input_format = class_name, input_format
        self.consumers = graph.consumers()
        self.output_ids = {id(v) for v in graph.outputs}
        self.attrs = naming.Namespace(_module_attributes())
        self.variables = naming.Namespace()
        self.declared: dict[int, dict[str, str]] = {}  # id(layer) -> {module key: attribute}
        self.declarations: list[codegen.Declaration] = []
        self.statements: list = []
        self.helpers: dict[str, str] = {}
        self.state: dict[str, np.ndarray] = {}
        self.notes: list[Note] = []
        self.traces: list[LayerTrace] = []
        self.specs: dict[int, TensorSpec] = {}
        self.vars: dict[int, str] = {}

    # -- inputs ---------------------------------------------------------------------------------
    def _input_perm(self, value) -> tuple[int, ...]:
        rank = len(value.shape)
        if self.input_format == "channels_last" or rank < 3:
            return layout.identity(rank)
        return layout.channels_first(rank) if self._feeds_channels_first(value) else layout.identity(rank)

    def _feeds_channels_first(self, value) -> bool:
        """Whether the value reaches a channels-first layer through layout-agnostic layers only."""
        queue, seen = deque([value]), set()
        while queue:
            current = queue.popleft()
            for node in self.consumers.get(id(current), []):
                function = registry.find(node.class_name)
                if getattr(function, "channels_first", False):
                    # A Keras layer that is itself channels-first already gets torch's layout.
                    return getattr(node.layer, "data_format", "channels_last") != "channels_first"
                if getattr(function, "passthrough", False) and id(node) not in seen:
                    seen.add(id(node))
                    queue.extend(node.outputs)
        return False

    # -- main loop ------------------------------------------------------------------------------
    def build(self) -> Conversion:
        single = len(self.graph.inputs) == 1
        forward_args, inputs = [], []
        for value in self.graph.inputs:
            var = self.variables.claim("x" if single else value.name, "input")
            spec = TensorSpec(value.shape, self._input_perm(value), value.dtype, value.name)
            self.specs[id(value)], self.vars[id(value)] = spec, var
            forward_args.append(var)
            inputs.append(spec)
        errors: list[ConversionError] = []
        for node in self.graph.nodes:
            try:
                self._convert_node(node)
            except ConversionError as error:
                errors.append(error)
        if errors:
            layers = [layer for e in errors for layer in e.layers]
            raise ConversionError(
                f"cannot convert Keras model {self.graph.name!r}:\n" + "\n".join(f"  - {e}" for e in errors),
                layers,
            )
        outputs, returns = self._outputs()
        source = codegen.ClassSource(
            class_name=self.class_name,
            header=self._header(),
            docstring=self._docstring(inputs, outputs),
            forward_args=forward_args,
            declarations=self.declarations,
            statements=self.statements,
            returns=returns,
            helpers=self.helpers,
        )
        import torch

        state_dict = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.state.items()}
        return Conversion(
            code=codegen.render(source),
            class_name=self.class_name,
            state_dict=state_dict,
            inputs=inputs,
            outputs=outputs,
            notes=self.notes,
            traces=self.traces,
            model_name=self.graph.name,
            input_format=self.input_format,
            _source=source,
        )

    def _convert_node(self, node: Node) -> None:
        if any(id(v) not in self.specs for v in node.inputs):
            return  # fed by a layer that failed to convert: that error is already recorded
        first_readers = self.consumers.get(id(node.outputs[0]), [])
        call = LayerCall(
            node=node,
            inputs=[self.specs[id(v)] for v in node.inputs],
            input_format=self.input_format,
            consumers=first_readers,
            is_model_output=id(node.outputs[0]) in self.output_ids,
            readers=self.consumers,
            model_outputs=self.output_ids,
        )
        result: Converted = registry.find(node.class_name, node.is_operation)(call)
        if len(result.outputs) != len(node.outputs):
            raise call.unsupported(
                f"converter returned {len(result.outputs)} outputs, Keras has {len(node.outputs)}"
            )
        modules = self._declare(node, result)
        for text in result.notes:
            self.notes.append(Note(node.qualified_name, text))
        self.helpers.update(result.helpers)
        in_vars = [self.vars[id(v)] for v in node.inputs]
        out_vars = self._output_variables(node, in_vars)
        fields = {f"x{i}": var for i, var in enumerate(in_vars)}
        fields.update({"m" if key == "" else f"m_{key}": f"self.{attr}" for key, attr in modules.items()})
        current = in_vars[0] if in_vars else ""
        target = ", ".join(out_vars)
        for position, step in enumerate(result.steps):
            last = position == len(result.steps) - 1
            step_target = target if last else out_vars[0]
            expr = step.expr.format(x=current, **fields)
            comment = step.comment
            if position == 0 and result.notes and not modules:  # no declaration to carry them
                comment = "\n".join([*result.notes, *([comment] if comment else [])])
            self.statements.append(codegen.Statement(step_target, expr, comment))
            current = out_vars[0]
        if not result.steps:  # identity at inference: the output is the input tensor itself
            out_vars = [in_vars[0]] * len(node.outputs)
        for index, (value, spec, var) in enumerate(zip(node.outputs, result.outputs, out_vars)):
            self.specs[id(value)], self.vars[id(value)] = spec, var
            trace = LayerTrace(len(self.traces), node, index, spec, var, tuple(modules.values()))
            self.traces.append(trace)
            self.statements.append((trace.index, var))

    def _output_variables(self, node: Node, in_vars: list[str]) -> list[str]:
        """Reuse the input's variable along a plain chain; name branches after their layer."""
        if len(node.inputs) == 1 and len(node.outputs) == 1:
            source = node.inputs[0]
            if len(self.consumers.get(id(source), [])) == 1 and id(source) not in self.output_ids:
                return [in_vars[0]]
        base = naming.identifier(naming.stable(node.layer.name, node.class_name))
        return [self.variables.claim(base if i == 0 else f"{base}_{i}") for i in range(len(node.outputs))]

    def _declare(self, node: Node, result: Converted) -> dict[str, str]:
        known = self.declared.get(id(node.layer))
        if known is not None:  # a shared layer: its submodules exist already
            return known
        base = naming.identifier(node.stable_name)
        modules: dict[str, str] = {}
        notes = list(result.notes)  # written once, above the layer's first declaration
        for key, submodule in result.modules.items():
            attr = self.attrs.claim(base if key == "" else f"{base}_{key}")
            modules[key] = attr
            comment = "\n".join([*notes, *([submodule.comment] if submodule.comment else [])])
            notes = []
            self.declarations.append(
                codegen.Declaration(attr, submodule.ctor, comment or None, submodule.init)
            )
            for name, array in submodule.state.items():
                self.state[f"{attr}.{name}"] = array
        self.declared[id(node.layer)] = modules
        return modules

    # -- outputs, header, docstring -------------------------------------------------------------
    def _outputs(self) -> tuple[list[TensorSpec], list[str]]:
        specs, returns = [], []
        relaid: set[str] = set()  # one variable may be several outputs: re-lay it once
        for position, value in enumerate(self.graph.outputs):
            spec, var = self.specs[id(value)], self.vars[id(value)]
            if spec.flat_order is not None:
                raise ConversionError(f"output {position} is a flatten with a folded order (converter bug)")
            wanted = layout.identity(spec.rank) if self.input_format == "channels_last" else spec.perm
            expr = layout.permute_expression(var, spec.perm, wanted)
            if expr is not None and var not in relaid:
                relaid.add(var)
                self.statements.append(codegen.Statement(var, expr, "back to Keras's channels-last layout"))
            specs.append(TensorSpec(spec.keras_shape, wanted, spec.dtype, f"output_{position}"))
            returns.append(var)
        return specs, returns

    def _header(self) -> list[str]:
        layers = {id(n.layer): n.layer for n in self.graph.nodes}
        params = sum(layer.count_params() for layer in layers.values() if getattr(layer, "built", False))
        name = naming.comment_text(self.graph.stable_name, 60)
        return [
            f'# PyTorch port of Keras model "{name}" ({len(layers)} layers, {params:,} parameters),',
            "# generated by kerastorch_magic: weights load from the state_dict it produced.",
        ]

    def _docstring(self, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> str:
        def shape(dims) -> str:
            sizes = ["N", *("?" if d is None else str(d) for d in dims[1:])]  # "?": any size
            return "(" + ", ".join(sizes) + ")"

        def describe(spec: TensorSpec) -> str:
            text = f"{shape(spec.torch_shape)} {spec.dtype}"
            if not layout.is_identity(spec.perm):
                text += f" (Keras: {shape(spec.keras_shape)})"
            return text

        model = naming.comment_text(self.graph.stable_name, 60).replace('"', "'").replace("\\", "/")
        lines = [f'PyTorch port of the Keras model "{model}".', ""]
        for label, specs in (("Input", inputs), ("Output", outputs)):
            for i, spec in enumerate(specs):
                suffix = f" {i}" if len(specs) > 1 else ""
                lines.append(f"    {label}{suffix}: {describe(spec)}")
        return "\n".join(lines)
