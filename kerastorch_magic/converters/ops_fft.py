"""keras.ops FFTs: ``fft``, ``fft2``, ``ifft2``, ``rfft``, ``irfft`` as ``torch.fft``.

Keras has no complex tensors in its API: a complex value travels as a ``(real, imag)`` pair of
float tensors, into and out of each FFT. The port builds the complex tensor torch computes on
(``torch.complex(real, imag)``) and splits the result back (``.real``, ``.imag``), as Keras's own
torch backend does. The transformed axes are Keras's last one (two for the 2D transforms), wherever
the input's torch layout holds them; the norm is torch's default ("backward"), as in Keras.
"""

from __future__ import annotations

from ..registry import Converted, LayerCall, Step, converter

_COMPLEX_IN = {"FFT": "fft", "FFT2": "fft2", "IFFT2": "ifft2", "IRFFT": "irfft"}


def _dims(call: LayerCall, count: int) -> str:
    """``dim=...`` for Keras's last ``count`` axes in the input's layout ("" for torch's default)."""
    spec = call.inputs[0]
    dims = [spec.torch_dim(axis) for axis in range(-count, 0)]
    if dims == list(range(spec.rank - count, spec.rank)):
        return ""  # torch's default: the last axis (axes), as Keras
    return f", dim={dims[0]}" if count == 1 else f", dim=({', '.join(map(str, dims))})"


def _length(call: LayerCall) -> str:
    length = getattr(call.layer, "fft_length", None)
    return "" if length is None else f", n={int(length)}"


@converter(*_COMPLEX_IN, operation=True)
def convert_complex_fft(call: LayerCall) -> Converted:
    """A transform of a ``(real, imag)`` pair: the complex tensor, transformed, split again."""
    function = _COMPLEX_IN[call.class_name]
    spec = call.inputs[0]
    imag = call.input_as(1, spec.perm)  # the pair shares one layout in the port
    count = 2 if function.endswith("2") else 1
    options = _dims(call, count) + (_length(call) if function == "irfft" else "")
    transform = Step(
        f"torch.fft.{function}(torch.complex({{x0}}, {imag}){options})",
        "Keras passes complex values as (real, imag) pairs of float tensors",
    )
    if function == "irfft":  # a real signal: one output
        return Converted([transform], [call.output_spec(spec.perm)])
    split = Step("{x}.real, {x}.imag")
    return Converted([transform, split], [call.output_spec(spec.perm, 0), call.output_spec(spec.perm, 1)])


@converter("RFFT", operation=True)
def convert_rfft(call: LayerCall) -> Converted:
    """``keras.ops.rfft``: a real signal's transform, as its (real, imag) pair."""
    spec = call.inputs[0]
    transform = Step(f"torch.fft.rfft({{x}}{_length(call)}{_dims(call, 1)})")
    split = Step("{x}.real, {x}.imag", "Keras returns complex values as (real, imag) pairs")
    return Converted([transform, split], [call.output_spec(spec.perm, 0), call.output_spec(spec.perm, 1)])
