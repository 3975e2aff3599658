"""STFTSpectrogram: Keras's short-time Fourier transform as two strided convolutions.

Keras computes the STFT with its own (trainable) ``real_kernel``/``imag_kernel`` of shape
``(frame_length, 1, frequencies)``: each input channel is framed by a ``Conv1D`` of stride
``frame_step`` (TF ``"same"`` padding: the odd sample after). They are ``nn.Conv1d(1, frequencies,
frame_length, stride=frame_step, bias=False)`` here, with the kernels as their weights, so the port
is exact and stays trainable. The modes follow Keras: ``real``/``imag``/``stft`` (both, stacked on the
frequency axis), ``angle`` (``atan2``), ``psd`` (the power, inner frequencies doubled), ``magnitude``
(``sqrt(max(power, eps))``) and ``log``.
"""

from __future__ import annotations

import numpy as np

from .. import layout
from ..registry import Converted, LayerCall, Step, Submodule, converter
from .padding import same_padding

_EPSILON = 1e-07  # keras.backend.epsilon()


def _conv(call: LayerCall, part: str, step: int) -> Submodule:
    kernel = np.asarray(getattr(call.layer, f"{part}_kernel").numpy())  # (frame_length, 1, F)
    length, _, frequencies = kernel.shape
    weight = np.ascontiguousarray(kernel.transpose(2, 1, 0))
    return Submodule(
        f"nn.Conv1d(1, {frequencies}, {length}, stride={step}, bias=False)",
        {"weight": weight},
        comment=f"Keras STFTSpectrogram's {part} DFT kernel, window included: (frequencies, 1, frame)",
    )


@converter("STFTSpectrogram")
def convert_stft_spectrogram(call: LayerCall) -> Converted:
    layer, spec = call.layer, call.inputs[0]
    channels_last = layer.data_format == "channels_last"
    time_axis, channel_axis = (1, 2) if channels_last else (2, 1)
    length, channels = spec.keras_shape[time_axis], spec.keras_shape[channel_axis]
    if channels is None:
        raise call.unsupported("an unknown number of channels")
    step, frame = int(layer._frame_step), int(layer.frame_length)
    source = call.input_as(0, layout.identity(spec.rank))
    framed = f"{source}.transpose(1, 2)" if channels_last else source
    steps = [
        Step(
            f"{framed}.flatten(0, 1).unsqueeze(1)", "(N * channels, 1, time): each channel framed on its own"
        )
    ]
    if layer.padding == "same":
        pads = same_padding(length, frame, step)
        if pads is None:
            raise call.unsupported("padding='same' over a length known only at run time")
        if any(pads):
            steps.append(Step(f"F.pad({{x}}, {pads})", "TF 'same' padding: the odd sample after"))
    mode = layer.mode
    parts = [mode] if mode in ("real", "imag") else ["real", "imag"]
    modules = {part: _conv(call, part, step) for part in parts}
    real, imag = "{m_real}({x})", "{m_imag}({x})"
    if mode in ("real", "imag"):
        expr = real if mode == "real" else imag
    elif mode == "stft":
        expr = f"torch.cat([{real}, {imag}], dim=1)"
    elif mode == "angle":
        expr = f"torch.atan2({imag}, {real})"
    else:
        expr = f"({real} ** 2 + {imag} ** 2)"
    steps.append(Step(f"{expr}.unflatten(0, (-1, {channels}))", "(N, channels, frequencies, frames)"))
    if mode == "psd":
        steps.append(
            Step("{x} + F.pad({x}[:, :, 1:-1], (0, 0, 1, 1))", "Keras's psd: inner frequencies doubled")
        )
    elif mode in ("magnitude", "log"):
        steps.append(Step(f"torch.sqrt(torch.clamp({{x}}, min={_EPSILON!r}))"))
        if mode == "log":
            steps.append(Step(f"torch.log(torch.clamp({{x}}, min={_EPSILON!r}))"))
    if layer.expand_dims:
        steps.append(Step("{x}.permute(0, 3, 2, 1)" if channels_last else "{x}.transpose(2, 3)"))
    else:
        flat = "{x}.flatten(1, 2)"
        steps.append(Step(f"{flat}.transpose(1, 2)" if channels_last else flat, "channels x frequencies"))
    return Converted(steps, [call.output_spec(layout.identity(len(call.output_shapes[0])))], modules)
