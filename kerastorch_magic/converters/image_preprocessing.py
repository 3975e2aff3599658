"""AutoContrast: each image's channels stretched to the full value range.

Keras maps ``value_range`` to [0, 255], rescales each channel of each image so that its minimum
goes to 0 and its maximum to 255 (``x * scale + offset``, clipped), maps back, and keeps the input
where the result is NaN (a constant channel). It has no randomness, so it acts at inference too.
"""

from __future__ import annotations

from ..registry import Converted, LayerCall, Step, converter

_AUTO_CONTRAST = '''
def stretch_contrast(images, low, high, dims):
    """Keras AutoContrast: stretch each channel over ``dims`` to [low, high] (computed in [0, 255])."""
    x = (images - low) / (high - low) * 255.0 if (low, high) != (0.0, 255.0) else images
    lowest = x.amin(dim=dims, keepdim=True)
    scale = 255.0 / (x.amax(dim=dims, keepdim=True) - lowest)
    x = torch.clamp(x * scale + -lowest * scale, 0.0, 255.0)
    if (low, high) != (0.0, 255.0):
        x = x / 255.0 * (high - low) + low
    return torch.where(torch.isnan(x), images, x)
'''


@converter("AutoContrast", passthrough=True)
def convert_auto_contrast(call: LayerCall) -> Converted:
    spec = call.inputs[0]
    if spec.rank != 4:
        raise call.unsupported("inputs that are not a batch of images (rank 4)")
    low, high = (float(v) for v in call.layer.value_range)
    dims = (spec.torch_dim(1), spec.torch_dim(2))  # Keras's height and width, wherever they are
    step = Step(f"stretch_contrast({{x}}, {low!r}, {high!r}, dims={dims})")
    return Converted([step], [call.output_spec(spec.perm)], helpers={"stretch_contrast": _AUTO_CONTRAST})
