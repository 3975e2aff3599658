"""All 40 keras.applications architectures (weights=None, randomised) against their conversions.

Each model is built with a reduced input size where the architecture allows it, 10 classes and
no classifier softmax (logits compare more strictly than probabilities), every weight randomised
(BatchNorm statistics included), converted, ruff-checked and run on the same random batch. The
relative error (max |Δ| / max |Keras output|) must stay within 1e-5, except where a model's own
float32 round-off provably exceeds it (``TOLERANCE`` below records the measured figure and why).
A failing model names the first layer where the two diverge.

``python tests/test_applications.py [names...]`` prints the results table instead.
"""

from __future__ import annotations

import gc
import inspect
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]  # also run as a script

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from exactness import RTOL, check_source, random_inputs, randomise_weights, relative_error  # noqa: E402

import kerastorch_magic as k2t  # noqa: E402


@dataclass(frozen=True)
class App:
    size: int = 32  # input height = width; 32 is the smallest most families accept
    slow: bool = False  # many parameters or layers: marked slow (CI still runs it)
    both_formats: bool = False  # also checked with input_format="channels_last"


APPS: dict[str, App] = {
    "ConvNeXtTiny": App(both_formats=True),
    "ConvNeXtSmall": App(),
    "ConvNeXtBase": App(slow=True),
    "ConvNeXtLarge": App(slow=True),
    "ConvNeXtXLarge": App(slow=True),
    "DenseNet121": App(size=40, both_formats=True),
    "DenseNet169": App(),
    "DenseNet201": App(slow=True),
    "EfficientNetB0": App(size=37, both_formats=True),
    "EfficientNetB1": App(),
    "EfficientNetB2": App(),
    "EfficientNetB3": App(),
    "EfficientNetB4": App(),
    "EfficientNetB5": App(slow=True),
    "EfficientNetB6": App(slow=True),
    "EfficientNetB7": App(slow=True),
    "EfficientNetV2B0": App(both_formats=True),
    "EfficientNetV2B1": App(),
    "EfficientNetV2B2": App(),
    "EfficientNetV2B3": App(),
    "EfficientNetV2S": App(),
    "EfficientNetV2M": App(slow=True),
    "EfficientNetV2L": App(slow=True),
    "InceptionResNetV2": App(size=75, both_formats=True),  # Keras's minimum is 75
    "InceptionV3": App(size=75),
    "MobileNet": App(size=35, both_formats=True),
    "MobileNetV2": App(size=35, both_formats=True),
    "MobileNetV3Large": App(),
    "MobileNetV3Small": App(size=33, both_formats=True),
    "NASNetLarge": App(slow=True),
    "NASNetMobile": App(size=35, both_formats=True),
    "ResNet50": App(size=37, both_formats=True),
    "ResNet101": App(),
    "ResNet152": App(slow=True),
    "ResNet50V2": App(both_formats=True),
    "ResNet101V2": App(),
    "ResNet152V2": App(slow=True),
    "VGG16": App(both_formats=True),
    "VGG19": App(),
    "Xception": App(size=71, both_formats=True),  # Keras's minimum is 71
}

# Models whose float32 round-off exceeds RTOL, with the measured figure and the reason.
TOLERANCE: dict[str, tuple[float, str]] = {}


def build(name: str, size: int | None = None):
    """The Keras application ``name`` with random weights, 10 classes and logits out."""
    function = getattr(keras.applications, name)
    size = size or APPS[name].size
    options = {"weights": None, "input_shape": (size, size, 3), "classes": 10}
    if "classifier_activation" in inspect.signature(function).parameters:
        options["classifier_activation"] = None
    return function(**options)


