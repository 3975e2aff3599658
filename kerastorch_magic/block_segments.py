"""Step 1 of :mod:`blocks`: ``forward`` cut into segments, the candidates for block classes.

Each Keras layer's statements are a unit; ``forward`` is cut wherever a single tensor is alive
(the main path), so a residual block, whose shortcut lives across it, is one segment. Segments
without a branch are joined by the Keras layer-name prefix they share (``block2a_``); inside a
stretch where skips stay alive (a U-Net's encoder), runs of units sharing a name prefix that read
one tensor and leave one are segments too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from . import block_names as names_of
from . import codegen, naming

LOCAL = re.compile(r"(?<![.\w])([A-Za-z_]\w*)")
ATTRIBUTE = re.compile(r"\bself\.(\w+)")
_ACTIVATIONS = {"ReLU", "Activation", "LeakyReLU", "ELU", "PReLU", "Softmax"}  # end the block before


@dataclass
class Unit:
    """One Keras layer's statements (and taps) in ``forward``."""

    name: str  # the layer's stable name, as an identifier ("" for the final re-layout)
    anonymous: bool  # an automatic Keras name (``re_lu``): no block prefix to read from it
    activation: bool  # a Keras activation layer (it ends the block before it)
    start: int  # its span in ``source.statements``
    end: int


@dataclass
class Segment:
    units: list[Unit]
    block_id: str | None  # the Keras name prefix its layers share (``conv2_block1``)
    branched: bool = False  # a second tensor is alive inside it (a residual block)
    in_var: str = ""
    out_var: str = ""
    attrs: list[str] = field(default_factory=list)  # submodules it calls, in order of first use
    key: tuple = ()
    templates: list = field(default_factory=list)  # per attr (ctor, inits), then per statement

    @property
    def start(self) -> int:
        return self.units[0].start

    @property
    def end(self) -> int:
        return self.units[-1].end


# -- 1. units and segments ------------------------------------------------------------------------
def read_units(source: codegen.ClassSource, traces) -> list[Unit]:
    units: list[Unit] = []
    start = 0  # after the prologue (an input's memory format): it belongs to no layer
    while start < len(source.statements) and getattr(source.statements[start], "prologue", False):
        start += 1
    for position, item in enumerate(source.statements):
        if position < start or not isinstance(item, tuple):
            continue
        node = traces[item[0]].node
        only_taps = all(isinstance(s, tuple) for s in source.statements[start:position])
        if units and only_taps and start == units[-1].end and position == start:
            units[-1].end = position + 1  # a layer's second output: one more tap
            start = position + 1
            continue
        name = naming.identifier(node.local_name(0))
        auto = naming.stable(node.layer.name, node.class_name) == naming.snake_case(node.class_name)
        units.append(Unit(name, auto, node.class_name in _ACTIVATIONS, start, position + 1))
        start = position + 1
    if start < len(source.statements):
        units.append(Unit("", True, False, start, len(source.statements)))
    return units


def _reads(expr: str, names: set[str]) -> set[str]:
    return {m for m in LOCAL.findall(expr) if m in names}


def _live_before(source: codegen.ClassSource) -> list[set[str]]:
    """The locals alive before each entry of ``source.statements`` (and after the last)."""
    statements = source.statements
    names = set(source.forward_args)
    for s in statements:
        if not isinstance(s, tuple):
            names.update(t.strip() for t in s.target.split(","))
    live = set(source.returns) & names
    out: list[set[str]] = [set()] * (len(statements) + 1)
    out[len(statements)] = set(live)
    for position in range(len(statements) - 1, -1, -1):
        s = statements[position]
        if not isinstance(s, tuple):
            live = (live - {t.strip() for t in s.target.split(",")}) | _reads(s.expr, names)
        out[position] = set(live)
    return out


def _prefixes(name: str) -> list[str]:
    """The block prefixes a layer name offers: its words up to each word with a digit
    (``conv2_block1_1_conv`` -> ``conv2``, ``conv2_block1``, ``conv2_block1_1``)."""
    words = name.split("_")
    return ["_".join(words[: i + 1]) for i, w in enumerate(words) if names_of.DIGIT.search(w)]


