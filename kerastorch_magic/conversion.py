"""``convert(model)``: the public entry point tying reading, converters and codegen together.

The result types live in :mod:`conversion_result`, the up-front check that every node has a
converter in :mod:`support`; both are re-exported here.
"""

from __future__ import annotations

import re
from collections import deque

import numpy as np

from . import blocks, class_text, codegen, idioms, layout, naming, registry, support, traced, tracing
from .conversion_result import Conversion, LayerTrace, Note
from .graph import read_model
from .ir import Graph, Node, TensorSpec
from .layout import INPUT_FORMATS
from .locals import Locals
from .registry import ConversionError, Converted, LayerCall

STRUCTURES = ("blocks", "flat")  # convert()'s layouts of the generated code


def convert(
    model,
    class_name: str = "Net",
    input_format: str = "channels_first",
    *,
    trace_lambda: bool = True,
    fold_batchnorm: bool = False,
    structure: str = "blocks",
) -> Conversion:
    """Convert a built Keras model to PyTorch source plus a matching ``state_dict``.

    Layers without a converter that the user wrote (``Layer`` subclasses, a subclassed ``Model``
    itself, ``Lambda`` layers) are traced: see :mod:`tracing`. Every layer is checked before any
    code is written, so one error names all the layers that cannot be converted.

    Args:
        model: a built Keras 3 model (Sequential, Functional or subclassed); not modified.
        class_name: the generated class's name (made a valid identifier if it is not one).
        input_format: ``"channels_first"`` (idiomatic PyTorch: images, volumes and sequences
            that feed convolutions are channels-first, see each spec's ``perm``) or
            ``"channels_last"`` (``forward`` takes and returns exactly Keras's layouts).
        trace_lambda: False refuses ``Lambda`` layers instead of tracing them (a ``.keras``
            file loaded in safe mode must not run their code).
        fold_batchnorm: True gives the deployment variant: each BatchNormalization after a
            convolution or Dense layer folded into its weights (inference only).
        structure: ``"blocks"`` (default) writes each structure the model repeats (ResNet
            bottlenecks, MBConv blocks, a function called several times) as one ``nn.Module``
            class instantiated in ``nn.Sequential`` stages; ``"flat"`` one class holding every
            layer. See :mod:`blocks` and ``Conversion.state_dict_keys``.

    Returns:
        A :class:`Conversion`: ``.code``, ``.state_dict``, ``.inputs``/``.outputs`` specs,
        ``.notes``, and ``.build(device)`` for the module.

    Raises:
        ConversionError: naming every layer that cannot be converted (``.layers`` lists
            ``(name, class)``), and for any other failure to read the model; nothing else on a
            model it cannot handle.
        ValueError: an unknown ``input_format``.

    Example:
        >>> conv = k2t.convert(model, class_name="Net")  # doctest: +SKIP
        >>> print(conv.code)  # doctest: +SKIP
        >>> net = conv.build()  # doctest: +SKIP
    """
    from . import converters  # noqa: F401  (registers the built-in converters)

    if structure not in STRUCTURES:
        raise ValueError(f"structure must be one of {STRUCTURES}, not {structure!r}")
    if input_format not in INPUT_FORMATS:
        raise ValueError(f"input_format must be one of {INPUT_FORMATS}, not {input_format!r}")
    class_name = naming.class_identifier(class_name)
    try:
        graph = read_model(model, trace_lambda)
        support.check_supported(graph)
        graph = idioms.rewrite(graph, fold_batchnorm=fold_batchnorm)  # torch idioms, folded BatchNorms
        return _Builder(graph, model, class_name, input_format).build(structure)
    except ConversionError:
        raise
    except Exception as error:  # noqa: BLE001 - a model we cannot read is refused, not crashed on
        raise ConversionError(
            f"cannot convert Keras model {getattr(model, 'name', model)!r}: "
            f"{type(error).__name__}: {error}".rstrip()
        ) from error


def _module_attributes() -> set[str]:
    """Names a submodule attribute must not shadow (``training``, ``forward``, ``to``...)."""
    import torch

    return set(dir(torch.nn.Module)) | {"reset_parameters"}


