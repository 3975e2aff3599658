"""Recurrent layers: SimpleRNN, LSTM, GRU, RNN (built-in cells, StackedRNNCells), Bidirectional.

Where ``nn.LSTM``/``nn.GRU``/``nn.RNN`` compute the cell exactly they are used (fused kernels,
cuDNN on GPU); other cells step through time in the ``keras_rnn_loop`` helper (see
:mod:`recurrent_cells` for the weight layouts).

Keras semantics kept exactly:

* ``return_sequences``/``return_state`` (one output per state), ``initial_state`` from any branch
  (node inputs found with ``argument_inputs("initial_state")``), ``go_backwards`` (Keras reverses
  the input and returns the outputs in processing order; Bidirectional flips its backward
  sequence back), ``unroll`` (same numbers, only Keras's graph differs).
* Masks (an ``Embedding(mask_zero=True)``/``Masking`` upstream, or any boolean (N, T) tensor
  passed as ``mask=``): at a masked step Keras carries the state over and repeats the previous
  output (0 before the first step; 0 at every masked step in a Bidirectional returning
  sequences, Keras's ``zero_output_for_mask``). For the torch modules the ``keras_masked_rnn``
  helper moves each sequence's unmasked steps to the front, in order, and runs them packed: that
  skips exactly the masked steps, holes included (right-padded batches are the case where nothing
  moves), on the fused kernels. The explicit loop applies the mask step by step with ``torch.where``.
* ``dropout``: Keras drops input features with one mask for all steps (training only); kept under
  ``self.training``. ``recurrent_dropout`` cannot be applied by the fused modules: inference is
  unchanged, training differs (noted). ``stateful=True`` is refused by name.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import layout
from ..registry import Converted, Fragment, LayerCall, Step, Submodule, converter
from .recurrent_cells import CellPlan, plan_cell

_MASKED_RNN = '''
def keras_masked_rnn(rnn, x, mask, state=None):
    """Run batch-first ``rnn`` (nn.LSTM/GRU/RNN) on ``x`` as Keras does under ``mask``.

    Keras skips masked steps: the state carries over them. Moving each sequence's unmasked
    steps to the front, in time order, and packing them does exactly that, holes included
    (a right-padded batch moves nothing), on torch's fused kernels. Returns the outputs at
    their own steps (0 at masked ones) and the final state (the initial one for a sequence
    with every step masked).
    """
    lengths = mask.sum(dim=1)
    # Unmasked steps first, in time order.
    order = torch.argsort(~mask, dim=1, stable=True)
    steps = x.gather(1, order[..., None].expand_as(x))
    packed = nn.utils.rnn.pack_padded_sequence(
        steps, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
    )
    out, final = rnn(packed, state)
    out = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0]
    out = torch.zeros_like(out).scatter(1, order[..., None].expand_as(out), out)
    out = torch.where(mask[..., None], out, 0.0)
    # Packing needs one step per sequence: a fully masked one ran one, undone here.
    ran = (lengths > 0)[None, :, None]
    if isinstance(final, tuple):
        initial = state if state is not None else tuple(map(torch.zeros_like, final))
        return out, tuple(torch.where(ran, f, s) for f, s in zip(final, initial))
    initial = state if state is not None else torch.zeros_like(final)
    return out, torch.where(ran, final, initial)
'''

_REPEAT_LAST = '''
def repeat_last_output(outputs, mask):
    """Keras's output at a masked step: the previous step's (0 before the first unmasked one).

    ``outputs`` must be 0 at masked steps (as ``keras_masked_rnn`` returns them).
    """
    steps = torch.arange(mask.shape[1], device=mask.device)
    last = torch.where(mask, steps, 0).cummax(dim=1).values
    return outputs.gather(1, last[..., None].expand_as(outputs))
'''

_LOOP = '''
def keras_rnn_loop(cell, x, state=None, mask=None, zero_masked_outputs=False):
    """Step ``cell`` through ``x`` (N, T, F) as Keras's RNN loop does.

    ``cell(x_t, *state)`` returns the step's output then the new states, as a Keras cell does.
    At a masked step (``mask`` False) the state carries over and the output repeats the
    previous one (0 with ``zero_masked_outputs``, as Keras's Bidirectional returns them).
    Returns (outputs (N, T, H), final state).
    """
    state = cell.zero_state(x) if state is None else tuple(state)
    outputs, previous = [], None
    for t in range(x.shape[1]):
        output, *new_state = cell(x[:, t], *state)
        if mask is not None:
            keep = mask[:, t].view(-1, *[1] * (output.dim() - 1))  # (N, 1, ...)
            if zero_masked_outputs or previous is None:
                previous = torch.zeros_like(output)
            output = torch.where(keep, output, previous)
            new_state = tuple(torch.where(keep, new, old) for new, old in zip(new_state, state))
        outputs.append(output)
        previous, state = output, tuple(new_state)
    return torch.stack(outputs, dim=1), state
'''


@dataclass
class _Run:
    """One pass of one cell over the sequence, and how its outputs are read back.

    Extraction methods take ``r``, the expression holding the pass's result: ``(outputs,
    final state)`` in torch's format for the modules (``h_n`` of shape (directions, N, H)), a
    tuple of (N, H) states for the explicit loop.
    """

    plan: CellPlan
    module: str  # "{m}", "{m_forward}"...
    mask: str | None
    go_backwards: bool
    zero_masked: bool
    direction: int | None = None  # which half of a fused bidirectional module

    @property
    def fused(self) -> bool:
        return self.plan.exact_module

    def call(self, seq: str, states: list[str] | None, helpers: dict[str, str]) -> str:
        if self.go_backwards:
            seq = f"{seq}.flip(1)"
        mask = None if self.mask is None else (f"{self.mask}.flip(1)" if self.go_backwards else self.mask)
        if not self.fused:
            helpers["keras_rnn_loop"] = _LOOP
            args = [self.module, seq]
            if not states and hasattr(self.plan, "zero_state"):  # a traced cell: Keras's zeros
                states = self.plan.zero_state("{x0}")
            if states:
                args.append(f"({', '.join(states)},)" if len(states) == 1 else f"({', '.join(states)})")
            if mask is not None:
                args.append(f"mask={mask}")
                if self.zero_masked:
                    args.append("zero_masked_outputs=True")
            return f"keras_rnn_loop({', '.join(args)})"
        args = [seq]
        if mask is not None:
            helpers["keras_masked_rnn"] = _MASKED_RNN
            args = [self.module, seq, mask]
        if states:
            args.append(torch_state(self.plan, [[s] for s in states]))
        return f"{self.module}({', '.join(args)})" if mask is None else f"keras_masked_rnn({', '.join(args)})"

    def sequence(self, r: str, helpers: dict[str, str]) -> str:
        out = f"{r}[0]"
        if self.direction is not None:
            units = self.plan.units
            out += f"[..., :{units}]" if self.direction == 0 else f"[..., {units}:]"
        if self.fused and self.mask is not None and not self.zero_masked:
            helpers["repeat_last_output"] = _REPEAT_LAST
            mask = f"{self.mask}.flip(1)" if self.go_backwards else self.mask
            return f"repeat_last_output({out}, {mask})"
        return out

    def last(self, r: str) -> str:
        if self.fused and (self.mask is not None or self.direction is not None):
            return self.states(r)[0]  # h_n: the last unmasked step's output
        return f"{r}[0][:, -1]"

    def states(self, r: str) -> list[str]:
        if not self.fused:
            return [f"{r}[1][{i}]" for i in range(self.plan.n_states)]
        d = self.direction or 0
        if self.plan.kind == "LSTM":
            return [f"{r}[1][0][{d}]", f"{r}[1][1][{d}]"]
        return [f"{r}[1][{d}]"]


def torch_state(plan: CellPlan, per_direction: list[list[str]]) -> str:
    """nn.LSTM/GRU/RNN's initial state from Keras's (N, H) states, one list per state."""

    def stacked(exprs: list[str]) -> str:
        return f"{exprs[0]}.unsqueeze(0)" if len(exprs) == 1 else f"torch.stack([{', '.join(exprs)}])"

    if plan.kind == "LSTM":
        return f"({stacked(per_direction[0])}, {stacked(per_direction[1])})"
    return stacked(per_direction[0])


# -- shared reading of a recurrent call -----------------------------------------------------------
def _refuse_stateful(call: LayerCall, layer) -> None:
    if getattr(layer, "stateful", False):
        raise call.unsupported(
            "stateful=True keeps the last state between batches in Keras variables; the port is a "
            "pure function of its inputs: pass the state as initial_state and return it (return_state=True)"
        )


def _argument(call: LayerCall, name: str) -> list[str]:
    """Placeholders of the node inputs passed as ``name`` (``mask``, ``initial_state``)."""
    return ["{x" + str(i) + "}" for i in call.argument_inputs(name)]


def _mask(call: LayerCall) -> str | None:
    masks = call.argument_inputs("mask")
    if not masks:
        return None
    index = masks[0]
    placeholder = "{x" + str(index) + "}"
    return placeholder if call.inputs[index].dtype == "bool" else f"{placeholder}.bool()"


def _sequence(call: LayerCall) -> str:
    """The main input as (N, T, F), Keras's layout for recurrent layers."""
    spec = call.inputs[0]
    wanted = layout.identity(spec.rank)
    if len(call.inputs) == 1:
        return call.input_as(0, wanted)
    return layout.permute_expression("{x0}", spec.perm, wanted) or "{x0}"