def _common_id(units: list[Unit]) -> str | None:
    named = [u for u in units if not u.anonymous]
    if not named:
        return None
    common = set(_prefixes(named[0].name))
    for unit in named[1:]:
        common &= set(_prefixes(unit.name))
    return max(common, key=len) if common else None


def _leaves(prefix: str, units: list[Unit]) -> bool:
    """Whether every named layer is ``prefix`` + a layer's own name (a number only at its end:
    ``..._downsampling_block_0`` + ``layernorm_0``), not a deeper numbered block (``block1_0_conv``)."""
    for unit in units:
        if unit.anonymous:
            continue
        words = unit.name[len(prefix) + 1 :].split("_")
        if any(names_of.DIGIT.search(w) for w in words[:-1]):
            return False
    return True


def cut_segments(source: codegen.ClassSource, units: list[Unit]) -> list[Segment]:
    """Cut where one local is alive, then join neighbours that share a Keras block prefix.

    A piece of automatically named layers joins the block before it when that block has a name
    prefix, or when it is an activation (the ReLU after a residual add).
    """
    live = _live_before(source)
    pieces: list[list[Unit]] = []
    current: list[Unit] = []
    for unit in units:
        current.append(unit)
        if len(live[unit.end]) == 1:
            pieces.append(current)
            current = []
    if current:
        pieces.append(current)
    segments: list[Segment] = []
    for piece in pieces:
        block_id = _common_id(piece)
        previous = segments[-1] if segments else None
        anonymous = all(u.anonymous for u in piece)
        if (
            previous is not None
            and anonymous
            and (previous.block_id is not None or all(u.activation for u in piece))
        ):
            previous.units += piece
            continue
        joined = _common_id(previous.units + piece) if previous is not None and block_id is not None else None
        if joined is not None and (
            joined == block_id == previous.block_id or _leaves(joined, previous.units + piece)
        ):
            previous.units += piece
            previous.block_id = joined
            continue
        segments.append(Segment(piece, block_id))
    for segment in segments:
        segment.branched = any(len(live[p]) > 1 for p in range(segment.start + 1, segment.end))
        before, after = live[segment.start], live[segment.end]
        if len(before) == 1 and len(after) == 1:
            segment.in_var, segment.out_var = next(iter(before)), next(iter(after))
    return [part for segment in segments for part in _named_runs(source, segment, live)]


def _named_runs(source: codegen.ClassSource, segment: Segment, live: list[set[str]]) -> list[Segment]:
    """An unnamed stretch (a U-Net's encoder, with its skips alive) split at the named blocks in it.

    A run of layers sharing a Keras prefix (``enc2_a``, ``enc2_b``) is a block when it reads one
    tensor and leaves one, whatever else stays alive around it untouched (the skip tensors).
    """
    if segment.block_id is not None:
        return [segment]
    runs: list[list[Unit]] = []
    for unit in segment.units:
        run = runs[-1] if runs else None
        joined = _common_id(run + [unit]) if run and not unit.anonymous else None
        if run and (
            joined is not None and _leaves(joined, run + [unit]) or unit.anonymous and unit.activation
        ):
            run.append(unit)
        else:
            runs.append([unit])
    parts: list[Segment] = []
    for run in runs:
        block_id = _common_id(run)
        start, end = run[0].start, run[-1].end
        items = [st for st in source.statements[start:end] if not isinstance(st, tuple)]
        touched = {name for st in items for name in LOCAL.findall(f"{st.target} {st.expr}")}
        through = (live[start] & live[end]) - touched
        ins, outs = live[start] - through, live[end] - through
        if block_id is None or len(run) < 2 or len(ins) != 1 or len(outs) != 1:
            if parts and not parts[-1].block_id:
                parts[-1].units += run  # filler between the named blocks, never a block itself
            else:
                parts.append(Segment(list(run), None))
            continue
        parts.append(Segment(list(run), block_id, in_var=next(iter(ins)), out_var=next(iter(outs))))
    if not any(part.block_id for part in parts):
        return [segment]
    return parts
