"""Local variable names in a generated ``forward``: the main path is ``x``, branches get short names.

A hand port keeps the running tensor in ``x`` and names a second tensor only while it is alive
alongside it (``shortcut``, ``se``, ``skip``); after the merge the result is ``x`` again. This is a
small register allocator over the graph: a value's name is handed back once every value bound to
it has been read for the last time, and the next value takes it. Names are built from the graph's
structure and the stable layer names only, so a re-run of the same cell gives the same code.

``compare`` is unaffected by the reuse: its tap on a layer's output comes right after the
assignment, before the name is bound to anything else.
"""

from __future__ import annotations

import builtins
import math
from dataclasses import dataclass

from . import naming
from .ir import Graph, Node

_BUILTINS = frozenset(dir(builtins))


def _local_identifier(raw: str, fallback: str) -> str:
    """A local variable name that does not shadow a Python builtin (``sum_``, not ``sum``; PEP 8)."""
    name = naming.identifier(raw, fallback)
    return f"{name}_" if name in _BUILTINS else name


MAX_LENGTH = 20  # a branch named after its layer: at most this many characters
SHORT = 12  # and only its last words when the whole name is longer than this
_COMPARISONS = {"Equal", "NotEqual", "Greater", "GreaterEqual", "Less", "LessEqual"}  # name: mask


@dataclass(frozen=True)
class Arm:
    """A chain of single-input nodes from a fork: how long it is and which node merges it."""

    length: int
    merge: Node | None
    pooled: bool  # it reduces the spatial axes (a squeeze-and-excite's global pooling)


def _reads_only_sizes(node: Node) -> bool:
    """A node reading its inputs' runtime sizes only (tracing's ``torch.arange(x.shape[1])``)."""
    return getattr(node.layer, "reads_only_sizes", False)


def _mask_into_values(node: Node, index: int) -> bool:
    """Input ``index`` is an integer or boolean mask among a node's inputs, its output floats.

    The output is then what the other inputs hold (attention over a causal mask): it does not
    take the mask's name.
    """
    if len({id(v) for v in node.inputs}) < 2 or not node.outputs:
        return False
    return "float" not in node.inputs[index].dtype and "float" in node.outputs[0].dtype


def _kind(node: Node | None) -> str:
    """``add``, ``multiply``, ``concatenate``... for Keras's merge layers and keras.ops alike."""
    return "" if node is None else node.class_name.lower()


def _pools(node: Node) -> bool:
    name = node.class_name.lower()
    return "globalaverage" in name or "globalmax" in name or name == "mean"