def _dropout(call: LayerCall, cells, seq: str) -> tuple[Fragment, str]:
    """Keras's input dropout (one mask for all steps, training only), notes on recurrent dropout,
    and the expression of the sequence after them."""
    rate = float(getattr(cells[0], "dropout", 0.0) or 0.0)
    code = Fragment()
    if any(getattr(cell, "recurrent_dropout", 0.0) for cell in cells):
        code.notes.append(
            "Keras recurrent_dropout (training only) is not applied: inference is identical, "
            "training is without it."
        )
    if not rate:
        return code, seq
    code.steps.append(
        Step(
            f"{seq} * F.dropout(torch.ones_like({seq}[:, :1]), p={rate!r}, training=self.training)",
            "Keras dropout: one input mask shared by all steps (training only)",
        )
    )
    return code, "{x}"


def _cells(call: LayerCall, layer) -> list:
    cell = layer.cell
    if type(cell).__name__ == "StackedRNNCells":
        return list(cell.cells)
    return [cell]


def _pass_and_read(pass_expr: str, outputs: list[str], comment: str | None) -> Fragment:
    """The pass then the outputs read from its result (``{r}`` in ``outputs``); one step when the
    result is read once."""
    if len(outputs) == 1 and outputs[0].count("{r}") == 1:
        return Fragment([Step(outputs[0].replace("{r}", pass_expr), comment)])
    read = ", ".join(o.replace("{r}", "{x}") for o in outputs)
    return Fragment([Step(pass_expr, comment), Step(read)])