class _Builder:
    """One conversion's mutable state: names handed out, declarations, statements, state."""

    def __init__(
        self,
        graph: Graph,
        model,
        class_name: str,
        input_format: str,
        input_specs: list[TensorSpec] | None = None,
        classes: traced.Classes | None = None,
    ):
        self.graph, self.model = graph, model
        self.class_name, self.input_format = class_name, input_format
        # A traced custom layer's class takes its inputs in the layouts its caller has them in,
        # and returns its outputs in whatever layout they end up in (the caller knows from specs).
        self.input_specs = input_specs
        self.classes = classes if classes is not None else traced.Classes({class_name}, model)
        self.traced_uses: dict[int, traced.TracedUse] = {}  # id(custom layer) -> its class, first use
        self.instantiated: set[str] = set()  # generated classes this class has declared
        self.readers = graph.readers()
        self.output_ids = {id(v) for v in graph.outputs}
        self.attrs = naming.Namespace(_module_attributes())
        self.variables = Locals(graph)  # forward's local names: x, and short-lived branch names
        self.declared: dict[int, dict[str, str]] = {}  # id(layer) -> {module key: attribute}
        self.declarations: list[codegen.Declaration] = []
        self.statements: list = []
        self.helpers: dict[str, str] = {}
        self.state: dict[str, np.ndarray] = {}
        self.notes: list[Note] = []
        self.traces: list[LayerTrace] = []
        self.specs: dict[int, TensorSpec] = {}
        self.vars: dict[int, str] = {}
        self.constants: dict[int, str] = {}  # id(keras.Variable) -> its expression

    # -- inputs ---------------------------------------------------------------------------------
    def _input_perm(self, value) -> tuple[int, ...]:
        rank = len(value.shape)
        if self.input_format == "channels_last" or rank < 3:
            return layout.identity(rank)
        return layout.channels_first(rank) if self._feeds_channels_first(value) else layout.identity(rank)

    def _run_channels_last(self, var: str, spec: TensorSpec) -> None:
        """Copy a channels-first image input once into channels_last memory (see
        :func:`layout.channels_last_memory`) when the model convolves images of its rank.

        Only for the model's own forward taking torch's (N, C, H, W): with Keras's layout the
        input's ``permute`` already has channels_last strides, and a traced layer's inputs come
        from its caller.
        """
        channels_first = spec.rank in (4, 5) and spec.perm == layout.channels_first(spec.rank)
        if self.input_specs is not None or not channels_first or not _convolves(self.graph, spec.rank - 2):
            return
        expr = layout.channels_last_memory(var, spec.rank)
        self.statements.append(codegen.Statement(var, expr, layout.CHANNELS_LAST_COMMENT, prologue=True))

    def _feeds_channels_first(self, value) -> bool:
        """Whether the value reaches a channels-first layer through layout-agnostic layers only."""
        return _feeds_channels_first(value, self.readers)

    # -- main loop ------------------------------------------------------------------------------
    def build(self, structure: str = "flat") -> Conversion:
        source, inputs, outputs = self.assemble()
        import torch

        state_dict = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.state.items()}
        structured = blocks.restructure(source, self.traces, state_dict) if structure == "blocks" else None
        keys = structured.keys if structured else {k: k for k in state_dict}
        return Conversion(
            code=codegen.render(structured.source if structured else source),
            class_name=self.class_name,
            state_dict={keys[k]: v for k, v in state_dict.items()},
            inputs=inputs,
            outputs=outputs,
            notes=self.notes,
            traces=self.traces,
            model_name=self.graph.name,
            input_format=self.input_format,
            _source=source,
            state_dict_keys=keys,
            module_paths=structured.paths if structured else {},
        )

    def assemble(self) -> tuple[codegen.ClassSource, list[TensorSpec], list[TensorSpec]]:
        """Convert every node; the class source and the input and output specs."""
        single = len(self.graph.inputs) == 1
        forward_args, inputs = [], []
        for position, value in enumerate(self.graph.inputs):
            # Functional inputs are x (or their names); a traced call() keeps its parameters' names.
            var = self.variables.fresh("x" if single and not self.graph.input_names else value.name, "input")
            self.variables.bind(var, value)
            if position == 0 and self._makes_tensors():
                self.variables.pin(var)  # forward reads its batch size and device: keep it
            if self.input_specs is not None:
                spec = self.input_specs[position]
            else:
                spec = TensorSpec(value.shape, self._input_perm(value), value.dtype, value.name)
            self.specs[id(value)], self.vars[id(value)] = spec, var
            forward_args.append(var)
            inputs.append(spec)
            self._run_channels_last(var, spec)
        errors: list[ConversionError] = []
        for node in self.graph.nodes:
            try:
                self._convert_node(node)
            except ConversionError as error:
                errors.extend(getattr(error, "parts", None) or [error])  # a traced layer's, flattened
        if errors:
            layers = [layer for e in errors for layer in e.layers]
            combined = ConversionError(
                f"cannot convert Keras model {self.graph.name!r}: {support.named_layers(layers)}:\n"
                + "\n".join(f"  - {e}" for e in errors),
                layers,
            )
            combined.parts = errors
            raise combined
        if self.graph.layer is not None:  # a traced call(): its weights, even those it does not read
            for variable in self._own_variables():
                if id(variable) not in self.constants:
                    self.constants[id(variable)] = self._declare_variable(variable, unused=True)
        outputs, returns = self._outputs()
        inner = self.input_specs is not None
        source = codegen.ClassSource(
            class_name=self.class_name,
            header=[] if inner else class_text.header(self.graph, self.model),
            docstring=class_text.docstring(self.graph, self.model, inputs, outputs, traced=inner),
            forward_args=forward_args,
            declarations=self.declarations,
            statements=self.statements,
            returns=returns,
            helpers=self.helpers,
            classes=[] if inner else self.classes.sources,
        )
        return source, inputs, outputs

    def _convert_node(self, node: Node) -> None:
        if isinstance(node, idioms.Skipped):  # fused into a later node: a trace, no code
            trace = LayerTrace(len(self.traces), node.original, 0, None, "", (), fused_into=node.into)
            self.traces.append(trace)
            return
        if any(id(v) not in self.specs for v in node.inputs):
            return  # fed by a layer that failed to convert: that error is already recorded
        first_readers = self.readers.get(id(node.outputs[0]), [])
        call = LayerCall(
            node=node,
            inputs=[self.specs[id(v)] for v in node.inputs],
            input_format=self.input_format,
            readers=first_readers,
            is_model_output=id(node.outputs[0]) in self.output_ids,
            all_readers=self.readers,
            model_outputs=self.output_ids,
            constant_source=self._constant_source,
            traced_class=self._traced_class,
            traced_function=self._traced_function,
        )
        call._config = traced.safe_config(node.layer)
        if support.is_pseudo(node):
            self._entry_point(node)
            return
        if node.subgraph is not None:
            result = self._traced_call(node, call)
        else:
            result = registry.spec_of(node)(call)
        if isinstance(node, idioms.Fused) and node.note:
            result.notes.insert(0, node.note)
        if len(result.outputs) != len(node.outputs):
            raise call.unsupported(
                f"converter returned {len(result.outputs)} outputs, Keras has {len(node.outputs)}"
            )
        modules = self._declare(node, result)
        for text in result.notes:
            self.notes.append(Note(node.qualified_name, text))
        self.helpers.update(result.helpers)
        in_vars = [self.vars[id(v)] for v in node.inputs]
        if result.steps:
            out_vars = self._output_variables(node, in_vars, result.steps)
        else:  # identity at inference: the output is the input tensor itself
            out_vars = [in_vars[0]] * len(node.outputs)
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
            self.statements.append(codegen.Statement(step_target, expr, comment, alike=step.alike))
            current = out_vars[0]
        traced_node = getattr(node, "original", None) or node  # a fused chain's trace: its last node
        for index, (value, spec, var) in enumerate(zip(node.outputs, result.outputs, out_vars)):
            self.specs[id(value)], self.vars[id(value)] = spec, var
            self.variables.bind(var, value)
            trace = LayerTrace(
                len(self.traces),
                traced_node,
                index,
                spec,
                var,
                tuple(modules.values()),
                traced.is_random(node),
            )
            self.traces.append(trace)
            self.statements.append((trace.index, var))

    # -- traced layers: classes, weights, constants ------------------------------------------------
    def _traced_call(self, node: Node, call: LayerCall) -> Converted:
        """A traced custom layer: an instance of its own generated class, called once per use."""
        use = self.traced_uses.get(id(node.layer))
        if use is None:
            use = self.traced_uses[id(node.layer)] = self._traced_class(node, call.inputs)
        # A shared custom layer called again on differently laid out tensors: re-lay them to the
        # layouts its class was generated for.
        args = [call.input_as(i, spec.perm) for i, spec in enumerate(use.inputs)]
        if len(args) == 1:
            args = [arg.replace("{x0}", "{x}") for arg in args]
        outputs = [
            TensorSpec(tuple(value.shape), spec.perm, spec.dtype)
            for value, spec in zip(node.outputs, use.outputs)
        ]
        first = use.class_name not in self.instantiated  # the class is introduced once
        self.instantiated.add(use.class_name)
        submodule = registry.Submodule(
            f"{use.class_name}()",
            use.state,
            ["{m}.reset_parameters()"] if use.resets else [],
            use.comment if first else None,
        )
        return Converted([registry.Step("{m}(" + ", ".join(args) + ")")], outputs, {"": submodule})

    def _traced_function(self, node: Node, specs: list[TensorSpec], docstring: str):
        """A traced function (a custom activation): ``(name, its source, helpers)``; None when it
        holds weights or constants (a def has no ``self``) or returns another layout than it takes."""
        wanted = traced.function_name(node.layer)
        inner = _Builder(node.subgraph, node.layer, wanted, self.input_format, list(specs), self.classes)
        source, _, outputs = inner.assemble()
        if source.declarations or source.classes or outputs[0].perm != specs[0].perm:
            return None
        name = self.classes.add_function(wanted, source, docstring)
        return name, self.classes.functions[name], source.helpers

    def _traced_class(self, node: Node, specs: list[TensorSpec]) -> traced.TracedUse:
        layer = node.layer
        wanted = tracing.class_name_of(layer)
        inner = _Builder(
            node.subgraph, layer, wanted, self.input_format, input_specs=list(specs), classes=self.classes
        )
        source, inputs, outputs = inner.assemble()
        class_name = self.classes.add(wanted, source)
        where = tracing.source_of(layer)
        kind = "Lambda layer" if node.class_name == "Lambda" else f"Keras layer class {node.class_name}"
        comment = f"{kind}{f' ({where})' if where else ''}: its call() traced at inference"
        for note in inner.notes:
            self.notes.append(Note(f"{node.qualified_name}/{note.layer}", note.text))
        return traced.TracedUse(
            class_name, inputs, outputs, inner.state, codegen.has_reset_parameters(source), comment
        )

    def _entry_point(self, node: Node) -> None:
        """A weight read or an eagerly computed constant: an expression, no statement of its own."""
        operation, value = node.layer, node.outputs[0]
        rank = len(value.shape)
        spec = TensorSpec(tuple(value.shape), layout.identity(rank), value.dtype)
        if tracing.is_variable_read(operation):
            expr = self._constant_source(operation.variable)
        elif tracing.is_random_draw(operation):
            expr = self.variables.fixed_name("noise")
            self.statements.append(
                codegen.Statement(expr, self._random_expression(operation), traced.RANDOM_COMMENT)
            )
        else:
            expr = self._constant_source(operation.value)
            if not expr.startswith("self."):  # torch.arange(...): a named local reads better
                var = self.variables.fixed_name("positions" if "arange" in expr else "causal_mask")
                self.statements.append(codegen.Statement(var, expr, "computed from static shapes in Keras"))
                expr = var
        self.specs[id(value)], self.vars[id(value)] = spec, expr

    def _constant_source(self, value) -> str:
        """A Keras Variable or a concrete array as torch source (see ``LayerCall.operand``).

        A ``keras.Variable`` becomes an ``nn.Parameter`` (an ``nn.Buffer`` when not trainable)
        named after it, in Keras's layout, loaded from Keras and re-initialised by
        ``reset_parameters()`` with its Keras initialiser. An array that is ``arange``-like (the
        positions of a positional embedding) becomes ``torch.arange(...)``; any other array a
        buffer holding its values.
        """
        import keras

        if id(value) in self.constants:  # a variable read by several calls is declared once
            return self.constants[id(value)]
        if isinstance(value, keras.Variable):
            self._check_own(value)
            expr = self._declare_variable(value)
            self.constants[id(value)] = expr
            return expr
        array = np.asarray(keras.ops.convert_to_numpy(value))
        device = self._device_reference()
        readable = traced.arange_expression(array, device) or traced.causal_mask_expression(array, device)
        if readable is not None:
            return readable
        baked = self.classes.trainable_weight_like(array)
        if baked is not None:
            raise tracing.refuse(
                self.model,
                self.graph.name,
                f"its call() computes with the trainable weight {baked.path!r} outside of its inputs' "
                "graph (e.g. ops.transpose(self.embedding.embeddings), run once while tracing): the "
                "port would freeze it into a constant. Register a converter for this layer",
            )
        attr = self.attrs.claim("mask" if array.dtype == np.bool_ else "constant")
        ctor = f"nn.Buffer({traced.empty(array.shape, array.dtype)})"
        self.declarations.append(codegen.Declaration(attr, ctor, "a constant of the Keras graph", []))
        self.state[attr] = array
        return f"self.{attr}"

    def _check_own(self, variable) -> None:
        """A traced call() may use its own weights; another layer's (weight tying) it may not."""
        if any(v is variable for v in self._own_variables()):
            return
        owned_elsewhere = any(v is variable for v in getattr(self.classes.root, "weights", []))
        if owned_elsewhere:
            raise tracing.refuse(
                self.model,
                self.graph.name,
                f"its call() reads the weight {variable.path!r} of another layer (weight tying), which "
                "the port cannot share between modules. Register a converter for this layer",
            )

    def _own_variables(self) -> list:
        """The traced layer's own weights (``add_weight`` on it, not on its inner layers)."""
        return list(getattr(self.model, "_trainable_variables", [])) + list(
            getattr(self.model, "_non_trainable_variables", [])
        )

    def _declare_variable(self, variable, unused: bool = False) -> str:
        attribute = self.graph.attributes.get(id(variable))
        explicit = not re.fullmatch(r"variable(_\d+)?", variable.name)
        attr = self.attrs.claim(variable.name if explicit or not attribute else attribute)
        array = np.asarray(traced.keras_value(variable))
        empty = traced.empty(array.shape, array.dtype)
        if variable.trainable:
            ctor = f"nn.Parameter({empty})"
        else:
            ctor = f"nn.Buffer({empty})"
        init = traced.variable_init(variable, array.shape)
        # The variable's own name, not its path: the path names the layer instance, and two uses
        # of one custom class must generate identical code to share one class.
        comment = f"Keras weight {variable.name!r}" + ("" if variable.trainable else " (not trainable)")
        if unused:
            comment += "; call() does not read it at inference, kept so the state matches Keras"
        self.declarations.append(codegen.Declaration(attr, ctor, comment, init))
        self.state[attr] = array
        return f"self.{attr}"

    def _random_expression(self, draw) -> str:
        reference = self._device_reference()
        if any(d is None for d in draw.shape[1:]):
            raise tracing.refuse(
                self.model,
                self.graph.name,
                f"keras.random.{draw.kind} of shape {draw.shape}: only the batch size may be unknown",
            )
        dims = ", ".join(f"{reference}.shape[0]" if d is None else str(d) for d in draw.shape) or "()"
        options = f", device={reference}.device"
        if draw.dtype != "float32":
            options += f", dtype=torch.{draw.dtype}"
        if draw.kind == "normal":
            expr = f"torch.randn({dims}{options})"
            scaled = expr if draw.high == 1.0 else f"{expr} * {draw.high!r}"
            return scaled if draw.low == 0.0 else f"{scaled} + {draw.low!r}"
        expr = f"torch.rand({dims}{options})"
        width = draw.high - draw.low
        scaled = expr if width == 1.0 else f"{expr} * {width!r}"
        return scaled if draw.low == 0.0 else f"{scaled} + {draw.low!r}"

    def _device_reference(self) -> str:
        """An input tensor whose device constants made in ``forward`` are created on.

        The first input's name, kept for all of ``forward`` once it is read here (a converter's
        constant may be built after the name moved on: then any live local, same device).
        """
        if not self.graph.inputs:
            return "None"
        name = self.vars[id(self.graph.inputs[0])]
        if not self.variables.holds(name, self.graph.inputs[0]):
            name = self.variables.latest()
        self.variables.pin(name)
        return name

    def _makes_tensors(self) -> bool:
        """Whether forward draws noise or builds constants from its first input's shape/device."""
        return any(support.is_pseudo(n) and not tracing.is_variable_read(n.layer) for n in self.graph.nodes)

    def _output_variables(self, node: Node, in_vars: list[str], steps) -> list[str]:
        """The first output takes a dead input's name or a branch name (see :mod:`locals`).

        When the output continues the main path while its input waits for a later merge, the
        input is first kept under a branch name (``shortcut = x``). Extra outputs (an RNN's
        states) are named after the layer for the rest of ``forward``.
        """
        first, keep = self.variables.output_name(node, in_vars, steps)
        if keep is not None:
            self.statements.append(codegen.Statement(keep, first))
            for value_id, var in self.vars.items():
                if var == first and self.variables.alive(value_id):
                    self.vars[value_id] = keep
        if len(node.outputs) == 1:
            return [first]
        base = self.variables.short_name(node)
        # An extra output nobody reads (an RNN's unused state) gets a leading underscore: the
        # unpacking still names it (compare taps it), and linters know it is unused on purpose.
        names = [first]
        for i, value in enumerate(node.outputs[1:], start=1):
            name = self.variables.fixed_name(f"{base}_{i}")
            if self._unread(value):
                name = f"_{name}"
                self.variables.pin(name)
            names.append(name)
        return names

    def _unread(self, value) -> bool:
        return not self.readers.get(id(value)) and id(value) not in self.output_ids

    def _declare(self, node: Node, result: Converted) -> dict[str, str]:
        known = self.declared.get(id(node.layer))
        if known is not None:  # a shared layer: its submodules exist already
            return known
        # The user's attribute name inside a traced call() (self.attention), else the layer's name.
        base = self.graph.attributes.get(id(node.layer)) or traced.lambda_name(node)
        base = naming.identifier(base or node.local_name(len(self.graph.scope)))
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
            keras_layout = self.input_format == "channels_last" and self.input_specs is None
            wanted = layout.identity(spec.rank) if keras_layout else spec.perm
            expr = layout.permute_expression(var, spec.perm, wanted)
            if expr is not None and var not in relaid:
                relaid.add(var)
                self.statements.append(codegen.Statement(var, expr, "back to Keras's channels-last layout"))
            specs.append(TensorSpec(spec.keras_shape, wanted, spec.dtype, f"output_{position}"))
            returns.append(var)
        return specs, returns


