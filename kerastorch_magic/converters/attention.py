"""MultiHeadAttention and GroupedQueryAttention.

Keras projects query, key and value with per-head ``EinsumDense`` layers whose kernels are
``(features, heads, head_dim)``; flattened to ``(features, heads * head_dim)`` and transposed they
are ``nn.Linear`` weights whose rows run head-major (row ``h * head_dim + d``), so
``.unflatten(-1, (heads, head_dim))`` recovers the heads. The output projection's kernel
``(heads, head_dim, out)`` flattens the same way on its input side.

Attention itself follows the two paths of ``keras.layers.MultiHeadAttention`` (read
``_compute_attention``, ``_compute_attention_mask`` and the backend's ``dot_product_attention``):

* ``F.scaled_dot_product_attention`` whenever Keras's own fused path is exact in torch. Its
  default scale is ``1 / sqrt(head_dim)``, Keras's. A Keras mask (boolean ``attention_mask``,
  0/1 cast to bool, Keras masks of the inputs, causal, sliding window, all AND-ed) fills masked
  scores with a large *finite* negative number, so a fully masked row (a padded query) attends
  uniformly instead of giving NaN: the generated code passes it as an additive float mask.
* an explicit softmax when the attention weights are an output (``return_attention_scores``),
  or when dropout meets a mask: Keras's ``Softmax`` layer fills masked scores with -1e9 and
  zeroes masked weights after the softmax, so a fully masked row attends to nothing.

Attention over several axes (``attention_axes=(1, 2)`` on images) is a softmax over the
flattened positions, so those axes are flattened into one sequence for the same code.
"""

from __future__ import annotations

import math
import re

import numpy as np

from .. import initializers, layout
from ..registry import Converted, LayerCall, Step, Submodule, converter
from ._source import size_args

# Why the masked paths look as they do (Keras backend ``_get_large_negative``; Softmax layer).
_FUSED_NOTE = (
    "Keras fills masked scores with a large finite negative number (not -inf): a fully masked row "
    "(a padded query) then averages every value instead of giving NaN; hence a float mask."
)
_EXPLICIT_NOTE = (
    "Keras's masked softmax: masked scores are set to -1e9, and masked weights to 0 after the "
    "softmax (a fully masked row attends to nothing)."
)


def _call_option(call: LayerCall, name: str, default=False):
    """A non-tensor argument of the layer call (``use_causal_mask=True``...)."""
    arguments = getattr(call.node.keras_node, "arguments", None)
    if arguments is None:
        return default
    return arguments.kwargs.get(name, default)


def _index(call: LayerCall, name: str) -> int | None:
    found = call.argument_inputs(name)
    return found[0] if found else None


def _linear(
    call: LayerCall, kernel: np.ndarray, bias: np.ndarray | None, fan_in_axes: int, comment: str | None = None
) -> Submodule:
    """``nn.Linear`` holding an EinsumDense kernel whose first ``fan_in_axes`` axes are its inputs."""
    in_features = int(np.prod(kernel.shape[:fan_in_axes]))
    out_features = int(np.prod(kernel.shape[fan_in_axes:]))
    weight = np.ascontiguousarray(kernel.reshape(in_features, out_features).T)
    state = {"weight": weight}
    config = call.config
    init = initializers.init_lines(config.get("kernel_initializer"), kernel.shape, weight.shape, "weight")
    ctor = f"nn.Linear({in_features}, {out_features}{'' if bias is not None else ', bias=False'})"
    if bias is not None:
        state["bias"] = np.ascontiguousarray(bias.reshape(out_features))
        init += initializers.init_lines(config.get("bias_initializer"), bias.shape, (out_features,), "bias")
    return Submodule(ctor, state, init, comment)


def _weights(dense) -> tuple[np.ndarray, np.ndarray | None]:
    import keras

    kernel = np.asarray(keras.ops.convert_to_numpy(dense.kernel))
    bias = getattr(dense, "bias", None)
    return kernel, None if bias is None else np.asarray(keras.ops.convert_to_numpy(bias))


