"""Keras's fan-scaled initialisers written for a block class, whose instances differ in width.

A flat class re-initialises each layer with the bound Keras computed for it (a number). In a block
class one line serves blocks of different widths, so a bound that varies between them is written
as ``math.sqrt(K / fan)``, the fan read off the weight tensor: the expression that gives every
instance its own Keras bound.
"""

from __future__ import annotations

import itertools
import math

from . import initializers
from .converters._source import number


def keras_fans(layer) -> list[int]:
    """The fans Keras's initialiser of ``layer``'s kernel scales by, one per instance; [] unknown.

    From the layer's config (``VarianceScaling(mode=...)``, Glorot: fan_in + fan_out, He/LeCun:
    fan_in) and its kernel's Keras shape, so the formula names the fan Keras uses even where
    two fans grow together across the blocks (an expansion ratio).
    """
    modes = set()
    config = layer.get_config() if layer is not None and hasattr(layer, "get_config") else {}
    for key, value in config.items():
        if not key.endswith("initializer") or not isinstance(value, dict):
            continue
        name = str(value.get("class_name", "")).lower().replace("_", "")
        if name.startswith("glorot"):
            modes.add("fan_avg")
        elif name.startswith(("he", "lecun")):
            modes.add("fan_in")
        elif name == "variancescaling":
            modes.add((value.get("config") or {}).get("mode", "fan_in"))
    kernels = [w for w in getattr(layer, "weights", []) if len(w.shape) >= 2]
    if len(modes) != 1 or len(kernels) != 1:
        return []
    fan_in, fan_out = initializers.keras_fans(tuple(kernels[0].shape))
    return [{"fan_in": fan_in, "fan_out": fan_out, "fan_avg": fan_in + fan_out}[modes.pop()]]


def fan_formula(
    weight: str, shapes: list[tuple], values: list[list], varying: list[int], template, fans: list[list[int]]
) -> list[str] | None:
    """Lines writing an init call's varying bounds as ``math.sqrt(K / fan)``.

    The fan candidates are what Keras's fans come to for torch's weight layouts: ``w[0].numel()``
    (a Dense/convolution's fan_in, a depthwise kernel's fan_out), ``w[:, 0].numel()`` (their
    fan_out), ``w.numel()`` (a depthwise kernel's fan_in) and sums of two (Glorot's fan_in +
    fan_out). The first that makes ``bound**2 * fan`` the same for every instance is the one.
    """
    basic = [
        (f"{weight}[0].numel()", lambda s: math.prod(s[1:])),
        (f"{weight}[:, 0].numel()", lambda s: s[0] * math.prod(s[2:])),
        (f"{weight}.numel()", math.prod),
    ]
    pairs = [
        (f"({a} + {b})", lambda s, fa=fa, fb=fb: fa(s) + fb(s))
        for (a, fa), (b, fb) in itertools.combinations_with_replacement(basic, 2)
    ]
    base = next((i for i in varying if values[0][i] > 0), None)
    if base is None:
        return None
    known = [f[0] for f in fans] if all(fans) else None
    for expr, fan in basic + pairs:
        if known is not None and any(fan(shape) != k for shape, k in zip(shapes, known)):
            continue  # not the fan Keras's initialiser uses
        constants = [v[base] ** 2 * fan(shape) for v, shape in zip(values, shapes)]
        if not all(math.isclose(c, constants[0], rel_tol=1e-9) for c in constants):
            continue
        ratios = {i: values[0][i] / values[0][base] for i in varying}
        if any(not math.isclose(v[i], ratios[i] * v[base], rel_tol=1e-9) for v in values for i in varying):
            continue
        name = "std" if template.slots[base].hint == "std" else "bound"
        rendered = {}
        for i, slot in enumerate(template.slots):
            if i not in varying:
                rendered[i] = slot.text
            elif ratios[i] == 1:
                rendered[i] = name
            elif ratios[i] == -1:
                rendered[i] = f"-{name}"
            else:
                rendered[i] = f"{number(ratios[i])} * {name}"
        call, _, comment = template.render(rendered).partition("  # ")
        # The initialiser's trailing comment on a line of its own: the call then fits one line.
        explained = [f"# {comment}"] if comment else []
        # K is a few ulps off Keras's own constant (6.000000000000001 for Glorot's 6): rounded, the
        # layers sharing an initialiser share the line, and a short constant reads as one.
        short = float(f"{constants[0]:.10g}")
        constant = short if len(repr(short)) <= 8 else float(f"{constants[0]:.14g}")
        return [*explained, f"{name} = math.sqrt({number(constant)} / {expr})", call]
    return None