def _convolves(graph, spatial_rank: int) -> bool:
    """Whether ``graph`` calls a convolution over ``spatial_rank`` axes, in a traced layer's own
    graph too (nested Functional models are already flattened into it)."""
    import keras

    if spatial_rank == 2:
        kinds = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)
        kinds += (keras.layers.Conv2DTranspose,)
    else:
        kinds = (keras.layers.Conv3D, keras.layers.Conv3DTranspose)
    inner = [node.subgraph for node in graph.nodes if node.subgraph is not None]
    return any(isinstance(node.layer, kinds) for node in graph.nodes) or any(
        _convolves(subgraph, spatial_rank) for subgraph in inner
    )


def _feeds_channels_first(value, readers: dict[int, list[Node]]) -> bool:
    """See :meth:`_Builder._feeds_channels_first`; looks into traced layers' own graphs."""
    queue, seen = deque([value]), set()
    while queue:
        current = queue.popleft()
        for node in readers.get(id(current), []):
            if node.subgraph is not None:  # a traced layer: where does its call() send this input?
                inner = node.subgraph
                positions = [i for i, v in enumerate(node.inputs) if v is current]
                if any(_feeds_channels_first(inner.inputs[i], inner.readers()) for i in positions):
                    return True
                continue
            spec = registry.spec_of(node)
            if spec is None:
                continue
            if spec.channels_first:
                # A Keras layer that is itself channels-first already gets torch's layout.
                return getattr(node.layer, "data_format", "channels_last") != "channels_first"
            if spec.passthrough and id(node) not in seen:
                seen.add(id(node))
                queue.extend(node.outputs)
    return False