def _identity_specs(call: LayerCall) -> list:
    return [call.output_spec(layout.identity(len(shape)), i) for i, shape in enumerate(call.output_shapes)]


def _describe(layer) -> str:
    parts = []
    if getattr(layer, "go_backwards", False):
        parts.append("Keras go_backwards: the sequence is read reversed, outputs stay in that order")
    if getattr(layer, "unroll", False):
        parts.append("Keras unroll=True only changes its graph, not the numbers")
    return "; ".join(parts) or None


# -- SimpleRNN, LSTM, GRU, RNN ----------------------------------------------------------------------
@converter("SimpleRNN", "LSTM", "GRU", "RNN")
def convert_rnn(call: LayerCall) -> Converted:
    layer = call.layer
    _refuse_stateful(call, layer)
    cells = _cells(call, layer)
    plans = [plan_cell(call, cell) for cell in cells]
    mask = _mask(call)
    states = _argument(call, "initial_state")
    return_sequences, return_state = bool(layer.return_sequences), bool(layer.return_state)
    zero_masked = bool(getattr(layer, "zero_output_for_mask", False))
    if zero_masked and mask is not None and not return_sequences:
        raise call.unsupported("zero_output_for_mask=True with return_sequences=False under a mask")
    if len(plans) > 1 and (states or return_state):
        raise call.unsupported("StackedRNNCells with initial_state or return_state (nested states)")
    code = Fragment(notes=[note for plan in plans for note in plan.notes])
    for plan in plans:
        code.helpers.update(plan.helpers)
    dropout, seq = _dropout(call, cells, _sequence(call))
    code += dropout
    modules: dict[str, Submodule] = {}
    for index, plan in enumerate(plans):
        key = "" if len(plans) == 1 else f"cell{index}"
        modules[key] = plan.module() if plan.exact_module else plan.explicit()
        run = _Run(
            plan,
            "{m}" if not key else "{m_" + key + "}",
            mask,
            layer.go_backwards and index == 0,
            zero_masked,
        )
        if index > 0 and layer.go_backwards:  # later cells read the first one's reversed order
            run.mask = None if mask is None else f"{mask}.flip(1)"
        pass_expr = run.call(seq, states if index == 0 else None, code.helpers)
        last_cell = index == len(plans) - 1
        if not last_cell:
            code.steps.append(
                Step(f"{pass_expr}[0]", f"StackedRNNCells: cell {index} feeds cell {index + 1}")
            )
            seq = "{x}"
            continue
        outputs = [run.sequence("{r}", code.helpers) if return_sequences else run.last("{r}")]
        if return_state:
            outputs += run.states("{r}")
        code += _pass_and_read(pass_expr, outputs, _describe(layer))
    return Converted.from_fragment(code, _identity_specs(call), modules)