class _Geometry:
    """Where the attention axes sit: Keras input ``(B, *middle, C)``, attention over some middle axes.

    The torch code works on ``(B, *others, L, features)``: the other middle axes act as batch axes,
    the attention axes (flattened into one of length ``L``) come last before the features.
    """

    def __init__(self, rank: int, attention_axes):
        middle = list(range(1, rank - 1))
        if attention_axes is None:
            axes = middle
        else:
            # Keras counts negative axes on the projected (B, *middle, heads, head_dim) tensor.
            axes = sorted(a if a >= 0 else rank + a for a in attention_axes)
        self.rank, self.axes = rank, tuple(axes)
        self.others = tuple(a for a in middle if a not in axes)
        self.perm = (0, *self.others, *self.axes, rank - 1)  # the torch layout of the computation

    @property
    def simple(self) -> bool:
        """Plain sequences: (B, L, features)."""
        return self.rank == 3

    def prepare(self, call: LayerCall, index: int) -> str:
        """Input ``index`` in the computation's layout, attention axes flattened into one."""
        expr = call.input_as(index, self.perm)
        if len(self.axes) > 1:
            start = 1 + len(self.others)
            expr = f"{expr}.flatten({start}, {start + len(self.axes) - 1})"
        return expr

    def sizes(self, call: LayerCall, index: int) -> tuple[int, ...]:
        shape = call.inputs[index].keras_shape
        sizes = tuple(shape[a] for a in self.axes)
        if any(s is None for s in sizes):
            raise call.unsupported("attention over several axes of unknown size")
        return sizes

    def split(self, expr: str, heads: int, dim: int) -> str:
        """(B, *others, L, heads * dim) -> (B, *others, heads, L, dim): SDPA's layout."""
        swap = "1, 2" if not self.others else "-3, -2"
        return f"{expr}.unflatten(-1, ({heads}, {dim})).transpose({swap})"

    def merge(self, expr: str) -> str:
        """(B, *others, heads, L, dim) -> (B, *others, L, heads * dim)."""
        swap = "1, 2" if not self.others else "-3, -2"
        return f"{expr}.transpose({swap}).flatten(-2)"


def _mask_terms(call: LayerCall, geometry: _Geometry, query: int, value: int, key: int | None) -> list[str]:
    """Boolean (…, T, S) expressions Keras AND-s into the attention mask (query length T, keys S)."""
    terms: list[str] = []
    index = _index(call, "attention_mask")
    if index is None and _call_option(call, "attention_mask", None) is not None:
        raise call.unsupported("attention_mask is a constant, not a tensor of the model (make it an input)")
    if index is not None:  # Keras casts it to bool: any non-zero value lets attention through
        mask = call.input_as(index, layout.identity(call.inputs[index].rank))
        terms.append(mask if call.inputs[index].dtype == "bool" else f"{mask}.bool()")
    for name, keras_rank_expand in (("query_mask", "[:, :, None]"), ("value_mask", "[:, None, :]")):
        position = _implicit_mask(call, name)
        if position is not None:
            terms.append(f"{{x{position}}}{keras_rank_expand}")
    if key is not None:
        position = _implicit_mask(call, "key_mask")
        if position is not None:
            terms.append(f"{{x{position}}}[:, None, :]")
    t, s = _size(call, query, 1), _size(call, value, 1)
    if _call_option(call, "use_causal_mask"):
        terms.append(f"torch.ones({t}, {s}, dtype=torch.bool, device={{x{query}}}.device).tril()")
    window = call.config.get("sliding_window")
    if window:
        positions = (
            f"(torch.arange({t}, device={{x{query}}}.device)[:, None]"
            f" - torch.arange({s}, device={{x{query}}}.device))"
        )
        terms.append(f"{positions}.abs() < {int(window)}")
    if terms and not geometry.simple:
        raise call.unsupported(
            "a mask (attention_mask, Keras mask, causal or sliding window) with inputs of rank > 3"
        )
    return terms


def _atom(expr: str) -> str:
    """``expr`` parenthesised unless it already binds tighter than any operator (a call, a name...)."""
    import ast

    try:
        tree = ast.parse(re.sub(r"\{(\w+)\}", r"\1", expr), mode="eval").body
    except SyntaxError:
        return f"({expr})"
    return expr if isinstance(tree, (ast.Call, ast.Attribute, ast.Subscript, ast.Name)) else f"({expr})"


