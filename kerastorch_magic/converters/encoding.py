"""Numeric preprocessing that maps values to category ids: CategoryEncoding, Discretization,
IntegerLookup (numeric vocabularies), and Keras's encodings of those ids.

Keras's ``encode_categorical_inputs``: ``one_hot`` drops a trailing axis of size 1 then appends
``depth``; ``multi_hot`` and ``count`` reduce axis 1, whatever the rank (a rank-1 input is one id
per sample). ``F.one_hot`` needs ids in ``[0, depth)``, as Keras's own TF kernels do to be meaningful.
"""

from __future__ import annotations

import numpy as np

from .. import layout
from ..registry import Converted, LayerCall, Step, Submodule, converter

_CASTS = {"float32": ".float()", "float64": ".double()", "int64": "", "int32": ".int()", "bool": ".bool()"}


def _cast(call: LayerCall, expr: str, current: str = "int64") -> str:
    wanted = str(call.node.outputs[0].dtype)
    if wanted == current:
        return expr
    if wanted not in _CASTS:
        raise call.unsupported(f"output dtype {wanted}")
    return f"{expr}{_CASTS[wanted] or '.long()'}"


def _encode(call: LayerCall, ids: str, mode: str, depth: int) -> tuple[str, str | None]:
    """(expression, comment) of Keras's ``output_mode`` applied to int64 ``ids``."""
    rank = call.inputs[0].rank
    if mode == "int":
        return _cast(call, ids), None
    if mode not in ("one_hot", "multi_hot", "count"):
        raise call.unsupported(f"output_mode={mode!r}")
    if mode == "one_hot":
        if rank > 1 and call.inputs[0].keras_shape[-1] == 1:
            ids = f"{ids}.squeeze(-1)"
        return _cast(call, f"F.one_hot({ids}, {depth})"), f"Keras output_mode='one_hot' over {depth} ids"
    reduce = "amax" if mode == "multi_hot" else "sum"
    expr = f"F.one_hot({ids}, {depth})" if rank == 1 else f"F.one_hot({ids}, {depth}).{reduce}(1)"
    what = "which ids occur" if mode == "multi_hot" else "how often each id occurs"
    return _cast(call, expr), f"Keras output_mode={mode!r}: {what} along axis 1 (as Keras reduces)"


def _ids(call: LayerCall) -> str:
    spec = call.inputs[0]
    source = call.input_as(0, layout.identity(spec.rank))
    return source if spec.dtype == "int64" else f"{source}.long()"


def _identity_output(call: LayerCall):
    return [call.output_spec(layout.identity(len(call.output_shapes[0])))]


@converter("CategoryEncoding")
def convert_category_encoding(call: LayerCall) -> Converted:
    if call.argument_inputs("count_weights"):
        raise call.unsupported("count_weights (a weighted count)")
    if call.config.get("sparse"):
        raise call.unsupported("sparse=True outputs (torch sparse tensors are not Keras's)")
    expr, comment = _encode(call, _ids(call), call.config["output_mode"], int(call.config["num_tokens"]))
    return Converted([Step(expr, comment)], _identity_output(call))


@converter("Discretization")
def convert_discretization(call: LayerCall) -> Converted:
    boundaries = call.layer.bin_boundaries
    if boundaries is None:
        raise call.unsupported("no bin_boundaries (call adapt() first)")
    if call.config.get("sparse"):
        raise call.unsupported("sparse=True outputs")
    values = ", ".join(repr(float(b)) for b in boundaries)
    spec = call.inputs[0]
    source = call.input_as(0, layout.identity(spec.rank))
    dtype = "torch.float64" if spec.dtype == "float64" else "torch.float32"
    # np.digitize (Keras) puts x in bin i when boundaries[i - 1] <= x < boundaries[i]: right=True.
    table = f"torch.tensor([{values}], dtype={dtype}, device={source}.device)"
    ids = f"torch.bucketize({source}, {table}, right=True)"
    first = Step(ids, "Keras Discretization: bin i holds boundaries[i - 1] <= x < boundaries[i]")
    expr, comment = _encode(call, "{x}", call.config["output_mode"], len(boundaries) + 1)
    if expr == "{x}":
        return Converted([first], _identity_output(call))
    return Converted([first, Step(expr, comment)], _identity_output(call))


@converter("IntegerLookup")
def convert_integer_lookup(call: LayerCall) -> Converted:
    layer, config = call.layer, call.config
    if config.get("invert"):
        raise call.unsupported("invert=True (index -> token)")
    if config.get("sparse"):
        raise call.unsupported("sparse=True outputs")
    mode = config["output_mode"]
    if mode == "tf_idf":
        raise call.unsupported("output_mode='tf_idf'")
    oov = int(layer.num_oov_indices)
    if oov > 1 and getattr(layer, "oov_method", "floormod") != "floormod":
        raise call.unsupported(
            f"oov_method={layer.oov_method!r}: FarmHash/SipHash bucketing has no torch twin"
        )
    vocabulary = layer.get_vocabulary(include_special_tokens=True)
    mask_token = config.get("mask_token")
    start = 1 if mask_token is not None else 0  # ids: [mask], the OOV ids, then the vocabulary
    tokens = np.asarray(vocabulary[start + oov :], dtype=np.int64)
    ids = np.arange(start + oov, start + oov + len(tokens), dtype=np.int64)
    order = np.argsort(tokens)
    keys, values = tokens[order], ids[order]
    module = Submodule(
        f"nn.ParameterDict({{"
        f'"tokens": nn.Parameter(torch.zeros({len(keys)}, dtype=torch.int64), requires_grad=False), '
        f'"ids": nn.Parameter(torch.zeros({len(keys)}, dtype=torch.int64), requires_grad=False)}})',
        {"tokens": keys, "ids": values},
        comment=f"Keras IntegerLookup's vocabulary: sorted tokens and their ids ({oov} OOV ids first)",
    )
    x = _ids(call)
    if oov == 0:
        fallback = "-1"  # Keras asserts every value is in the vocabulary
    elif oov == 1:
        fallback = str(start)
    else:
        fallback = f"{x} % {oov} + {start}"
    found = f"vocabulary_lookup({x}, {{m}}.tokens, {{m}}.ids, {fallback})"
    if mask_token is not None:
        found = f"torch.where({x} == {int(mask_token)}, 0, {found})"
    comment = "a vocabulary id, else Keras's OOV id" + (" (value % num_oov_indices)" if oov > 1 else "")
    steps = [Step(found, comment)]
    depth = int(config["max_tokens"]) if config.get("pad_to_max_tokens") else layer.vocabulary_size()
    expr, comment = _encode(call, "{x}", mode, depth)
    if expr != "{x}":
        steps.append(Step(expr, comment))
    return Converted(steps, _identity_output(call), {"": module}, helpers={"vocabulary_lookup": _LOOKUP})


_LOOKUP = '''
def vocabulary_lookup(x, keys, ids, default):
    """The id of each value of ``x`` in a sorted vocabulary ``keys``; ``default`` where absent."""
    position = torch.searchsorted(keys, x).clamp(max=keys.numel() - 1)
    return torch.where(keys[position] == x, ids[position], default)
'''
