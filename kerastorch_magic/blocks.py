"""Repeated blocks as classes: a flat generated class restructured the way torchvision writes ResNet.

A pass over the flat :class:`codegen.ClassSource` (the converters and the builder are unaware):

1. **Segments.** ``forward`` is cut wherever a single tensor is alive (the main path ``x``): a
   residual block, whose shortcut lives across it, is one segment. Segments without a branch
   (EfficientNet's first MBConv of a stage, MobileNet's blocks) are joined by the Keras layer-name
   prefix they share (``block2a_``, ``expanded_conv_4_``); a layer with an automatic name
   (``re_lu_3``) belongs to the segment before it (see :mod:`block_segments`).
2. **Structures.** Two segments are the same structure when their code is equal up to the number
   literals (see :mod:`block_templates`); a structure with at least two instances becomes an
   ``nn.Module`` class whose constructor takes the numbers that vary (literals varying together
   are one parameter), named from the torch signature (``in_channels``, ``stride``).
3. **Stages.** Consecutive instances sharing the Keras stage prefix (``conv3_`` of ``conv3_block2``,
   ``block4`` of ``block4b``) are one ``nn.Sequential``; ``forward`` calls the stage.

The state_dict keys move with the submodules (``conv2_block1_1_conv.weight`` ->
``conv2.0.conv1.weight``); :class:`Structured` keeps the mapping. A model with no repeated
structure is returned unchanged (None).
"""

from __future__ import annotations

import re
import textwrap
import warnings
from dataclasses import dataclass

from . import block_inits, block_templates, codegen, naming
from . import block_names as names_of
from .block_segments import ATTRIBUTE as _ATTR
from .block_segments import LOCAL as _LOCAL
from .block_segments import Segment as _Segment
from .block_segments import cut_segments, read_units
from .block_templates import Template

# Constructor parameters that count channels: they become positional block arguments.
_CHANNELS = {"in_channels", "out_channels", "num_features", "in_features", "out_features", "normalized_shape"}
_RENAMED = {"p": "drop_rate", "num_features": "channels", "normalized_shape": "channels"}


@dataclass
class Structured:
    """The restructured class and where each flat state_dict key went."""

    source: codegen.ClassSource
    keys: dict[str, str]  # flat key (``conv2_block1_1_conv.weight``) -> structured (``conv2.0.conv1.weight``)
    paths: dict[str, str]  # flat attribute (``conv2_block1_1_conv``) -> submodule path (``conv2.0.conv1``)


def restructure(source: codegen.ClassSource, traces, state: dict) -> Structured | None:
    """``source`` with its repeated blocks as classes, or None when nothing repeats.

    The flat class is already exact: should this pass fail on a model it was not written for,
    the conversion keeps the flat class (with a warning) rather than failing.
    """
    try:
        return _restructure(source, traces, state)
    except Exception as error:  # noqa: BLE001 - a layout pass never costs the user the port
        warnings.warn(
            f"kerastorch_magic: repeated blocks left in one class ({type(error).__name__}: {error})",
            stacklevel=2,
        )
        return None


def _restructure(source: codegen.ClassSource, traces, state: dict) -> Structured | None:
    units = read_units(source, traces)
    segments = cut_segments(source, units)
    declared = {d.attr: d for d in source.declarations}
    candidates = [s for s in segments if _describe(s, source, declared)]
    groups: dict[tuple, list[_Segment]] = {}
    for segment in candidates:
        groups.setdefault(segment.key, []).append(segment)
    structures = [group for group in groups.values() if len(group) >= 2]
    if not structures:
        return None
    return _Restructurer(source, declared, structures, state, traces).run()


# -- 2. structures --------------------------------------------------------------------------------
def _describe(segment: _Segment, source: codegen.ClassSource, declared: dict) -> bool:
    """Fill the segment's attrs, templates and structure key; False when it cannot be a block."""
    if not segment.in_var or (segment.block_id is None and not segment.branched):
        return False  # a stretch of plain layers with no name prefix: no block boundary to trust
    statements = [s for s in source.statements[segment.start : segment.end] if not isinstance(s, tuple)]
    attrs: list[str] = []
    for statement in statements:
        for attr in _ATTR.findall(statement.expr):
            if attr in declared and attr not in attrs:
                attrs.append(attr)
    if len(attrs) < 2:
        return False  # one layer (a Conv2D and its activation) is no block worth a class
    outside = source.statements[: segment.start] + source.statements[segment.end :]
    used_outside = {a for s in outside if not isinstance(s, tuple) for a in _ATTR.findall(s.expr)}
    if used_outside & set(attrs):
        return False  # a layer shared with code outside the block
    index = {attr: k for k, attr in enumerate(attrs)}

    def positional(text: str) -> str:
        return _ATTR.sub(lambda m: f"self._a{index[m[1]]}_" if m[1] in index else m[0], text)

    templates: list = []
    for attr in attrs:
        decl = declared[attr]
        inits = tuple(block_templates.template(line) for line in decl.init)
        templates.append((block_templates.template(decl.ctor, module_call=True), inits))
    for statement in statements:
        templates.append((statement.target, block_templates.template(positional(statement.expr))))
    segment.attrs, segment.templates = attrs, templates
    segment.key = (segment.in_var, segment.out_var, *_template_keys(templates))
    return True


