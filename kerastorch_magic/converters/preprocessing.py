"""Preprocessing layers (DESIGN.md §5.12): Rescaling, Normalization, CenterCrop, Resizing, and the
random augmentation layers, which Keras skips at inference (identity in the exported model)."""

from __future__ import annotations

import numpy as np

from ..registry import Converted, LayerCall, Step, Submodule, converter
from ._source import int_or_tuple, number

# Helper classes written into the generated file (small, commented, no dependency on us).
_RESCALE = '''
class Rescale(nn.Module):
    """Keras Rescaling with per-channel values: x * scale + offset (fixed, not trained)."""

    def __init__(self, shape):
        super().__init__()
        self.register_buffer("scale", torch.ones(shape))
        self.register_buffer("offset", torch.zeros(shape))

    def forward(self, x):
        return x * self.scale + self.offset
'''

_NORMALIZE = '''
class Normalize(nn.Module):
    """Keras Normalization: (x - mean) / max(sqrt(variance), eps), statistics fixed (buffers).

    With ``invert=True`` it undoes that: mean + x * max(sqrt(variance), eps).
    """

    def __init__(self, shape, invert=False, eps=1e-07):
        super().__init__()
        self.invert, self.eps = invert, eps
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("variance", torch.ones(shape))

    def forward(self, x):
        std = self.variance.sqrt().clamp(min=self.eps)
        if self.invert:
            return self.mean + x * std
        return (x - self.mean) / std
'''


def _array(value) -> np.ndarray:
    """A Rescaling ``scale``/``offset`` config entry (number, list or serialised array) as float32."""
    if isinstance(value, dict):
        import keras

        value = keras.saving.deserialize_keras_object(value)
    return np.asarray(value, dtype=np.float32)


def _torch_constant(call: LayerCall, keras_array: np.ndarray) -> np.ndarray:
    """A constant broadcast against the Keras input, re-laid to broadcast against the torch one.

    Leading singleton dimensions are dropped: (1, 3, 1, 1) becomes (3, 1, 1).
    """
    spec = call.inputs[0]
    if keras_array.ndim > spec.rank:
        raise call.unsupported(f"a constant of shape {keras_array.shape} for a rank-{spec.rank} input")
    full = keras_array.reshape((1,) * (spec.rank - keras_array.ndim) + keras_array.shape)
    torch_array = np.transpose(full, spec.perm)
    while torch_array.ndim > 1 and torch_array.shape[0] == 1:
        torch_array = torch_array[0]
    return np.array(torch_array, dtype=np.float32, copy=True)  # writable, contiguous


def float32_text(value) -> str:
    """Shortest literal reading back as the same float32 (``123.675``, not ``123.67500305175781``)."""
    text = str(np.float32(value))
    return text if any(c in text for c in ".en") else text + ".0"


def _scalar_text(value: float) -> str:
    """A float32 constant as source: ``(1 / 255)`` when that is exactly it and shorter.

    Keras multiplies in float32 and so does torch (a Python scalar is cast to the tensor's dtype),
    so any text reading back as the same float32 is exact.
    """
    value32 = np.float32(value)
    plain = float32_text(value32)
    if value32 != 0 and abs(value32) < 1 and len(plain.lstrip("-")) > 6:
        reciprocal = 1.0 / float(abs(value32))
        for candidate in (round(reciprocal), round(reciprocal * 2) / 2):
            text = repr(int(candidate)) if float(candidate).is_integer() else repr(float(candidate))
            if candidate and np.float32(1.0 / float(text)) == abs(value32):
                return f"(1 / {text})" if value32 > 0 else f"(-1 / {text})"
    return plain


@converter("Rescaling", passthrough=True)
def convert_rescaling(call: LayerCall) -> Converted:
    spec = call.inputs[0]
    scale, offset = _array(call.config["scale"]), _array(call.config.get("offset", 0.0))
    if scale.ndim > 0:
        import keras

        if keras.config.image_data_format() == "channels_first":
            # Keras reshapes a per-channel scale to (C, 1, 1) under channels_first.
            scale = scale.reshape(scale.shape + (1,) * (3 - scale.ndim))
    if scale.size == 1 and offset.size == 1:
        expr = f"{{x}} * {_scalar_text(scale.reshape(()))}"
        if float(offset) != 0:
            sign = "-" if float(offset) < 0 else "+"
            expr += f" {sign} {_scalar_text(abs(float(offset)))}"
        return Converted([Step(expr, "Keras Rescaling")], [call.output_spec(spec.perm)])
    scale_t, offset_t = _torch_constant(call, scale), _torch_constant(call, offset)
    shape = np.broadcast_shapes(scale_t.shape, offset_t.shape)
    state = {
        "scale": np.array(np.broadcast_to(scale_t, shape)),
        "offset": np.array(np.broadcast_to(offset_t, shape)),
    }
    module = Submodule(f"Rescale({int_or_tuple(shape)})", state)
    notes = ["Keras Rescaling with per-channel values, laid out for this tensor's torch layout."]
    helpers = {"Rescale": _RESCALE.strip()}
    return Converted([Step("{m}({x})")], [call.output_spec(spec.perm)], {"": module}, notes, helpers)


