"""AdaptiveAveragePooling and AdaptiveMaxPooling 1D/2D/3D: ``nn.AdaptiveAvgPool*d``/``MaxPool*d``.

Keras defines these layers by torch's windows (``start = floor(i * in / out)``, ``end =
ceil((i + 1) * in / out)``; its TF kernels rebuild them), so torch's modules are exact. They work
channels-first, like torch's pooling.
"""

from __future__ import annotations

from ..registry import Converted, LayerCall, Step, Submodule, converter
from ._source import compact
from .padding import tuple_of


@converter(
    "AdaptiveAveragePooling1D", "AdaptiveAveragePooling2D", "AdaptiveAveragePooling3D",
    "AdaptiveMaxPooling1D", "AdaptiveMaxPooling2D", "AdaptiveMaxPooling3D",
    channels_first=True,
)  # fmt: skip
def convert_adaptive_pooling(call: LayerCall) -> Converted:
    rank = call.inputs[0].rank - 2
    size = tuple_of(call.config["output_size"], rank)
    kind = "Max" if "Max" in call.class_name else "Avg"
    cf = call.channels_first_perm()
    module = Submodule(f"nn.Adaptive{kind}Pool{rank}d({compact(size)})")
    return Converted([*call.relayout(cf), Step("{m}({x})")], [call.output_spec(cf)], {"": module})
