"""The exactness check every converter test goes through.

Randomises every weight of the Keras model (BatchNorm statistics too, so errors cannot hide in tiny
activations), converts it, checks the generated source (ruff clean, compiles standalone, strict
state_dict load) and compares the outputs on random inputs in the chosen input format.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import torch

import kerastorch_magic as k2t
from kerastorch_magic import codegen

RTOL = 1e-5


def randomise_weights(model, seed: int = 0, inputs=None, calibrate: bool = True) -> None:
    """Give every weight random values; variances/scales positive and away from zero.

    Kernels are N(0, 1/fan_in) (a depthwise kernel's fan-in excludes the channel axis), so
    activations keep their scale through linear layers. With ``calibrate``, BatchNorm moving
    statistics then come from one training-mode pass over ``inputs`` (the arrays the test compares
    on) plus random samples, 32 in all: the mean is that batch's, the variance its mean square.
    Still random per channel and unlike the test batch's own statistics, but activations stay O(1)
    however deep the model (purely random statistics leave them to each BatchNorm's random offset
    or let them grow exponentially), and no BatchNorm amplifies float32 round-off.
    """
    rng = np.random.default_rng(seed)
    for layer in _all_layers(model):
        depthwise = "Depthwise" in type(layer).__name__
        new = []
        for weight in layer.weights:
            value = np.asarray(weight.numpy())
            if not np.issubdtype(value.dtype, np.floating):
                new.append(value)
                continue
            name = weight.name
            if name in {"moving_variance", "variance", "gamma"} or "variance" in name:
                new.append(rng.uniform(0.5, 1.5, value.shape).astype(value.dtype))
            elif name in {"moving_mean", "mean", "beta"}:
                new.append(rng.normal(0.0, 0.5, value.shape).astype(value.dtype))
            else:
                fan_axes = value.shape[:-2] if (depthwise or name == "depthwise_kernel") else value.shape[:-1]
                scale = 1.0 / np.sqrt(max(1, np.prod(fan_axes))) if value.ndim > 1 else 0.5
                sample = rng.standard_normal(value.shape, dtype=np.float32)  # float32: 2x faster
                sample *= np.float32(scale)
                new.append(sample.astype(value.dtype, copy=False))
        if new:
            for weight, value in zip(layer.weights, new):
                weight.assign(value)
            if hasattr(layer, "finalize_state"):  # Normalization caches its statistics at build
                layer.finalize_state()
    if calibrate:
        inputs = list(inputs) if inputs is not None else random_inputs(model)
        extra = _like(inputs, max(1, 32 - len(inputs[0])), seed + 7)  # shapes may be open (None)
        _calibrate_batch_norm(model, [np.concatenate([a, b]) for a, b in zip(inputs, extra)])


# Training-only noise layers and the attribute that switches each off (for the calibration pass).
_NOISE = {"Dropout": "rate", "GaussianNoise": "stddev", "StochasticDepth": "drop_path_rate"}


def _calibrate_batch_norm(model, inputs) -> None:
    """BatchNorm moving statistics := this batch's statistics (see randomise_weights)."""
    import keras

    layers = list(_all_layers(model))
    norms = [layer for layer in layers if isinstance(layer, keras.layers.BatchNormalization)]
    if not norms:
        return
    saved = [(layer, "momentum", layer.momentum) for layer in norms]
    for layer in layers:  # dropout and noise would skew the statistics away from inference's
        for kind, attribute in _NOISE.items():
            if kind in type(layer).__name__ and isinstance(getattr(layer, attribute, None), (int, float)):
                saved.append((layer, attribute, getattr(layer, attribute)))
    try:
        for layer, attribute, _ in saved:
            setattr(layer, attribute, 0.0)  # momentum 0: the moving statistics become this batch's
        model(inputs if len(inputs) > 1 else inputs[0], training=True)
    except Exception:  # noqa: BLE001 - a model that cannot run in training mode keeps random stats
        pass
    finally:
        for layer, attribute, value in saved:
            setattr(layer, attribute, value)
    for layer in norms:
        # Divide by the root mean square, not the spread: a channel that barely varies over the
        # batch would otherwise amplify float32 round-off (and any mismatch) by |mean| / spread at
        # every layer; this way no BatchNorm amplifies and activations still stay O(1).
        mean, var = np.asarray(layer.moving_mean.numpy()), np.asarray(layer.moving_variance.numpy())
        layer.moving_variance.assign((var + np.square(mean)).astype(var.dtype))


def _all_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            yield from _all_layers(layer)
        yield layer


def random_inputs(model, batch: int = 2, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = []
    for tensor in model.inputs:
        shape = (batch, *tensor.shape[1:])
        if "int" in str(tensor.dtype):
            arrays.append(rng.integers(0, 10, shape).astype(str(tensor.dtype)))
        else:
            arrays.append(rng.normal(0.0, 1.0, shape).astype("float32"))
    return arrays


def _like(arrays: list[np.ndarray], batch: int, seed: int) -> list[np.ndarray]:
    """Random arrays shaped and typed like ``arrays`` but with ``batch`` rows."""
    rng = np.random.default_rng(seed)
    out = []
    for array in arrays:
        shape = (batch, *array.shape[1:])
        if np.issubdtype(array.dtype, np.integer):
            out.append(rng.integers(0, max(1, int(array.max()) + 1), shape).astype(array.dtype))
        else:
            out.append(rng.normal(0.0, 1.0, shape).astype(array.dtype))
    return out


def ruff_binary() -> str:
    """The ruff executable that codegen formats with (the binary itself: ``python -m ruff`` costs
    70 ms more a call); tests lint generated code with it."""
    return codegen._ruff() or "ruff"


def check_sources(folder: Path) -> None:
    """Every generated ``.py`` file in ``folder`` passes ``ruff check`` with the project's rules
    and is stable under ``ruff format`` with default settings (one ruff run for many models)."""
    config = Path(__file__).parents[1] / "pyproject.toml"
    ruff = ruff_binary()
    lint = subprocess.run(
        [ruff, "check", "--no-cache", "--config", str(config), str(folder)], capture_output=True, text=True
    )
    assert lint.returncode == 0, f"ruff check failed on generated code:\n{lint.stdout}{lint.stderr}"
    fmt = subprocess.run(
        [ruff, "format", "--check", "--no-cache", "--isolated", str(folder)],
        capture_output=True,
        text=True,
    )
    assert fmt.returncode == 0, f"generated code is not ruff-format stable:\n{fmt.stdout}{fmt.stderr}"


def check_source(code: str) -> None:
    """Generated code passes ``ruff check``, is ``ruff format``-stable and compiles on its own."""
    ruff = [ruff_binary()]
    lint = subprocess.run(
        [*ruff, "check", "--no-cache", "--stdin-filename", "net.py", "-"],
        input=code,
        capture_output=True,
        text=True,
    )
    assert lint.returncode == 0, f"ruff check failed:\n{lint.stdout}{lint.stderr}\n{code}"
    fmt = subprocess.run([*ruff, "format", "--isolated", "-"], input=code, capture_output=True, text=True)
    assert fmt.stdout == code, "generated code is not stable under `ruff format` with default settings"
    isolated = subprocess.run(
        [*ruff, "check", "--isolated", "--no-cache", "--stdin-filename", "net.py", "-"],
        input=code,
        capture_output=True,
        text=True,
    )
    assert isolated.returncode == 0, f"ruff check --isolated failed:\n{isolated.stdout}\n{code}"
    namespace: dict = {}
    exec(compile(code, "<standalone>", "exec"), namespace)


def relative_error(expected: np.ndarray, actual: np.ndarray) -> float:
    scale = float(np.max(np.abs(expected))) or 1.0
    return float(np.max(np.abs(expected - actual))) / scale


def run_both(model, conversion, inputs) -> tuple[list[np.ndarray], tuple[torch.Tensor, ...]]:
    """Keras's outputs (numpy, Keras's layout) and the built module's (torch's layout) on ``inputs``.

    Keras runs in inference mode, the module under ``torch.no_grad()``; as many outputs each.
    """
    import keras

    module = conversion.build()
    expected = model(inputs if len(inputs) > 1 else inputs[0], training=False)
    expected = [np.asarray(keras.ops.convert_to_numpy(e)) for e in keras.tree.flatten(expected)]
    torch_inputs = [
        torch.from_numpy(np.ascontiguousarray(spec.to_torch_layout(a)))
        for spec, a in zip(conversion.inputs, inputs)
    ]
    with torch.no_grad():
        actual = module(*torch_inputs)
    actual = actual if isinstance(actual, tuple) else (actual,)
    assert len(actual) == len(expected)
    return expected, actual


def assert_exact(
    model,
    input_format: str = "channels_first",
    inputs=None,
    rtol: float = RTOL,
    randomise: bool = True,
    check_code: bool = True,
):
    """Convert ``model`` and assert its outputs match Keras; returns (conversion, max rel error)."""
    inputs = inputs if inputs is not None else random_inputs(model)
    if randomise:
        randomise_weights(model, inputs=inputs)
    conversion = k2t.convert(model, input_format=input_format)
    if check_code:
        check_source(conversion.code)
    expected, actual = run_both(model, conversion, inputs)
    worst = 0.0
    for spec, keras_out, torch_out in zip(conversion.outputs, expected, actual):
        torch_out = torch_out.numpy()
        assert torch_out.shape == tuple(np.transpose(keras_out, spec.perm).shape)
        error = relative_error(np.transpose(keras_out, spec.perm), torch_out)
        worst = max(worst, error)
        assert error <= rtol, f"relative error {error:.3g} > {rtol:g}\n{conversion.code}"
    return conversion, worst


def assert_exact_with_and_without_folding(model, input_format: str = "channels_first", rtol: float = RTOL):
    """(default conversion, ``fold_batchnorm=True`` conversion) of ``model`` with random weights and
    BatchNorm statistics, each checked as :func:`assert_exact` checks one (Keras in eval mode)."""
    inputs = random_inputs(model)
    randomise_weights(model, inputs=inputs)
    conversions = []
    for fold in (False, True):
        conversion = k2t.convert(model, input_format=input_format, fold_batchnorm=fold)
        check_source(conversion.code)
        expected, actual = run_both(model, conversion, inputs)
        for spec, keras_out, torch_out in zip(conversion.outputs, expected, actual):
            error = relative_error(np.transpose(keras_out, spec.perm), torch_out.numpy())
            assert error <= rtol, f"fold_batchnorm={fold}: relative error {error:.3g}\n{conversion.code}"
        conversions.append(conversion)
    return conversions


def unwrap(code: str) -> str:
    """``code`` with ruff's line wrapping undone, so tests can look for one-line snippets.

    Bracketed argument lists split over several lines (with their magic trailing comma) are joined
    back, and a comment wrapped over several ``#`` lines becomes one line.
    """
    code = re.sub(r"\n[ \t]*# ", " ", code)  # comment continuation lines
    code = re.sub(r"([(\[])\s*\n\s*", r"\1", code)
    code = re.sub(r",?\s*\n\s*([)\]])", r"\1", code)
    return re.sub(r",\s*\n\s*", ", ", code)