def run(name: str, input_format: str = "channels_first") -> dict:
    """Build, randomise, convert, check and compare one application; returns its figures.

    Raises ``k2t.ConversionError`` (naming every missing layer) or ``AssertionError`` (naming the
    first diverging layer).
    """
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    model = build(name)
    inputs = random_inputs(model)
    randomise_weights(model, inputs=inputs)
    started = time.perf_counter()
    conversion = k2t.convert(model, input_format=input_format)
    seconds = time.perf_counter() - started
    check_source(conversion.code)
    module = _build(conversion)
    expected = np.asarray(model(inputs[0], training=False))
    spec = conversion.outputs[0]
    with torch.no_grad():
        actual = module(
            torch.from_numpy(np.ascontiguousarray(conversion.inputs[0].to_torch_layout(inputs[0])))
        )
    actual = actual.numpy()
    expected = np.transpose(expected, spec.perm)
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != Keras {expected.shape}"
    error = relative_error(expected, actual)
    tolerance = TOLERANCE.get(name, (RTOL, ""))[0]
    if not error <= tolerance:
        raise AssertionError(
            f"{name} ({input_format}): relative error {error:.3g} > {tolerance:g}; "
            + _diverging(model, conversion, inputs, tolerance)
        )
    result = {
        "model": name,
        "format": input_format,
        "size": APPS[name].size,
        "params": model.count_params(),
        "layers": len(model.layers),
        "rel_error": error,
        "convert_s": seconds,
        "lines": conversion.code.count("\n"),
    }
    del model, module, conversion
    gc.collect()
    return result


def _build(conversion):
    """``conversion.build()`` without the random initialisation it then overwrites.

    The same class, strict state_dict load and eval mode, but instantiated on the meta device and
    given the conversion's tensors (``assign=True``): ``reset_parameters`` runs on no data, where
    torch's rejection-sampling ``trunc_normal_`` takes ~30 s for EfficientNetB7's kernels.
    (``build()`` itself runs in every per-layer test.)
    """
    namespace: dict = {}
    exec(compile(conversion.code, "<generated>", "exec"), namespace)  # noqa: S102
    with torch.device("meta"):
        module = namespace[conversion.class_name]()
    module.load_state_dict(conversion.state_dict, strict=True, assign=True)
    return module.eval()


def _diverging(model, conversion, inputs, tolerance: float) -> str:
    """Where the two models part: the first layer whose output exceeds the tolerance."""
    try:
        comparison = k2t.compare(model, conversion, inputs=inputs, device="cpu", tolerance=tolerance)
    except Exception as error:  # noqa: BLE001 - diagnosis only; the failure itself is reported
        return f"(per-layer comparison failed: {type(error).__name__}: {error})"
    first = comparison.first_failure
    if first is None:
        return "no single layer exceeds the tolerance (round-off accumulates)"
    where = f"{first.keras_layer!r} ({first.keras_class})"
    return f"first diverging layer {where}, relative error {first.rel_diff:.3g}"


def _cases():
    for name, app in APPS.items():
        formats = ["channels_first", "channels_last"] if app.both_formats else ["channels_first"]
        for fmt in formats:
            marks = [pytest.mark.slow] if app.slow else []
            yield pytest.param(name, fmt, marks=marks, id=f"{name}-{fmt}")


@pytest.mark.parametrize("name, input_format", list(_cases()))
def test_application_matches_keras(name, input_format):
    try:
        result = run(name, input_format)
    except k2t.ConversionError as error:
        pytest.fail(f"{name} ({input_format}) not converted:\n{error}", pytrace=False)
    except AssertionError as error:
        pytest.fail(str(error), pytrace=False)
    assert result["rel_error"] <= TOLERANCE.get(name, (RTOL, ""))[0]


# -- the custom layers of keras.applications, in small models ------------------------------------


def _layer_scale_model(after_dense: bool):
    from keras.src.applications.convnext import LayerScale, StochasticDepth

    inputs = keras.Input((9, 8, 3))
    x = keras.layers.Conv2D(6, 3, padding="same")(inputs)
    if after_dense:
        x = keras.layers.Dense(6)(x)  # ConvNeXt's case: channels last in torch too
    x = LayerScale(1e-6, 6)(x)
    x = StochasticDepth(0.3)(x)
    return keras.Model(inputs, keras.layers.Conv2D(4, 1)(x))


