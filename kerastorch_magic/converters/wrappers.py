"""SpectralNormalization: at inference, the wrapped layer with the kernel Keras last normalised.

Keras divides the kernel by its largest singular value (power iteration) only in training and
stores the result in the kernel itself; inference runs the wrapped layer unchanged. So the port is
the wrapped layer's own converter. ``torch.nn.utils.parametrizations.spectral_norm`` would divide
the stored kernel again at every forward, so it is named in a comment for training, not applied.
"""

from __future__ import annotations

from dataclasses import replace

from ..ir import Node
from ..registry import Converted, LayerCall, converter, find


@converter("SpectralNormalization")
def convert_spectral_normalization(call: LayerCall) -> Converted:
    import keras

    inner = call.layer.layer
    name = type(inner).__name__
    spec = find(name)
    if isinstance(inner, keras.Model) or spec is None:
        raise call.unsupported(f"the wrapped {inner.name!r} ({name}) has no converter")
    node = Node(
        inner,
        call.node.scope,
        call.node.inputs,
        call.node.outputs,
        keras_node=None,
        scope_classes=call.node.scope_classes,
    )
    result = spec(replace(call, node=node, _config=None))
    note = (
        f"Keras SpectralNormalization({name}): its kernel is already normalised (Keras renormalises "
        "it in training only); to train with spectral normalisation, wrap the module in "
        "torch.nn.utils.parametrizations.spectral_norm."
    )
    return replace(result, notes=[note, *result.notes])