@converter("Normalization", passthrough=True)
def convert_normalization(call: LayerCall) -> Converted:
    import keras

    spec = call.inputs[0]
    layer = call.layer
    # The statistics Keras actually divides by: adapted weights (reshaped by finalize_state) or
    # the constants passed to the constructor, both broadcast against the Keras input.
    if getattr(layer, "mean", None) is None:
        raise call.unsupported("the layer is not built (no mean/variance yet)")
    mean = np.asarray(keras.ops.convert_to_numpy(layer.mean), dtype=np.float32)
    variance = np.asarray(keras.ops.convert_to_numpy(layer.variance), dtype=np.float32)
    invert = bool(call.config.get("invert", False))
    eps = float(keras.config.epsilon())
    mean_t, var_t = _torch_constant(call, mean), _torch_constant(call, variance)
    if mean_t.size == 1 and var_t.size == 1:
        std = np.maximum(np.sqrt(var_t.reshape(())), np.float32(eps))
        m, s = float32_text(mean_t.reshape(())), float32_text(std)
        expr = f"{m} + {{x}} * {s}" if invert else f"({{x}} - {m}) / {s}"
        comment = f"Keras Normalization: mean {m}, std max(sqrt(variance), {number(eps)})"
        return Converted([Step(expr, comment)], [call.output_spec(spec.perm)])
    args = [int_or_tuple(mean_t.shape)]
    if invert:
        args.append("invert=True")
    if eps != 1e-7:
        args.append(f"eps={number(eps)}")
    module = Submodule(f"Normalize({', '.join(args)})", {"mean": mean_t, "variance": var_t})
    notes = [
        "Keras Normalization divides by max(sqrt(variance), eps), not sqrt(variance + eps) as "
        "BatchNorm does; the statistics are laid out for this tensor's torch layout."
    ]
    helpers = {"Normalize": _NORMALIZE.strip()}
    return Converted([Step("{m}({x})")], [call.output_spec(spec.perm)], {"": module}, notes, helpers)


# Layers whose inference-time call returns the images unchanged (Keras 3.15: they only act when
# called with training=True; Equalization and Solarization included, by Keras's own choice).
_INFERENCE_IDENTITY = (
    "AugMix",
    "CutMix",
    "Equalization",
    "MaxNumBoundingBoxes",
    "MixUp",
    "RandAugment",
    "RandomBrightness",
    "RandomColorDegeneration",
    "RandomColorJitter",
    "RandomContrast",
    "RandomElasticTransform",
    "RandomErasing",
    "RandomFlip",
    "RandomGaussianBlur",
    "RandomGrayscale",
    "RandomHue",
    "RandomInvert",
    "RandomPerspective",
    "RandomPosterization",
    "RandomRotation",
    "RandomSaturation",
    "RandomSharpness",
    "RandomShear",
    "RandomTranslation",
    "RandomZoom",
    "Solarization",
)


@converter(*_INFERENCE_IDENTITY, passthrough=True)
def convert_augmentation(call: LayerCall) -> Converted:
    """Data augmentation: Keras applies it only in training, so the exported model skips it."""
    spec = call.inputs[0]
    if tuple(call.output_shapes[0]) != tuple(spec.keras_shape):
        raise call.unsupported("it changes the tensor's shape at inference")
    out = spec if spec.flat_order is not None else call.output_spec(spec.perm)
    return Converted([], [out], notes=[f"{call.class_name} is data augmentation: identity at inference."])


def _image_axes(call: LayerCall) -> tuple[int, int]:
    """The Keras (height, width) axes of the input for the layer's data_format."""
    rank = call.inputs[0].rank
    if rank != 4:
        raise call.unsupported(f"a rank-{rank} input (batched images expected)")
    if call.config.get("data_format", "channels_last") == "channels_first":
        return 2, 3
    return 1, 2