def _conjunction(terms: list[str]) -> str:
    """Boolean masks AND-ed (an atom for method calls on it)."""
    # Self-attention's key and value masks are one tensor: AND it in once.
    joined = " & ".join(_atom(t) for t in dict.fromkeys(terms))
    return _atom(joined)


def _size(call: LayerCall, index: int, axis: int) -> str:
    """Input ``index``'s size along Keras ``axis``: static, or read from the tensor (open lengths)."""
    spec = call.inputs[index]
    size = spec.keras_shape[axis]
    return str(size) if size is not None else f"{{x{index}}}.shape[{spec.torch_dim(axis)}]"


def _implicit_mask(call: LayerCall, name: str) -> int | None:
    """Position of the Keras mask the layer gets as ``name`` (an Embedding's mask_zero...)."""
    from ..masks import implicit_mask_input

    try:
        return implicit_mask_input(call.node, name)
    except LookupError:
        raise call.unsupported(f"its input carries a Keras mask ({name}) the graph does not hold") from None


@converter("MultiHeadAttention", "GroupedQueryAttention")
def convert_attention(call: LayerCall) -> Converted:
    config = call.config
    grouped = call.class_name == "GroupedQueryAttention"
    query, value, key = _index(call, "query"), _index(call, "value"), _index(call, "key")
    if query is None or value is None:
        raise call.unsupported("query and value must be tensors of the model")
    heads = int(config["num_query_heads"] if grouped else config["num_heads"])
    kv_heads = int(config["num_key_value_heads"]) if grouped else heads
    key_dim = int(config["head_dim"] if grouped else config["key_dim"])
    value_dim = key_dim if grouped else int(config.get("value_dim") or key_dim)
    dropout = float(config.get("dropout") or 0.0)
    rank = call.inputs[query].rank
    geometry = _Geometry(rank, None if grouped else config.get("attention_axes"))
    scores_out = bool(_call_option(call, "return_attention_scores"))
    if scores_out and len(geometry.axes) > 1:
        raise call.unsupported(
            "return_attention_scores with attention over several axes: Keras's symbolic shape for "
            "the weights, (batch, heads, T, T), is not the shape it computes"
        )
    terms = _mask_terms(call, geometry, query, value, key)
    causal_only = (
        bool(_call_option(call, "use_causal_mask")) and len(terms) == 1 and not config.get("sliding_window")
    )
    modules = _projections(call)
    key_source = key if key is not None else value
    q = geometry.split(f"{{m_query}}({geometry.prepare(call, query)})", heads, key_dim)
    k = geometry.split(f"{{m_key}}({geometry.prepare(call, key_source)})", kv_heads, key_dim)
    v = geometry.split(f"{{m_value}}({geometry.prepare(call, value)})", kv_heads, value_dim)
    notes: list[str] = []
    groups = heads // kv_heads
    if groups > 1:  # (torch >= 2.5's SDPA could skip the copies with enable_gqa=True)
        k, v = (f"{t}.repeat_interleave({groups}, dim=1)" for t in (k, v))
        notes.append(
            f"GroupedQueryAttention: each of the {kv_heads} key/value heads serves {groups} "
            "consecutive query heads, as Keras repeats them."
        )
    mask = f"{_conjunction(terms)}.unsqueeze(-3)" if terms else None  # broadcast over the heads
    if scores_out or (dropout > 0 and terms and not causal_only):
        first, attended, note = _explicit_attention(q, k, mask, key_dim, dropout)
        merged = geometry.merge(f"({attended} @ {v})")
    else:
        first, note = _fused_attention(q, k, v, None if causal_only else mask, causal_only, dropout, query)
        merged = geometry.merge("{x}")
    notes += [note] if note else []
    if "gate" in modules:
        merged = f"{merged} * torch.sigmoid({{m_gate}}({geometry.prepare(call, query)}))"
    out_expr = f"{{m_output}}({merged})"
    output_shape = tuple(call.output_shapes[0][rank - 1 :])
    if len(output_shape) > 1:
        out_expr += f".unflatten(-1, {output_shape})"
    if len(geometry.axes) > 1:
        out_expr += f".unflatten({1 + len(geometry.others)}, {geometry.sizes(call, query)})"
    out_perm = (*geometry.perm[:-1], *range(rank - 1, rank - 1 + len(output_shape)))
    outputs = [call.output_spec(out_perm)]
    if scores_out:
        out_expr = f"{out_expr}, {{x}}"
        outputs.append(call.output_spec(layout.identity(len(call.output_shapes[1])), 1))
    return Converted([first, Step(out_expr)], outputs, modules, notes)


