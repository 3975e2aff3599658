"""Keras initialisers -> ``reset_parameters`` lines, so a generated class trains like Keras.

Keras computes fans from its own kernel layout (receptive field x in/out channels); torch's
``nn.init`` helpers compute them from torch's layout. They agree for Dense and plain convolutions,
not for depthwise or transposed kernels, so the lines use explicit bounds whenever fans differ.
"""

from __future__ import annotations

import math

from .converters._source import number


def keras_fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) the way keras.initializers computes them."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


def torch_fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) the way torch.nn.init computes them for a weight of ``shape``."""
    if len(shape) < 2:
        return (shape[0], shape[0]) if shape else (1, 1)
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def init_lines(config, keras_shape: tuple[int, ...], torch_shape: tuple[int, ...], param: str) -> list[str]:
    """Lines re-initialising ``{m}.<param>`` as Keras's ``config`` initialiser would.

    ``config`` is what ``layer.get_config()`` holds for the initialiser (a dict or a name).
    """
    if isinstance(config, str):
        name, options = config, {}
    elif config is None:
        return []
    else:
        name, options = config.get("class_name", ""), dict(config.get("config") or {})
    name = name.lower().replace("_", "")
    # Keras's short aliases ("uniform" in keras-io's custom RNN cell) of its random initialisers.
    name = {"uniform": "randomuniform", "normal": "randomnormal"}.get(name, name)
    target = "{m}." + param
    fan_in, fan_out = keras_fans(keras_shape)
    same_fans = keras_fans(keras_shape) == torch_fans(torch_shape)
    if name == "zeros":
        return [f"nn.init.zeros_({target})"]
    if name == "ones":
        return [f"nn.init.ones_({target})"]
    if name == "constant":
        value = options.get("value", 0.0)
        if not isinstance(value, (int, float)):  # an array (pretrained embeddings): nothing to redo
            return [f"# {param}: Keras Constant initialiser with an array: loaded, not re-initialised"]
        return [f"nn.init.constant_({target}, {number(value)})"]
    if name == "glorotuniform":
        if same_fans:
            return [f"nn.init.xavier_uniform_({target})"]
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        return [
            f"# Keras's glorot_uniform: fans ({fan_in}, {fan_out}) of the Keras kernel's layout",
            f"nn.init.uniform_({target}, -{number(limit)}, {number(limit)})",
        ]
    if name == "orthogonal":
        return [f"nn.init.orthogonal_({target}, gain={number(options.get('gain', 1.0))})"]
    if name in {"randomnormal", "randomuniform", "truncatednormal"}:
        mean, std = options.get("mean", 0.0), options.get("stddev", 0.05)
        if name == "randomuniform":
            low, high = options.get("minval", -0.05), options.get("maxval", 0.05)
            return [f"nn.init.uniform_({target}, {number(low)}, {number(high)})"]
        if name == "randomnormal":
            return [f"nn.init.normal_({target}, mean={number(mean)}, std={number(std)})"]
        low, high = mean - 2 * std, mean + 2 * std
        return [
            f"nn.init.trunc_normal_({target}, mean={number(mean)}, std={number(std)}, "
            f"a={number(low)}, b={number(high)})"
        ]
    scaling = _variance_scaling(name, options)
    if scaling is None:
        return [f"# {param}: Keras initialiser {name!r} has no torch twin; torch's default is kept"]
    scale, mode, distribution = scaling
    fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
    variance = scale / max(1.0, fan)
    if distribution == "uniform":
        limit = math.sqrt(3.0 * variance)
        return [f"nn.init.uniform_({target}, -{number(limit)}, {number(limit)})  # Keras {name}"]
    if distribution == "untruncated_normal":
        return [f"nn.init.normal_({target}, std={number(math.sqrt(variance))})  # Keras {name}"]
    # Keras's truncated normal: cut at two standard deviations, then rescaled to keep the variance.
    std = math.sqrt(variance) / 0.87962566103423978
    return [
        f"nn.init.trunc_normal_({target}, std={number(std)}, a={number(-2 * std)}, "
        f"b={number(2 * std)})  # Keras {name}: truncated normal"
    ]


def _variance_scaling(name: str, options: dict) -> tuple[float, str, str] | None:
    presets = {
        "glorotnormal": (1.0, "fan_avg", "truncated_normal"),
        "henormal": (2.0, "fan_in", "truncated_normal"),
        "heuniform": (2.0, "fan_in", "uniform"),
        "lecunnormal": (1.0, "fan_in", "truncated_normal"),
        "lecununiform": (1.0, "fan_in", "uniform"),
    }
    if name in presets:
        return presets[name]
    if name == "variancescaling":
        return (
            float(options.get("scale", 1.0)),
            options.get("mode", "fan_in"),
            options.get("distribution", "truncated_normal"),
        )
    return None


def unit_forget_bias_lines(param: str, units: int) -> list[str]:
    """Keras LSTM ``unit_forget_bias=True``: the forget gate's bias block (the second) starts at 1."""
    return [
        "# Keras unit_forget_bias: the forget gate's bias starts at 1",
        f"nn.init.ones_({{m}}.{param}[{units}:{2 * units}])",
    ]