def _crop_expression(call: LayerCall, box: dict[int, tuple[int, int]]) -> str:
    """``{x}[:, :, a:b, c:d]`` slicing Keras axes ``box`` (axis -> (start, stop)) in torch layout."""
    spec = call.inputs[0]
    parts = []
    for axis in spec.perm:
        start, stop = box.get(axis, (None, None))
        parts.append(":" if start is None else f"{start}:{stop}")
    while parts and parts[-1] == ":":
        parts.pop()
    return "{x}[" + ", ".join(parts) + "]" if parts else "{x}"


@converter("RandomCrop", passthrough=True)
def convert_random_crop(call: LayerCall) -> Converted:
    spec = call.inputs[0]
    if tuple(call.output_shapes[0]) != tuple(spec.keras_shape):
        raise call.unsupported(
            "Keras 3 returns the uncropped image at inference, which disagrees with the output "
            "shape the model declares; crop explicitly (CenterCrop) or match the input size"
        )
    return convert_augmentation(call)


@converter("CenterCrop", passthrough=True)
def convert_center_crop(call: LayerCall) -> Converted:
    spec = call.inputs[0]
    h_axis, w_axis = _image_axes(call)
    height, width = spec.keras_shape[h_axis], spec.keras_shape[w_axis]
    target_h, target_w = int(call.config["height"]), int(call.config["width"])
    if height is None or width is None:
        raise call.unsupported("an input of unknown height or width")
    if height < target_h or width < target_w:
        raise call.unsupported("an input smaller than the crop (Keras resizes it then)")
    top, left = (height - target_h) // 2, (width - target_w) // 2
    expr = _crop_expression(call, {h_axis: (top, top + target_h), w_axis: (left, left + target_w)})
    steps = [] if expr == "{x}" else [Step(expr, f"Keras CenterCrop to {target_h}x{target_w}")]
    return Converted(steps, [call.output_spec(spec.perm)])


@converter("Resizing", channels_first=True)
def convert_resizing(call: LayerCall) -> Converted:
    config = call.config
    spec = call.inputs[0]
    h_axis, w_axis = _image_axes(call)
    if "float" not in str(spec.dtype):
        raise call.unsupported(f"a {spec.dtype} input (Keras rounds and saturates; not converted)")
    interpolation = config.get("interpolation", "bilinear")
    modes = {"bilinear": "bilinear", "nearest": "nearest-exact"}
    if interpolation not in modes:
        raise call.unsupported(f"interpolation={interpolation!r} (bilinear and nearest are)")
    if config.get("antialias"):
        raise call.unsupported("antialias=True (TF's antialiasing kernel differs from torch's)")
    if config.get("pad_to_aspect_ratio"):
        raise call.unsupported("pad_to_aspect_ratio=True")
    height, width = spec.keras_shape[h_axis], spec.keras_shape[w_axis]
    target_h, target_w = int(config["height"]), int(config["width"])
    steps: list[Step] = []
    if config.get("crop_to_aspect_ratio"):
        if height is None or width is None:
            raise call.unsupported("crop_to_aspect_ratio with an unknown input size")
        # TF's arithmetic (float32, truncation) for the centred crop with the target aspect ratio.
        crop_h = max(min(height, int(np.float32(width * target_h) / np.float32(target_w))), 1)
        crop_w = max(min(width, int(np.float32(height * target_w) / np.float32(target_h))), 1)
        top, left = int(np.float32(height - crop_h) / 2), int(np.float32(width - crop_w) / 2)
        if (crop_h, crop_w) != (height, width):
            box = {h_axis: (top, top + crop_h), w_axis: (left, left + crop_w)}
            steps.append(Step(_crop_expression(call, box), "crop to the target aspect ratio first"))
    cf = call.channels_first_perm()
    steps += call.relayout(cf)  # the crop (if any) slices the input's own layout first
    mode = modes[interpolation]
    why = (
        "TF resizes with half-pixel centres and no antialiasing: align_corners=False"
        if mode == "bilinear"
        else "TF's nearest neighbour (half-pixel centres) is torch's 'nearest-exact'"
    )
    options = ", align_corners=False" if mode == "bilinear" else ""
    steps.append(Step(f'F.interpolate({{x}}, size=({target_h}, {target_w}), mode="{mode}"{options})', why))
    return Converted(steps, [call.output_spec(cf)])