def _explicit_attention(q: str, k: str, keep: str | None, key_dim: int, dropout: float):
    """Keras's own softmax path: (weights step, the weights as attended, note)."""
    scores = f"({q} * {1.0 / math.sqrt(key_dim)!r}) @ {k}.transpose(-2, -1)"
    if keep is None:
        weights, note = f"F.softmax({scores}, dim=-1)", None
    else:
        weights = f"F.softmax(({scores}).masked_fill(~{keep}, -1e9), dim=-1).masked_fill(~{keep}, 0.0)"
        note = _EXPLICIT_NOTE
    step = Step(weights, "attention weights, explicit: Keras computes them so when it returns them")
    attended = f"F.dropout({{x}}, p={dropout!r}, training=self.training)" if dropout else "{x}"
    return step, attended, note


def _fused_attention(q: str, k: str, v: str, keep: str | None, causal: bool, dropout: float, query: int):
    """``F.scaled_dot_product_attention``: (step, note)."""
    options, note = [], None
    if causal:
        options.append("is_causal=True")
    elif keep is not None:
        options.append(f"attn_mask=torch.where({keep}, 0.0, torch.finfo({{x{query}}}.dtype).min)")
        note = _FUSED_NOTE
    if dropout:
        options.append(f"dropout_p={dropout!r} if self.training else 0.0")
    step = Step(
        f"F.scaled_dot_product_attention({', '.join([q, k, v, *options])})",
        "scale 1/sqrt(head_dim): SDPA's default, as in Keras",
    )
    return step, note


def _projections(call: LayerCall) -> dict[str, Submodule]:
    """The q/k/v/output (and gate) EinsumDense layers as nn.Linear."""
    layer = call.layer
    comment = (
        f"Keras {call.class_name}: the q/k/v EinsumDense kernels are (features, heads, head_dim); "
        "as nn.Linear weights they are (heads * head_dim, features), rows head-major, so "
        ".unflatten(-1, (heads, head_dim)) splits the heads."
    )
    modules: dict[str, Submodule] = {}
    for short in ("query", "key", "value"):
        kernel, bias = _weights(getattr(layer, f"_{short}_dense"))
        modules[short] = _linear(call, kernel, bias, 1, comment if short == "query" else None)
    kernel, bias = _weights(layer._output_dense)
    modules["output"] = _linear(
        call, kernel, bias, 2, "the output kernel (heads, head_dim, out) flattens the same way"
    )
    if call.config.get("use_gate"):
        kernel, bias = _weights(layer._gate_dense)
        modules["gate"] = _linear(
            call, kernel, bias, 1, "Keras use_gate: a sigmoid gate on each head's output"
        )
    return modules


# -- Attention (Luong), AdditiveAttention (Bahdanau) --------------------------------------------
def _mask_list_inputs(call: LayerCall) -> list[int | None]:
    """Positions of the ``mask=[query_mask, value_mask]`` tensors (None where absent)."""
    arguments = getattr(call.node.keras_node, "arguments", None)
    masks = arguments.kwargs.get("mask") if arguments is not None else None
    if masks is None:  # not passed: Keras hands the layer its inputs' Keras masks
        return [_implicit_mask(call, "mask[0]"), _implicit_mask(call, "mask[1]")]
    position = {id(t): i for i, t in enumerate(arguments.keras_tensors)}
    found = [None if m is None else position.get(id(m)) for m in list(masks)[:2]]
    if any(m is not None and f is None for m, f in zip(masks, found)):
        raise call.unsupported("a mask that is a constant, not a tensor of the model")
    return [*found, None][:2]


