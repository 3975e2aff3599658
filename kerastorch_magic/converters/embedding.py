"""ReversibleEmbedding: an Embedding that also maps vectors back to logits (``reverse=True``).

Forward, it is ``nn.Embedding``. Reversed, Keras multiplies by the transposed embedding table
(``tie_weights=True``: ``F.linear(x, embedding.weight)``) or by its own ``(dim, vocabulary)``
``reverse_embeddings`` (an ``nn.Linear(dim, vocabulary, bias=False)`` here), then soft-caps the
logits, ``tanh(logits / cap) * cap``, when ``logit_soft_cap`` is set. Both calls of one layer share
its modules, so each declares the same ones.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .. import initializers, layout
from ..registry import Converted, LayerCall, Step, Submodule, converter, find


@converter("ReversibleEmbedding")
def convert_reversible_embedding(call: LayerCall) -> Converted:
    import keras

    layer, config = call.layer, call.config
    if config.get("reverse_dtype") not in (None, "float32", call.node.outputs[0].dtype):
        raise call.unsupported(f"reverse_dtype={config['reverse_dtype']!r}")
    arguments = getattr(call.node.keras_node, "arguments", None)
    reverse = bool(arguments.kwargs.get("reverse", False)) if arguments is not None else False
    if arguments is not None and len(arguments.args) > 1:
        reverse = bool(arguments.args[1])
    modules = {} if reverse else dict(find("Embedding")(call).modules)
    modules = modules or _embedding_module(call)
    if not config.get("tie_weights", True):
        kernel = np.asarray(keras.ops.convert_to_numpy(layer.reverse_embeddings))  # (dim, vocabulary)
        weight = np.ascontiguousarray(kernel.T)
        init_config = config.get("reverse_embeddings_initializer")
        modules["reverse"] = Submodule(
            f"nn.Linear({kernel.shape[0]}, {kernel.shape[1]}, bias=False)",
            {"weight": weight},
            initializers.init_lines(init_config, kernel.shape, weight.shape, "weight"),
            "Keras ReversibleEmbedding(tie_weights=False): its own output projection",
        )
    if not reverse:
        return replace(find("Embedding")(call), modules=modules)
    spec = call.inputs[0]
    source = call.input_as(0, layout.identity(spec.rank))
    if config.get("tie_weights", True):
        expr = f"F.linear({source}, {{m}}.weight)"
        comment = "reverse=True with tied weights: logits against the embedding table"
    else:
        expr, comment = f"{{m_reverse}}({source})", None
    steps = [Step(expr, comment)]
    cap = config.get("logit_soft_cap")
    if cap:
        steps.append(Step(f"torch.tanh({{x}} / {float(cap)!r}) * {float(cap)!r}", "Keras logit_soft_cap"))
    return Converted(steps, [call.output_spec(layout.identity(spec.rank))], modules)


def _embedding_module(call: LayerCall) -> dict[str, Submodule]:
    """The forward call's nn.Embedding (declared by whichever call comes first)."""
    import keras

    weight = np.ascontiguousarray(np.asarray(keras.ops.convert_to_numpy(call.layer.embeddings)))
    init = initializers.init_lines(
        call.config.get("embeddings_initializer"), weight.shape, weight.shape, "weight"
    )
    return {"": Submodule(f"nn.Embedding({weight.shape[0]}, {weight.shape[1]})", {"weight": weight}, init)}