def _template_keys(templates: list) -> list:
    keys = []
    for first, second in templates:
        if isinstance(first, Template):  # a declaration: its constructor and init lines
            keys.append((first.key(), tuple(t.key() for t in second)))
        else:  # a statement: its target and expression
            keys.append((first, second.key()))
    return keys


def _slot_paths(segment: _Segment):
    """Every slot of a segment as (path, Slot): the same path in another instance is the same slot."""
    for position, (first, second) in enumerate(segment.templates):
        if isinstance(first, Template):
            for i, slot in enumerate(first.slots):
                yield ("ctor", position, i), slot
            for line, template in enumerate(second):
                for i, slot in enumerate(template.slots):
                    yield ("init", position, line, i), slot
        else:
            for i, slot in enumerate(second.slots):
                yield ("stmt", position, i), slot


# -- 3. classes and stages ------------------------------------------------------------------------
@dataclass
class _BlockClass:
    name: str
    instances: list[_Segment]
    params: list[str]  # constructor parameters, in order
    values: dict[str, list[str]]  # parameter -> its text per instance
    locals: list[str]  # the submodules' names inside the class, by position in the block
    source: codegen.ClassSource


class _Restructurer:
    def __init__(self, source, declared, structures, state, traces):
        self.source, self.declared, self.structures = source, declared, structures
        self.layers = {attr: t.node.layer for t in traces for attr in t.modules}  # attr -> Keras layer
        self.state = state  # flat key -> tensor (its shape gives a weight's fans)
        helpers = "\n".join(source.helpers.values())  # module-level classes and functions
        self.class_names = {
            source.class_name,
            *(c.class_name for c in source.classes),
            *re.findall(r"^(?:class|def) (\w+)", helpers, re.M),
        }

    def run(self) -> Structured | None:
        classes = [c for c in (self._block_class(group) for group in self._ordered()) if c is not None]
        if not classes:
            return None
        self._name_classes(classes)
        of_segment = {id(s): c for c in classes for s in c.instances}
        return self._main(classes, of_segment)

    def _name_classes(self, classes: list[_BlockClass]) -> None:
        """Classes of one kind (``Block``) told apart by what only some have: a projection on
        the shortcut, a residual connection, a stride (``ProjectionBlock``, ``StridedBlock``)."""
        by_base: dict[str, list[_BlockClass]] = {}
        for block in classes:
            by_base.setdefault(block.name, []).append(block)
        for base, group in by_base.items():
            features = [_features(block) for block in group]
            for block, own in zip(group, features):
                words = [w for w in _FEATURES if own[w] and not all(f[w] for f in features)][:1]
                name = self._claim("".join(w.capitalize() for w in words) + base)
                block.name = block.source.class_name = name

    def _claim(self, base: str) -> str:
        name, suffix = base, 2
        while name in self.class_names:
            name, suffix = f"{base}{suffix}", suffix + 1
        self.class_names.add(name)
        return name

    def _ordered(self) -> list[list[_Segment]]:
        return sorted(self.structures, key=lambda group: group[0].start)

    def _block_class(self, group: list[_Segment]) -> _BlockClass | None:
        first = group[0]
        paths = [dict(_slot_paths(s)) for s in group]
        # Parameters: the varying slots, one per distinct vector of values across the instances.
        vectors: dict[tuple, list] = {}
        for path, slot in paths[0].items():
            vector = tuple(p[path].value for p in paths)
            if len(set(map(repr, vector))) == 1:
                continue
            if path[0] == "init":
                continue  # an initialiser's bound depending on the block's sizes: see _init_lines
            vectors.setdefault(tuple(map(repr, vector)), []).append((path, slot))
        derived = _derived(vectors, paths)
        names = self._parameter_names(first, {v: m for v, m in vectors.items() if v not in derived})
        for vector, (source, suffix) in derived.items():
            names[vector] = names[source] + suffix
        # path -> (parameter, what is applied to it): padding=kernel_size // 2 needs no parameter.
        param_of = {
            path: (names[derived[v][0]] if v in derived else names[v], derived[v][1] if v in derived else "")
            for v, members in vectors.items()
            for path, _ in members
        }
        attr_names = naming.Namespace(
            {"forward", "reset_parameters", "training", *(p for p, _ in param_of.values())}
        )
        locals_ = {attr: attr_names.claim(names_of.local_attr(attr, first.block_id)) for attr in first.attrs}
        order = list(names.values())
        stored = sorted({param_of[p][0] for p in param_of if p[0] == "stmt"}, key=order.index)
        declarations = [codegen.Declaration(p, p, None, []) for p in stored]
        for position, attr in enumerate(first.attrs):
            ctor, inits = first.templates[position]
            decl = self.declared[attr]

            values = {}
            for i, slot in enumerate(ctor.slots):
                param = param_of.get(("ctor", position, i))
                values[i] = "".join(param) if param is not None else None if slot.default else slot.text
            varied = {
                ctor.slots[i].hint: p
                for i, p in enumerate(map(values.get, range(len(ctor.slots))))
                if ("ctor", position, i) in param_of
            }
            init = self._init_lines(
                [s.attrs[position] for s in group], [s.templates[position][1] for s in group]
            )
            if init is None:
                return None  # an initialiser varying in a way no fan explains: left flat
            comment = names_of.general(decl.comment, varied)
            declarations.append(codegen.Declaration(locals_[attr], ctor.render(values), comment, init))
        statements = []
        body = [s for s in self.source.statements[first.start : first.end] if not isinstance(s, tuple)]
        rename = {f"_a{k}_": locals_[attr] for k, attr in enumerate(first.attrs)}
        for position, statement in enumerate(body, start=len(first.attrs)):
            target, template = first.templates[position]
            values = {}
            for i, slot in enumerate(template.slots):
                param = param_of.get(("stmt", position, i))
                values[i] = f"self.{''.join(param)}" if param else slot.text
            expr = re.sub(r"\b_a\d+_\b", lambda m: rename[m[0]], template.render(values))
            varied = {
                slot.hint: values[i]
                for i, slot in enumerate(template.slots)
                if ("stmt", position, i) in param_of
            }
            comment = names_of.general(statement.comment, varied)
            statements.append(codegen.Statement(target, expr, comment, alike=statement.alike))
        own = [v for v in vectors if v not in derived]  # the constructor's parameters
        params = sorted(dict.fromkeys(names[v] for v in own), key=lambda p: not p.endswith("channels"))
        values = {names[v]: [p[vectors[v][0][0]].text for p in paths] for v in own}
        ids = [s.block_id for s in group]
        kinds = {names_of.class_name(segment.block_id) for segment in group}  # enc1, dec1: Block
        name = kinds.pop() if len(kinds) == 1 else "Block"  # made unique in _name_classes
        docstring = "\n    ".join(
            textwrap.wrap(f"A block the Keras model repeats: {names_of.id_list(ids)}.", 80)
        )
        source = codegen.ClassSource(
            class_name=name,
            header=[],
            docstring=docstring,
            forward_args=[first.in_var],
            declarations=declarations,
            statements=statements,
            returns=[first.out_var],
            init_args=params,
            resets_in_init=False,
        )
        return _BlockClass(name, group, params, values, [locals_[a] for a in first.attrs], source)

    def _init_lines(self, attrs: list[str], inits: list[tuple]) -> list[str] | None:
        """``reset_parameters`` lines of one submodule, written once for all its instances.

        ``attrs``: the submodule's flat attribute in each instance; ``inits``: its init lines
        (templates) in each. Keras's variance-scaling and Glorot initialisers scale with the
        kernel's fans, so their bounds differ between blocks of different widths: a bound that
        varies is written as ``math.sqrt(K / fan)`` with the fan read off the weight (the one
        expression that gives every instance its own Keras bound), other numbers as the ratio to
        it (``a=-2.0 * std``). A lone submodule (the main class's) gets that form too when its
        initialiser is one of those, else its lines unchanged; None: no formula explains them.
        """
        lines: list[str] = []
        for line, template in enumerate(inits[0]):
            texts = [own[line] for own in inits]
            if not template.slots:
                if len({t.pieces for t in texts}) > 1:  # a comment quoting one instance's fans
                    lines.append(_without_numbers(template.pieces[0]))
                else:
                    lines.append(template.render({}))
                continue
            values = [[slot.value for slot in t.slots] for t in texts]
            literal = template.render({i: slot.text for i, slot in enumerate(template.slots)})
            varying = [i for i in range(len(template.slots)) if len({repr(v[i]) for v in values}) > 1]
            if len(attrs) == 1:
                varying = [i for i, slot in enumerate(template.slots) if isinstance(slot.value, float)]
            if not varying:
                lines.append(literal)
                continue
            weight = re.search(r"\{m\}\.(\w+)", template.render({i: "0" for i in range(len(template.slots))}))
            fans = [block_inits.keras_fans(self.layers.get(attr)) for attr in attrs]
            formula = None
            if weight is not None and (len(attrs) > 1 or fans[0]):
                shapes = [tuple(self.state[f"{attr}.{weight[1]}"].shape) for attr in attrs]
                formula = block_inits.fan_formula(
                    f"{{m}}.{weight[1]}", shapes, values, varying, template, fans
                )
            if formula is None and len(attrs) > 1:
                return None
            lines += formula or [literal]
            if formula:  # the fans are in the formula now: a comment quoting them would repeat them
                lines = [_without_numbers(text) if text.lstrip().startswith("#") else text for text in lines]
        return lines

    @staticmethod
    def _parameter_names(first: _Segment, vectors: dict) -> dict[tuple, str]:
        """A name per varying vector: its first slot's parameter (``stride``), channels by role.

        The channels entering the block's first layer are ``in_channels``, those its last layer
        makes ``out_channels`` (both: ``channels``); others are named after the layer making them.
        """
        channel_paths = sorted(
            path
            for members in vectors.values()
            for path, slot in members
            if path[0] == "ctor" and slot.hint in _CHANNELS
        )
        ends = (channel_paths[0], channel_paths[-1]) if channel_paths else ()
        names: dict[tuple, str] = {}
        taken: set[str] = set()
        for vector, members in sorted(vectors.items(), key=lambda item: min(p for p, _ in item[1])):
            path, slot = min(members, key=lambda m: m[0])
            paths = {p for p, _ in members}
            if any(s.hint in _CHANNELS for _, s in members):
                first_in, last_out = bool(ends) and ends[0] in paths, bool(ends) and ends[1] in paths
                base = {
                    (True, True): "channels",
                    (True, False): "in_channels",
                    (False, True): "out_channels",
                }.get((first_in, last_out), "")
                if not base:
                    maker = names_of.local_attr(first.attrs[path[1]], first.block_id)
                    base = f"{names_of.short(maker)}_channels"
            else:
                base = _RENAMED.get(slot.hint, slot.hint) or "size"
            if base in taken and path[0] == "ctor":
                base = f"{names_of.local_attr(first.attrs[path[1]], first.block_id)}_{base}"
            name, suffix = base, 2
            while name in taken:
                name, suffix = f"{base}{suffix}", suffix + 1
            taken.add(name)
            names[vector] = name
        return names

    def _main(self, classes: list[_BlockClass], of_segment: dict) -> Structured:
        """The main class: block instances grouped into stages, the rest as it was."""
        instances = sorted((s for c in classes for s in c.instances), key=lambda s: s.start)
        stages: list[list[_Segment]] = []
        for segment in instances:
            previous = stages[-1][-1] if stages else None
            if (
                previous is not None
                and previous.end == segment.start
                and names_of.stage_of(previous.block_id) == names_of.stage_of(segment.block_id)
            ):
                stages[-1].append(segment)
            else:
                stages.append([segment])
        moved = {attr for s in instances for attr in s.attrs}
        kept = [d.attr for d in self.source.declarations if d.attr not in moved]
        attrs = naming.Namespace({*kept, *_MODULE_ATTRIBUTES})
        renamed: dict[str, str] = {}  # flat attribute -> its path in the structured class
        stage_decls: dict[str, codegen.Declaration] = {}  # first moved attribute -> the stage
        calls: dict[int, tuple[int, codegen.Statement]] = {}  # stage start -> (end, the call)
        for stage in stages:
            stage_id = names_of.stage_of(stage[0].block_id)
            if stage_id is not None:
                name = attrs.claim(names_of.stage_name(stage_id))
            elif len(stage) == 1 and stage[0].block_id is not None:  # a lone block: its own name
                name = attrs.claim(names_of.lone_name(stage[0].block_id))
            else:
                name = attrs.claim("blocks")
            members = []
            for position, segment in enumerate(stage):
                block = of_segment[id(segment)]
                index = block.instances.index(segment)
                members.append(_instantiation(block, index))
                where = f"{name}.{position}" if len(stage) > 1 else name
                for attr, local in zip(segment.attrs, block.locals):
                    renamed[attr] = f"{where}.{local}"
            ctor = members[0] if len(stage) == 1 else "nn.Sequential(" + ", ".join(members) + ")"
            blocks = [of_segment[id(s)] for s in stage]
            resets = [codegen.has_reset_parameters(b.source) for b in blocks]
            if len(stage) == 1:
                init = ["{m}.reset_parameters()"] if resets[0] else []
            elif all(resets):
                init = ["for block in {m}:", "    block.reset_parameters()"]
            else:
                init = [f"{{m}}[{i}].reset_parameters()" for i, r in enumerate(resets) if r]
            # No comment: the stage is named after Keras's, each class's docstring lists its blocks.
            stage_decls[stage[0].attrs[0]] = codegen.Declaration(name, ctor, None, init)
            call = codegen.Statement(stage[-1].out_var, f"self.{name}({stage[0].in_var})")
            calls[stage[0].start] = (stage[-1].end, call)
        declarations = []
        for decl in self.source.declarations:
            if decl.attr in stage_decls:
                declarations.append(stage_decls[decl.attr])
            if decl.attr not in moved:
                inits = tuple(block_templates.template(line) for line in decl.init)
                init = self._init_lines([decl.attr], [inits]) if decl.init else []
                declarations.append(codegen.Declaration(decl.attr, decl.ctor, decl.comment, init))
        statements: list = []
        position = 0
        while position < len(self.source.statements):
            if position in calls:
                position, call = calls[position]
                statements.append(call)
                continue
            statements.append(self.source.statements[position])
            position += 1
        main = codegen.ClassSource(
            class_name=self.source.class_name,
            header=self.source.header,
            docstring=self.source.docstring,
            forward_args=self.source.forward_args,
            declarations=declarations,
            statements=statements,
            returns=self.source.returns,
            helpers=self.source.helpers,
            classes=[*self.source.classes, *(c.source for c in classes)],
        )
        keys = {}
        for key in self.state:
            attr, _, rest = key.partition(".")
            new = renamed.get(attr, attr)
            keys[key] = f"{new}.{rest}" if rest else new
        return Structured(main, keys, renamed)