# -- Bidirectional ------------------------------------------------------------------------------------
_MERGE = {
    "sum": "{a} + {b}",
    "mul": "{a} * {b}",
    "ave": "({a} + {b}) / 2",
}


@converter("Bidirectional")
def convert_bidirectional(call: LayerCall) -> Converted:
    layer = call.layer
    forward, backward = layer.forward_layer, layer.backward_layer
    for direction in (forward, backward):
        _refuse_stateful(call, direction)
        if type(direction.cell).__name__ == "StackedRNNCells":
            raise call.unsupported("a Bidirectional of StackedRNNCells")
    plans = [plan_cell(call, forward.cell), plan_cell(call, backward.cell)]
    mask = _mask(call)
    states = _argument(call, "initial_state")
    half = len(states) // 2
    return_sequences, return_state = bool(layer.return_sequences), bool(layer.return_state)
    merge = layer.merge_mode
    code = Fragment()
    for plan in plans:
        code.helpers.update(plan.helpers)
        code.notes += [n for n in plan.notes if n not in code.notes]
    dropout, seq = _dropout(call, [forward.cell, backward.cell], _sequence(call))
    code += dropout
    if _fusable(forward, backward, plans):
        # One nn.LSTM/GRU(bidirectional=True): its reverse half reads the sequence backwards and
        # returns its outputs aligned with the input steps, as Keras's flipped backward outputs.
        module = plans[0].module(bidirectional=plans[1])
        runs = [_Run(plans[0], "{m}", mask, False, return_sequences, d) for d in (0, 1)]
        if states:
            per_state = [[states[i], states[half + i]] for i in range(half)]
            args = [runs[0].module, seq] if mask is None else ["{m}", seq, mask]
            args.append(torch_state(plans[0], per_state))
            pass_expr = (
                f"{{m}}({', '.join(args[1:])})" if mask is None else f"keras_masked_rnn({', '.join(args)})"
            )
            if mask is not None:
                code.helpers["keras_masked_rnn"] = _MASKED_RNN
        else:
            pass_expr = runs[0].call(seq, None, code.helpers)
        result = ["{r}", "{r}"]
        modules = {"": module}
    else:
        runs = [
            _Run(plans[0], "{m_forward}", mask, forward.go_backwards, return_sequences),
            _Run(plans[1], "{m_backward}", mask, backward.go_backwards, return_sequences),
        ]
        calls = [
            runs[0].call(seq, states[:half] or None, code.helpers),
            runs[1].call(seq, states[half:] or None, code.helpers),
        ]
        pass_expr = f"({calls[0]}, {calls[1]})"
        result = ["{r}[0]", "{r}[1]"]
        modules = {
            "forward": plans[0].module() if plans[0].exact_module else plans[0].explicit(),
            "backward": plans[1].module() if plans[1].exact_module else plans[1].explicit(),
        }
    if return_sequences:
        a, b = runs[0].sequence(result[0], code.helpers), runs[1].sequence(result[1], code.helpers)
        if runs[1].direction is None:
            b = f"{b}.flip(1)"  # Keras flips the backward layer's outputs back to input order
    else:
        a, b = runs[0].last(result[0]), runs[1].last(result[1])
    if merge is None:
        outputs = [a, b]
    elif merge == "concat" and return_sequences and runs[0].direction is not None:
        outputs = ["{r}[0]"]  # the fused module's output is already [forward, backward]
    elif merge == "concat":
        outputs = [f"torch.cat([{a}, {b}], dim=-1)"]
    else:
        outputs = [_MERGE[merge].format(a=a, b=b)]
    if return_state:
        outputs += runs[0].states(result[0]) + runs[1].states(result[1])
    comment = f"Keras Bidirectional(merge_mode={merge!r})"
    code += _pass_and_read(pass_expr, outputs, comment)
    return Converted.from_fragment(code, _identity_specs(call), modules)


def _fusable(forward, backward, plans: list[CellPlan]) -> bool:
    """One bidirectional torch module computes both directions exactly."""
    first, second = plans
    return (
        not forward.go_backwards
        and backward.go_backwards
        and first.exact_module
        and second.exact_module
        and (first.kind, first.units, first.input_size, first.module_options)
        == (second.kind, second.units, second.input_size, second.module_options)
    )