@pytest.mark.parametrize("input_format", ["channels_first", "channels_last"])
@pytest.mark.parametrize("after_dense", [False, True])
def test_layer_scale_and_stochastic_depth(after_dense, input_format):
    from exactness import assert_exact

    conversion, _ = assert_exact(_layer_scale_model(after_dense), input_format)
    (key,) = [k for k in conversion.state_dict if k.endswith(".gamma")]
    shape = tuple(conversion.state_dict[key].shape)
    # after a conv the tensor is channels-first inside forward, whatever the input format
    assert shape == ((6,) if after_dense else (6, 1, 1))
    module = conversion.build()
    assert all(p.requires_grad for p in module.parameters())  # gamma is learned, as in Keras
    module.reset_parameters()
    assert torch.all(dict(module.named_parameters())[key] == 1e-6)


@pytest.mark.parametrize("input_format", ["channels_first", "channels_last"])
def test_custom_scale_layer(input_format):
    from exactness import assert_exact
    from keras.src.applications.inception_resnet_v2 import CustomScaleLayer

    inputs = keras.Input((9, 8, 3))
    shortcut = keras.layers.Conv2D(5, 3, padding="same")(inputs)
    residual = keras.layers.Conv2D(5, 1)(shortcut)
    outputs = CustomScaleLayer(0.17)([shortcut, residual])
    conversion, _ = assert_exact(keras.Model(inputs, outputs), input_format)
    assert "* 0.17" in conversion.code


def test_a_users_layer_named_like_an_application_layer_is_refused():
    class LayerScale(keras.layers.Layer):  # same name, different meaning
        def call(self, x):
            return x * 2.0

    inputs = keras.Input((4,))
    model = keras.Model(inputs, LayerScale(name="mine")(keras.layers.Dense(3)(inputs)))
    with pytest.raises(k2t.ConversionError, match="mine.*custom layer named like"):
        k2t.convert(model)


def test_every_application_is_listed():
    names = {
        n
        for n in dir(keras.applications)
        if n[0].isupper() and inspect.isfunction(getattr(keras.applications, n))
    }
    assert names == set(APPS), f"unlisted: {sorted(names - set(APPS))}, gone: {sorted(set(APPS) - names)}"
    assert len(APPS) == 40


def main(names: list[str]) -> None:
    """Print the results table (model / converted? / relative error / conversion time)."""
    columns = ["model", "format", "size", "params", "converted", "rel error", "convert s", "total s"]
    print("{:20s} {:15s} {:>4s} {:>8s} {:>9s} {:>10s} {:>9s} {:>7s}".format(*columns))
    for name in names or list(APPS):
        for fmt in ["channels_first", "channels_last"] if APPS[name].both_formats else ["channels_first"]:
            started = time.perf_counter()
            params = ""
            try:
                r = run(name, fmt)
                line = f"{'yes':>9s} {r['rel_error']:10.2e} {r['convert_s']:9.2f}"
                params = f"{r['params'] / 1e6:7.1f}M"
            except k2t.ConversionError as error:
                missing = sorted({cls for _, cls in error.layers})
                line = f"{'no':>9s} missing: {', '.join(missing) or str(error)[:200]}"
            except AssertionError as error:
                line = f"{'MISMATCH':>9s} {str(error)[:300]}"
            except Exception as error:  # noqa: BLE001 - the table reports crashes too
                line = f"{'ERROR':>9s} {type(error).__name__}: {str(error)[:300]}"
            total = time.perf_counter() - started
            print(f"{name:20s} {fmt:15s} {APPS[name].size:4d} {params:>8s} {line} {total:7.1f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