class Locals:
    """Hands out ``forward``'s local names for one graph; see the module docstring.

    ``now`` is the index of the node being converted: a value whose last reader comes at or
    before it is dead, and its name may be the node's own output.
    """

    def __init__(self, graph: Graph):
        self.graph = graph
        self.readers = graph.readers()
        self.position = {id(node): i for i, node in enumerate(graph.nodes)}
        self.last_use: dict[int, float] = {}
        for i, node in enumerate(graph.nodes):
            for value in node.inputs:
                self.last_use[id(value)] = i
        for value in graph.outputs:
            self.last_use[id(value)] = math.inf
        self.now = -1
        self.bound: dict[str, list[int]] = {}  # name -> ids of the values it has held
        self.fixed: set[str] = set()  # names never reused (constants made in forward, pinned inputs)
        self.used: set[str] = set()  # every name handed out (a fixed name avoids them all)
        self.side: set[str] = set()  # names given to branches, not to the main path

    # -- bookkeeping --------------------------------------------------------------------------
    def alive(self, value_id: int) -> bool:
        return self.last_use.get(value_id, -1) > self.now

    def is_free(self, name: str) -> bool:
        return name not in self.fixed and not any(self.alive(v) for v in self.bound.get(name, ()))

    def is_local(self, name: str) -> bool:
        """A name this allocator handed out, not an expression (``self.kernel``, a constant)."""
        return name in self.bound

    def bind(self, name: str, value) -> None:
        if not name.isidentifier():  # a weight (self.kernel) or an expression: never assigned to
            return
        self.used.add(name)
        self.bound.setdefault(name, []).append(id(value))

    def holds(self, name: str, value) -> bool:
        """Whether ``name`` still holds ``value`` (nothing has been assigned to it since)."""
        held = self.bound.get(name, [])
        return bool(held) and held[-1] == id(value)

    def pin(self, name: str) -> None:
        self.fixed.add(name)

    def latest(self) -> str:
        """The name most recently bound to a value that is still alive (any live local)."""
        live = [name for name, held in self.bound.items() if held and self.alive(held[-1])]
        return live[-1] if live else next(iter(self.bound))

    def fixed_name(self, raw: str, fallback: str = "layer") -> str:
        """A name for the rest of ``forward`` (a constant, an unread extra output)."""
        name = self._unique(_local_identifier(raw, fallback), lambda n: n not in self.used)
        self.used.add(name)
        self.fixed.add(name)
        return name

    def fresh(self, raw: str, fallback: str = "layer") -> str:
        """``raw`` as an identifier, suffixed only while a live value holds the plain one."""
        return self._unique(_local_identifier(raw, fallback), self.is_free)

    @staticmethod
    def _unique(base: str, ok) -> str:
        name, suffix = base, 1
        while not ok(name):
            name = f"{base}_{suffix}"
            suffix += 1
        return name

    # -- a node's output ------------------------------------------------------------------------
    def output_name(self, node: Node, in_vars: list[str], steps) -> tuple[str, str | None]:
        """The name of ``node``'s first output, and the name to keep its input in, if any.

        The second item is set when the output continues the main path while its input is still
        needed by a merge later (a skip connection): the caller writes ``keep = x`` first and the
        output takes ``x``.
        """
        self.now = self.position[id(node)]
        name, keep = self._choose(node, in_vars, steps)
        self.used.add(name)  # taken before the node's other outputs are named
        return name, keep

    def _choose(self, node: Node, in_vars: list[str], steps) -> tuple[str, str | None]:
        if _reads_only_sizes(node):  # positions = torch.arange(x.shape[1]): a value of its own
            return self._side(self.short_name(node)), None
        if len(self.graph.outputs) > 1 and self.last_use.get(id(node.outputs[0])) == math.inf:
            # One of several results: named after its layer, so ``return`` says what each is.
            return self.fresh(self.short_name(node)), None
        reusable = [
            i
            for i, var in enumerate(in_vars)
            if self.is_local(var)
            and self.is_free(var)
            and self._safe(i, in_vars, steps)
            and not _mask_into_values(node, i)
        ]
        if reusable:
            # Prefer the main path's name: ``x = shortcut + x`` leaves ``x`` holding the sum.
            reusable.sort(key=lambda i: in_vars[i] in self.side)
            return in_vars[reusable[0]], None
        sources = {id(v): v for v in node.inputs}
        if len(sources) != 1 or not self.is_local(in_vars[0]):  # a new value, named after its layer
            return self._side(self.short_name(node)), None
        value = next(iter(sources.values()))
        mine = self.arm(node)
        others = [self._arm_of(reader) for reader in self._later_readers(value)]
        # Whether every other use of the input rejoins this arm at its merge.
        rejoins = mine.merge is not None and {id(o.merge) for o in others} == {id(mine.merge)}
        kind = _kind(mine.merge) if rejoins else ""
        if kind == "multiply":  # a gate on the main path: squeeze-and-excite
            return self._side("se" if mine.pooled else "gate"), None
        if kind and any(o.length == 0 for o in others):
            # A skip connection: the input goes straight into the merge, so this arm is the
            # main path and the input waits under a branch name (``shortcut = x``).
            keep = self._side("shortcut" if kind == "add" else "skip")
            self._rebind(in_vars[0], keep)
            return in_vars[0], keep
        names = {"add": "shortcut", "concatenate": "branch"}
        return self._side(names.get(kind) or self.short_name(node)), None

    def _side(self, raw: str) -> str:
        name = self.fresh(raw)
        self.side.add(name)
        return name

    def _rebind(self, old: str, new: str) -> None:
        """The live values ``old`` holds are now held by ``new`` (after ``new = old``)."""
        moved = [v for v in self.bound.get(old, []) if self.alive(v)]
        self.bound[old] = [v for v in self.bound.get(old, []) if not self.alive(v)]
        self.bound.setdefault(new, []).extend(moved)
        self.used.add(new)

    @staticmethod
    def _safe(index: int, in_vars: list[str], steps) -> bool:
        """Whether writing input ``index``'s name in the first step leaves later steps correct.

        A converter's later steps read the running result as ``{x}``; one that reads an input
        again (``{x1}``) after the first step needs that input's name untouched.
        """
        var = in_vars[index]
        placeholders = [f"{{x{i}}}" for i, v in enumerate(in_vars) if v == var]
        return not any(p in step.expr for step in steps[1:] for p in placeholders)

    def _later_readers(self, value) -> list[Node]:
        readers = {
            id(n): n
            for n in self.readers.get(id(value), [])
            if self.position[id(n)] > self.now and not _reads_only_sizes(n)  # not a use of the values
        }
        return list(readers.values())

    def _arm_of(self, reader: Node) -> Arm:
        """The arm a later reader of the forked value starts (length 0: it is the merge itself)."""
        if len({id(v) for v in reader.inputs}) > 1:
            return Arm(0, reader, False)
        return self.arm(reader)

    def arm(self, node: Node) -> Arm:
        """Follow ``node``'s output through single-input nodes to where it merges.

        A fork on the way whose arms all meet again (a squeeze-and-excite inside a residual
        block) is followed through its own merge.
        """
        length, pooled, current = 1, _pools(node), node
        while len(current.outputs) == 1:
            out = current.outputs[0]
            readers = list({id(n): n for n in self.readers.get(id(out), [])}.values())
            if self.last_use.get(id(out)) == math.inf or not readers:
                break
            if len(readers) == 1:
                reader = readers[0]
                if len({id(v) for v in reader.inputs}) > 1:
                    return Arm(length, reader, pooled)
                length, pooled, current = length + 1, pooled or _pools(reader), reader
                continue
            arms = [self._arm_of(reader) for reader in readers]
            merge = arms[0].merge
            if merge is None or any(a.merge is not merge for a in arms):
                break
            if len({id(v) for v in merge.inputs}) != len(arms):
                break
            length, current = length + max(a.length for a in arms) + 1, merge
        return Arm(length, None, pooled)

    def short_name(self, node: Node) -> str:
        """The producing layer's name, its last words when it is long (``conv2_block1_0_conv``
        -> ``conv``: the block numbers are in the attribute the line calls)."""
        base = self.graph.attributes.get(id(node.layer)) or naming.stable(node.layer.name, node.class_name)
        if node.is_operation and node.class_name in _COMPARISONS:
            base = "mask"  # `mask = x != 0`, not `not_equal = x != 0` (or `equal` for >=)
        words = naming.identifier(base).split("_")
        name = words.pop()
        while words and (len(name) < 4 or len(words[-1]) + 1 + len(name) <= SHORT):
            name = f"{words.pop()}_{name}"
        return name[-MAX_LENGTH:].lstrip("_0123456789") or "branch"