def _derived(vectors: dict, paths: list[dict]) -> dict[tuple, tuple[tuple, str]]:
    """Varying numbers that follow from another one: a TF 'same' padding that is the kernel
    size halved (``padding=kernel_size // 2``) is not a parameter of its own."""
    actual = {v: [p[members[0][0]].value for p in paths] for v, members in vectors.items()}
    integral = [v for v in vectors if all(type(x) is int for x in actual[v])]
    derived: dict[tuple, tuple[tuple, str]] = {}
    paddings = [v for v in integral if all(slot.hint == "padding" for _, slot in vectors[v])]
    for target in paddings:
        for source in integral:
            if source == target or source in derived or any(d[0] == target for d in derived.values()):
                continue
            if all(y == x // 2 for x, y in zip(actual[source], actual[target])):
                derived[target] = (source, " // 2")
                break
    return derived


def _without_numbers(comment: str) -> str:
    """``# Keras's glorot_uniform: fans (144, 9) of ...`` less its numbers."""
    return re.sub(r"\s*\([\d\s,.]+\)|\s\d+(\.\d+)?\b", "", comment)


_FEATURES = ("projection", "residual", "strided")


def _features(block: _BlockClass) -> dict[str, bool]:
    """What a block class does that another of its kind may not (see ``_name_classes``)."""
    x = block.source.forward_args[0]
    main = {x, *block.source.returns}
    # Statements starting a second path from the block's input: ``shortcut = x`` (identity) or
    # ``shortcut = self.conv0(x)`` (projection); a squeeze-and-excite starts from a later x.
    starts = [
        st for st in block.source.statements[:3] if st.target not in main and x in _LOCAL.findall(st.expr)
    ]
    return {
        "projection": any("self." in st.expr for st in starts),
        "residual": bool(starts),
        "strided": any(re.search(r"\bstride=(stride|[2-9])", d.ctor) for d in block.source.declarations),
    }


# -- names ----------------------------------------------------------------------------------------
def _module_attributes() -> frozenset[str]:
    """Names a stage attribute must not shadow (``training``, ``forward``...)."""
    from torch import nn

    return frozenset(dir(nn.Module)) | {"reset_parameters"}


_MODULE_ATTRIBUTES = _module_attributes()


def _instantiation(block: _BlockClass, index: int) -> str:
    """``Block(256, 64, stride=2)``: channel counts positional, the rest by keyword."""
    args = []
    for param in block.params:
        value = block.values[param][index]
        args.append(value if param.endswith(("channels", "features")) else f"{param}={value}")
    return f"{block.name}({', '.join(args)})"