def _scalar_parameters(call: LayerCall, names: dict[str, str]) -> Submodule | None:
    """An ``nn.ParameterDict`` of the layer's small weights (``scale``, ``concat_score_weight``)."""
    weights = {w.name: np.asarray(w.numpy()) for w in call.layer.weights}
    present = {name: weights[name] for name in names if name in weights}
    if not present:
        return None
    entries, init = [], []
    for name, value in present.items():
        shape = size_args(value.shape)
        entries.append(f'"{name}": nn.Parameter(torch.ones({shape}))')
        # Keras's fans of a vector are (dim, dim): passing a (1, dim) torch shape keeps the bound explicit.
        torch_shape = (1, *value.shape) if value.ndim == 1 else value.shape
        init += initializers.init_lines(names[name], value.shape, torch_shape, name)
    return Submodule("nn.ParameterDict({" + ", ".join(entries) + "})", present, init)


@converter("Attention", "AdditiveAttention")
def convert_dot_attention(call: LayerCall) -> Converted:
    config = call.config
    positions = call.argument_inputs("inputs")
    if len(positions) < 2:
        raise call.unsupported("query and value must be tensors of the model")
    query, value = positions[0], positions[1]
    key = positions[2] if len(positions) > 2 else value
    rank = call.inputs[query].rank
    q, v, k = (call.input_as(i, layout.identity(call.inputs[i].rank)) for i in (query, value, key))
    additive = call.class_name == "AdditiveAttention"
    use_scale = bool(config.get("use_scale", not additive))
    pairs = f"{q}.unsqueeze(-2) + {k}.unsqueeze(-3)"  # (..., Tq, Tv, dim)
    if additive:
        params = _scalar_parameters(call, {"scale": "glorot_uniform"})
        scale = "{m}.scale * " if use_scale else ""
        scores = f"{_atom(f'{scale}torch.tanh({pairs})')}.sum(-1)"
        comment = "Bahdanau scores: sum over features of scale * tanh(query + key)"
    elif config.get("score_mode", "dot") == "concat":
        params = _scalar_parameters(call, {"scale": "ones", "concat_score_weight": "ones"})
        inner = f"{{m}}.scale * ({pairs})" if use_scale else pairs
        scores = f"{{m}}.concat_score_weight * torch.tanh({inner}).sum(-1)"
        comment = "Keras score_mode='concat': weight * sum over features of tanh(scale * (query + key))"
    else:
        params = _scalar_parameters(call, {"scale": "ones"})
        scores = f"{q} @ {k}.transpose(-2, -1)"
        if use_scale:
            scores = f"({scores}) * {{m}}.scale"
        comment = "Luong (dot-product) scores" + (", times Keras's learned scale" if use_scale else "")
    query_mask, value_mask = _mask_list_inputs(call)
    keep = []
    if value_mask is not None:
        keep.append(f"{{x{value_mask}}}[..., None, :]")
    if _call_option(call, "use_causal_mask"):
        t, s = _size(call, query, -2), _size(call, value, -2)
        keep.append(f"torch.ones({t}, {s}, dtype=torch.bool, device={{x{query}}}.device).tril()")
    notes, steps = [], [Step(scores, comment)]
    weights = "F.softmax({x}, dim=-1)"
    if keep:
        weights = f"F.softmax(torch.where({_conjunction(keep)}, {{x}}, {{x}} - 1e9), dim=-1)"
        notes.append("Keras masks scores by subtracting 1e9 (not by filling -inf).")
    dropout = float(config.get("dropout") or 0.0)
    if dropout:
        weights = f"F.dropout({weights}, p={dropout!r}, training=self.training)"
    steps.append(Step(weights))
    output = f"{{x}} @ {v}"
    if query_mask is not None:
        output = f"torch.where({{x{query_mask}}}[..., None], {output}, 0.0)"
        notes.append("Keras zeroes the outputs of masked query steps.")
    outputs = [call.output_spec(layout.identity(rank))]
    if _call_option(call, "return_attention_scores"):
        output = f"{output}, {{x}}"
        outputs.append(call.output_spec(layout.identity(len(call.output_shapes[1])), 1))
    steps.append(Step(output))
    return Converted(steps, outputs, {"": params} if params else {}, notes)
