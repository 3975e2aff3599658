"""Keras recurrent cells -> torch: ``nn.LSTM``/``nn.GRU``/``nn.RNN`` where exact, explicit cells otherwise.

Weight layouts. Keras keeps one ``kernel`` (F, G*H), one ``recurrent_kernel`` (H, G*H) and one bias
(G*H); torch keeps ``weight_ih`` (G*H, F), ``weight_hh`` (G*H, H) and two biases ``bias_ih`` and
``bias_hh`` that it adds up. So the kernels are transposed, Keras's bias goes to ``bias_ih`` and
``bias_hh`` is zero. LSTM gates are in the same order in both (i, f, c/g, o). GRU gates are z, r, h
in Keras and r, z, n in torch: the rows are reordered. GRU ``reset_after=True`` is torch's
formulation (two biases, Keras stores them as a (2, 3H) bias); ``reset_after=False`` (Keras 2's
default) applies the reset gate before the recurrent product, which no torch module does.

torch's modules are fixed to tanh/sigmoid (``nn.RNN``: tanh or relu). Any other activation or
GRU ``reset_after=False`` becomes an explicit cell class (a helper of the generated source) stepped
by the ``keras_rnn_loop`` helper (see :mod:`recurrent`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from .. import initializers
from ..registry import Converted, Fragment, LayerCall, Step, Submodule, converter
from .activations import activation_name, activation_steps
from .recurrent_traced import TracedCellPlan, is_custom_cell, plan_traced_cell

# Keras's GRU gate blocks are z, r, h; torch's are r, z, n.
_GRU_TO_TORCH = (1, 0, 2)

_LSTM_CELL = '''
class LSTMCellWithActivations(nn.Module):
    """One Keras LSTM step with any activations (nn.LSTM is fixed to tanh and sigmoid).

    Gates in Keras's (and torch's) order: input, forget, cell, output; one bias, as in Keras.
    """

    def __init__(self, input_size, hidden_size, activation, recurrent_activation, bias=True):
        super().__init__()
        self.activation, self.recurrent_activation = activation, recurrent_activation
        self.hidden_size = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        self.bias = nn.Parameter(torch.empty(4 * hidden_size)) if bias else None

    def zero_state(self, x):
        zeros = x.new_zeros(x.shape[0], self.hidden_size)
        return zeros, zeros

    def forward(self, x, h, c):
        z = F.linear(x, self.weight_ih, self.bias) + F.linear(h, self.weight_hh)
        i, f, g, o = z.chunk(4, dim=1)
        i, f, o = (self.recurrent_activation(gate) for gate in (i, f, o))
        c = f * c + i * self.activation(g)
        h = o * self.activation(c)
        return h, h, c  # the output, then the new state (h, c), as Keras returns them
'''

_GRU_CELL = '''
class GRUCellWithOptions(nn.Module):
    """One Keras GRU step: any activations, and reset_after=False (no torch module has either).

    Gates in Keras's order z (update), r (reset), h (candidate). reset_after=True resets the
    recurrent product (torch's nn.GRU formulation, two biases); reset_after=False resets the
    state before its product with the recurrent kernel (Keras 2's default, one bias).
    """

    def __init__(
        self, input_size, hidden_size, activation, recurrent_activation, bias=True, reset_after=True
    ):
        super().__init__()
        self.activation, self.recurrent_activation = activation, recurrent_activation
        self.hidden_size, self.reset_after = hidden_size, reset_after
        self.weight_ih = nn.Parameter(torch.empty(3 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(3 * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(3 * hidden_size)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(3 * hidden_size)) if bias and reset_after else None

    def zero_state(self, x):
        return (x.new_zeros(x.shape[0], self.hidden_size),)

    def forward(self, x, h):
        x_z, x_r, x_h = F.linear(x, self.weight_ih, self.bias_ih).chunk(3, dim=1)
        if self.reset_after:
            h_z, h_r, h_h = F.linear(h, self.weight_hh, self.bias_hh).chunk(3, dim=1)
            z = self.recurrent_activation(x_z + h_z)
            r = self.recurrent_activation(x_r + h_r)
            candidate = self.activation(x_h + r * h_h)
        else:
            w_zr, w_h = self.weight_hh.split([2 * self.hidden_size, self.hidden_size])
            h_z, h_r = F.linear(h, w_zr).chunk(2, dim=1)
            z = self.recurrent_activation(x_z + h_z)
            r = self.recurrent_activation(x_r + h_r)
            candidate = self.activation(x_h + F.linear(r * h, w_h))
        h = z * h + (1 - z) * candidate
        return h, h  # the output, then the new state
'''

_SIMPLE_CELL = '''
class SimpleRNNCellWithActivation(nn.Module):
    """One Keras SimpleRNN step with any activation (nn.RNN offers only tanh and relu)."""

    def __init__(self, input_size, hidden_size, activation, bias=True):
        super().__init__()
        self.activation, self.hidden_size = activation, hidden_size
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(hidden_size, hidden_size))
        self.bias = nn.Parameter(torch.empty(hidden_size)) if bias else None

    def zero_state(self, x):
        return (x.new_zeros(x.shape[0], self.hidden_size),)

    def forward(self, x, h):
        h = self.activation(F.linear(x, self.weight_ih, self.bias) + F.linear(h, self.weight_hh))
        return h, h  # the output, then the new state
'''

_KINDS = {"LSTMCell": "LSTM", "GRUCell": "GRU", "SimpleRNNCell": "RNN"}
_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


@dataclass
class CellPlan:
    """How one Keras cell becomes torch: a ``nn.LSTM``/``nn.GRU``/``nn.RNN`` or an explicit cell."""

    kind: str  # "LSTM" | "GRU" | "RNN"
    input_size: int
    units: int
    use_bias: bool
    exact_module: bool  # the torch module computes this cell exactly
    module_options: list[str]  # extra nn.LSTM/GRU/RNN arguments (bias=False, nonlinearity=...)
    kernel: np.ndarray  # torch layout (G*H, F), torch gate order for modules
    recurrent: np.ndarray  # (G*H, H)
    bias_ih: np.ndarray | None
    bias_hh: np.ndarray | None  # None: Keras has a single bias
    config: dict
    cell_ctor: str = ""  # the explicit cell's constructor call
    helpers: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def n_states(self) -> int:
        return 2 if self.kind == "LSTM" else 1

    def module(self, bidirectional: CellPlan | None = None) -> Submodule:
        """The nn.LSTM/GRU/RNN declaration (both directions when ``bidirectional`` is the backward cell)."""
        options = ["batch_first=True", *self.module_options]
        if bidirectional is not None:
            options.append("bidirectional=True")
        ctor = f"nn.{self.kind}({self.input_size}, {self.units}, {', '.join(options)})"
        state, init = self._module_state(""), self._module_init("")
        if bidirectional is not None:
            state.update(bidirectional._module_state("_reverse"))
            init += bidirectional._module_init("_reverse")
        return Submodule(ctor, state, init, self._layout_comment(bidirectional is not None))

    def explicit(self) -> Submodule:
        state = {"weight_ih": self.kernel, "weight_hh": self.recurrent}
        bias = "bias_ih" if self.kind == "GRU" else "bias"
        init = self._init("weight_ih", "weight_hh", bias, "bias_hh" if self.bias_hh is not None else None)
        if self.bias_ih is not None:
            state[bias] = self.bias_ih
        if self.bias_hh is not None:
            state["bias_hh"] = self.bias_hh
        return Submodule(self.cell_ctor, state, init)

    # -- internals ----------------------------------------------------------------------------
    def _module_state(self, suffix: str) -> dict[str, np.ndarray]:
        state = {f"weight_ih_l0{suffix}": self.kernel, f"weight_hh_l0{suffix}": self.recurrent}
        if self.use_bias:
            state[f"bias_ih_l0{suffix}"] = self.bias_ih
            hh = self.bias_hh if self.bias_hh is not None else np.zeros_like(self.bias_ih)
            state[f"bias_hh_l0{suffix}"] = hh
        return state

    def _module_init(self, suffix: str) -> list[str]:
        return self._init(
            *(f"{name}_l0{suffix}" for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
        )

    def _init(self, weight_ih: str, weight_hh: str, bias_ih: str, bias_hh: str | None) -> list[str]:
        """Keras's initialisers; ``bias_hh`` None: the cell has no second bias."""
        config, gates = self.config, _GATES[self.kind]
        keras_kernel = (self.input_size, gates * self.units)
        keras_recurrent = (self.units, gates * self.units)
        lines = initializers.init_lines(
            config.get("kernel_initializer"), keras_kernel, self.kernel.shape, weight_ih
        )
        lines += initializers.init_lines(
            config.get("recurrent_initializer"), keras_recurrent, self.recurrent.shape, weight_hh
        )
        if not self.use_bias:
            return lines
        bias_shape = (gates * self.units,)
        lines += initializers.init_lines(config.get("bias_initializer"), bias_shape, bias_shape, bias_ih)
        if self.kind == "LSTM" and config.get("unit_forget_bias", False):
            lines += initializers.unit_forget_bias_lines(bias_ih, self.units)
        if bias_hh is None:
            return lines
        if self.bias_hh is None:
            lines += ["# Keras has one bias: torch's second one stays 0", f"nn.init.zeros_({{m}}.{bias_hh})"]
        else:
            lines += initializers.init_lines(config.get("bias_initializer"), bias_shape, bias_shape, bias_hh)
        return lines

    def _layout_comment(self, both: bool) -> str:
        direction = " (both directions)" if both else ""
        if self.kind == "GRU":
            text = (
                f"Keras GRU kernels{direction}, transposed, gate blocks reordered from Keras's "
                "z, r, h to torch's r, z, n"
            )
            return text + ("; Keras's (2, 3H) bias is bias_ih and bias_hh." if self.use_bias else ".")
        text = f"Keras {'LSTM' if self.kind == 'LSTM' else 'SimpleRNN'} kernels{direction}, transposed"
        if self.kind == "LSTM":
            text += " (same gate order i, f, c, o)"
        return text + ("; Keras's one bias is bias_ih, bias_hh is 0." if self.use_bias else ".")


def plan_cell(call: LayerCall, cell, explicit: bool = False) -> CellPlan | TracedCellPlan:
    """The torch plan of one Keras cell: built-in (``LSTMCell``, ``GRUCell``, ``SimpleRNNCell``)
    or the user's own (traced, see :mod:`recurrent_traced`). ``explicit``: always the explicit
    cell class (one step called on its own, see :func:`convert_cell_step`)."""
    kind = _KINDS.get(type(cell).__name__)
    if kind is None and is_custom_cell(cell):
        return plan_traced_cell(call, cell)
    if kind is None:
        raise call.unsupported(
            f"cell {type(cell).__name__} is not supported here: only Keras's LSTMCell, GRUCell, "
            "SimpleRNNCell, StackedRNNCells of them and custom cells (traced) are"
        )
    config = cell.get_config()
    units = int(cell.units)
    kernel = np.asarray(cell.kernel.numpy())
    recurrent = np.asarray(cell.recurrent_kernel.numpy())
    use_bias = bool(cell.use_bias)
    bias = np.asarray(cell.bias.numpy()) if use_bias else None
    activation = activation_name(config.get("activation"))
    recurrent_activation = activation_name(config.get("recurrent_activation", "sigmoid"))
    reset_after = bool(config.get("reset_after", True))
    if kind == "RNN":
        exact = activation in ("tanh", "relu")
    else:
        exact = activation == "tanh" and recurrent_activation == "sigmoid" and (kind != "GRU" or reset_after)
    exact = exact and not explicit
    options = [] if use_bias else ["bias=False"]
    if kind == "RNN" and activation == "relu":
        options.append('nonlinearity="relu"')
    bias_hh = None
    if kind == "GRU" and use_bias and reset_after:
        bias, bias_hh = bias[0], bias[1]
    plan = CellPlan(
        kind, kernel.shape[0], units, use_bias, exact, options,
        kernel.T, recurrent.T, bias, bias_hh, config,
    )  # fmt: skip
    if kind == "GRU" and exact:  # torch's gate order r, z, n
        plan.kernel, plan.recurrent = _gru_rows(plan.kernel, units), _gru_rows(plan.recurrent, units)
        plan.bias_ih = None if bias is None else _gru_rows(bias, units)
        plan.bias_hh = None if bias_hh is None else _gru_rows(bias_hh, units)
    plan.kernel, plan.recurrent = np.ascontiguousarray(plan.kernel), np.ascontiguousarray(plan.recurrent)
    if not exact:
        _explicit_cell(call, plan, activation, recurrent_activation, reset_after, stepped=not explicit)
    return plan


@converter(*_KINDS)
def convert_cell_step(call: LayerCall) -> Converted:
    """A Keras cell called on one step, outside an RNN (in a custom cell's call(), such as
    handson-ml3's layer-normalised ``LNSimpleRNNCell``): its explicit cell class, whose forward
    takes the states flat and returns what the Keras cell returns, ``(output, *new_states)``."""
    plan = plan_cell(call, call.layer, explicit=True)
    if len(call.inputs) != 1 + plan.n_states or any(spec.rank != 2 for spec in call.inputs):
        raise call.unsupported(
            f"a {call.class_name} step takes one (batch, features) input and {plan.n_states} state(s); "
            f"got {len(call.inputs)} tensors"
        )
    args = ", ".join(f"{{x{i}}}" for i in range(len(call.inputs)))
    outputs = [call.output_spec((0, 1), index) for index in range(len(call.node.outputs))]
    return Converted([Step(f"{{m}}({args})")], outputs, {"": plan.explicit()}, plan.notes, plan.helpers)


def _gru_rows(array: np.ndarray, units: int) -> np.ndarray:
    blocks = [array[i * units : (i + 1) * units] for i in range(3)]
    return np.concatenate([blocks[i] for i in _GRU_TO_TORCH])


def _explicit_cell(
    call: LayerCall, plan: CellPlan, activation: str, recurrent_activation: str, reset_after, stepped=True
):
    act, code = _function(call, activation)
    args = [str(plan.input_size), str(plan.units), f"activation={act}"]
    if plan.kind != "RNN":
        rec, rec_code = _function(call, recurrent_activation)
        args.append(f"recurrent_activation={rec}")
        code += rec_code
    if not plan.use_bias:
        args.append("bias=False")
    if plan.kind == "GRU" and not reset_after:
        args.append("reset_after=False")
    name, source = {
        "LSTM": ("LSTMCellWithActivations", _LSTM_CELL),
        "GRU": ("GRUCellWithOptions", _GRU_CELL),
        "RNN": ("SimpleRNNCellWithActivation", _SIMPLE_CELL),
    }[plan.kind]
    plan.cell_ctor = f"{name}({', '.join(args)})"
    code.helpers[name] = source
    plan.helpers.update(code.helpers)
    why = []
    if plan.kind == "GRU" and not reset_after:
        why.append("reset_after=False")
    if activation not in ("tanh",) and not (plan.kind == "RNN" and activation == "relu"):
        why.append(f"activation={activation!r}")
    if plan.kind != "RNN" and recurrent_activation != "sigmoid":
        why.append(f"recurrent_activation={recurrent_activation!r}")
    if stepped:
        plan.notes.append(
            f"Keras {', '.join(why)}: nn.{plan.kind} cannot express it, so an explicit cell steps "
            "through time (slower than the fused torch module)."
        )
    plan.notes += code.notes


def _function(call: LayerCall, name: str) -> tuple[str, Fragment]:
    """A callable expression for Keras activation ``name`` (``torch.tanh``, ``F.relu``, a lambda),
    and the notes and helpers it needs (no steps: the expression goes into a cell's constructor)."""
    code = activation_steps(call, "{x}", name, -1)
    needs = Fragment(notes=code.notes, helpers=code.helpers)
    if not code.steps:
        return "nn.Identity()", needs
    expr = code.steps[0].expr
    match = re.fullmatch(r"([\w.]+)\(\{x\}\)", expr)
    if match:
        return match.group(1), needs
    return "lambda x: " + expr.replace("{x}", "x"), needs
