"""``compare()``: the orchestration. Devices, TF32 and threads, one run per plan, the drift check.

A run feeds both models the same input once: the PyTorch forward of a :class:`~.plans.Plan` calls
a tap per Keras layer output; each tap advances the :class:`~.keras_side.KerasStepper` just far
enough, compares the two on the torch device and keeps only numbers, a histogram and previews.

The drift check: when layers exceed the tolerance end to end (and ``isolate`` is off), a second
run feeds every PyTorch layer Keras's own output of the layer before (the tap overwrites the
activation once compared) and keeps only each layer's relative error. A layer beyond tolerance
end to end whose own error and whose upstream layers' own errors are within it is ``drift``:
deep untrained networks amplify float32 round-off (Keras's float32 output is as far from a
float64 run as the port's) until whole stages disagree; a wrong layer shows in isolation too.
Its cost is one more pass without histograms or previews, only when something failed. A layer
beyond tolerance in isolation is rerun in Keras in float64 on the same inputs (its call arguments
are kept only for the failing rows, only until compared): a port that matches that reference is
right where Keras's own float32 arithmetic is not (LayerNormalization over one feature).

A row random at inference (``Row.random``) is always fed forward from Keras's output, as in
isolation: the two draws differ, and the layers after it should not inherit that difference.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

from .. import devices, stats
from ..conversion import Conversion
from ..graph import read_model
from ..ir import Graph
from ..layout import INPUT_FORMATS
from . import inputs as input_data
from . import keras_side
from .plans import ConversionPlan, ModulePlan, Plan, Row, keras_params
from .progress import Reporter, callback
from .results import Comparison, DriftCheck, LayerResult, RunInfo

DEFAULT_TOLERANCE = 1e-4


def compare(
    model,
    conversion_or_module,
    inputs=None,
    device=None,
    mapping: dict | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    *,
    input_format: str | None = None,
    batch_size: int = 2,
    seed: int = 0,
    isolate: bool = False,
    progress=None,
) -> Comparison:
    """Run ``model`` (Keras) and its PyTorch port on the same input; compare every layer's output.

    Args:
        model: the Keras model (not modified).
        conversion_or_module: a :class:`~kerastorch_magic.Conversion` (from ``convert``) or any
            ``torch.nn.Module`` (with ``mapping``: see the package docstring).
        inputs: array(s) in Keras layout (one per model input; a dict by input name works too);
            None draws seeded random data (normal floats; integer ids below the vocabulary size of
            an ``Embedding`` they feed).
        device: where PyTorch runs and the statistics are computed: None/"auto" picks cuda, then
            mps, then cpu (a module of yours stays on its own device); Keras uses its default.
        mapping: your module only: Keras layer name -> submodule name (or a dict/tuple with a
            transform, a layout, ``activation``).
        tolerance: relative error (max|Δ| / max|Keras|) above which a layer fails; within it but
            above a tenth of it, a layer warns.
        input_format: your module only: ``"channels_first"`` or ``"channels_last"`` images; None
            tries channels-first, then the Keras layout.
        batch_size, seed: of the random inputs.
        isolate: feed every PyTorch layer Keras's own output of the layer before throughout, so
            each row shows that layer's own error instead of the error accumulated since the input.
        progress: None (an updating "layer k of N" line in a notebook), True (also on stderr
            outside a notebook), False, or a callable receiving ``Progress`` updates.

    Returns:
        A :class:`Comparison`: ``.ok`` (no conversion error), ``.first_failure``,
        ``.to_dataframe()``, a widget in notebooks. Layers beyond tolerance end to end that are
        exact fed Keras's inputs have status ``drift`` (float32 round-off) and keep ``.ok`` true.

    Raises:
        TypeError: ``conversion_or_module`` is neither a Conversion nor an ``nn.Module``.
        ValueError: inputs that do not fit the model, a conversion of another model, a bad mapping.

    Example:
        >>> result = k2t.compare(model, k2t.convert(model))  # doctest: +SKIP
        >>> assert result.ok, result.first_failure
    """
    started = time.perf_counter()
    graph = read_model(model)
    arrays, description = input_data.prepare(graph, inputs, batch_size, seed)
    if isinstance(conversion_or_module, Conversion):
        if mapping:
            raise ValueError("mapping is for your own nn.Module; a Conversion knows its layers already")
        plans: list[Plan] = [ConversionPlan(conversion_or_module, graph, devices.resolve(device))]
        torch_name, kind = f"{conversion_or_module.class_name} (generated)", "conversion"
    elif isinstance(conversion_or_module, torch.nn.Module):
        module = conversion_or_module
        target = devices.of_module(module, device)
        plans = [
            ModulePlan(module, graph, mapping, target, fmt) for fmt in _input_formats(graph, input_format)
        ]
        torch_name, kind = type(module).__name__, "module"
    else:
        raise TypeError(
            "compare() takes a Conversion (kerastorch_magic.convert(model)) or a torch.nn.Module, "
            f"not {type(conversion_or_module).__name__}"
        )
    reporter = Reporter(callback(progress))
    best = None
    drift = None
    with _full_float32() as tf32:
        for plan in plans:
            run = _Run(graph, plan, arrays, reporter, isolate=isolate)
            run.execute()
            if best is None or run.score() > best.score():
                best = run
            if run.error is None:
                break
        failing = {layer.index for layer in best.layers if layer.status(tolerance) == "fail"}
        if not isolate and best.error is None and failing:
            drift = _drift_check(graph, best.plan, arrays, reporter, failing, tolerance)
    reporter.finish(sum(layer.compared for layer in best.layers))
    for layer in best.layers:
        layer.drift = drift
        if drift is not None and layer.index in drift.float64:
            layer.note = "; ".join(filter(None, (layer.note, drift.float64_note(layer.index))))
    seconds = {**best.seconds, "total": time.perf_counter() - started}
    if drift is not None:
        seconds["drift_check"] = drift.seconds
    info = RunInfo(
        model_name=model.name,
        torch_name=torch_name,
        kind=kind,
        torch_device=devices.describe(best.plan.device),
        keras_device=best.keras.device_name(),
        input=description,
        input_format=best.plan.input_format,
        seconds=seconds,
        error=best.error,
        code=getattr(conversion_or_module, "code", None),
        isolate=bool(isolate),
        tf32_disabled=tf32,
        drift=drift,
    )
    return Comparison(best.layers, tolerance, info)


def _input_formats(graph: Graph, wanted: str | None) -> list[str]:
    if wanted is not None:
        if wanted not in INPUT_FORMATS:
            raise ValueError(f"input_format must be one of {INPUT_FORMATS}, not {wanted!r}")
        return [wanted]
    if any(len(value.shape) >= 3 for value in graph.inputs):
        return list(INPUT_FORMATS)
    return ["channels_last"]


def _drift_check(
    graph: Graph, plan: Plan, arrays, reporter: Reporter, failing: set[int], tolerance: float
) -> DriftCheck:
    """Every layer fed Keras's inputs: its own error, and which rows each row depends on.

    A failing row whose own error is beyond ``tolerance`` is also measured against Keras's layer
    recomputed in float64 (:mod:`.reference64`): where Keras's float32 result is the rounded one.
    The pass stops once the failing rows were seen: the rows after them need no evidence.
    """
    started = time.perf_counter()
    options = {"isolate": True, "until": failing, "phase": "drift check", "recheck_above": tolerance}
    run = _Run(graph, plan, arrays, reporter, **options)
    run.execute()
    isolated: list[float | None] = [None] * len(plan.rows)
    float64: dict[int, tuple[float, float]] = {}
    for index, observed in run.observed.items():
        if plan.rows[index].random:  # different draws: no evidence either way
            continue
        isolated[index] = observed.rel_diff if observed.rel_diff is not None else float("inf")
        if observed.float64 is not None:
            float64[index] = observed.float64
    upstream = _upstream_rows(graph, plan.rows)
    return DriftCheck(isolated, upstream, time.perf_counter() - started, float64=float64)


def _upstream_rows(graph: Graph, rows: list[Row]) -> list[tuple[int, ...]]:
    """Per row, the nearest rows its layer reads from (looking through values without a row)."""
    row_of = {id(row.node.outputs[row.output_index]): row.index for row in rows}
    nearest: dict[int, tuple[int, ...]] = {}
    upstream: list[tuple[int, ...]] = [()] * len(rows)
    for node in graph.nodes:
        reads = tuple(sorted({j for value in node.inputs for j in nearest.get(id(value), ())}))
        for value in node.outputs:
            row = row_of.get(id(value))
            if row is None:
                nearest[id(value)] = reads
            else:
                upstream[row] = reads
                nearest[id(value)] = (row,)
    return upstream


@contextlib.contextmanager
def _single_thread_on_cpu(device: torch.device):
    """Statistics on the CPU run on one thread: they are small memory-bound reductions, and
    between TensorFlow's and torch's thread pools (or on a busy machine) OpenMP barriers cost
    far more than they save (10x measured on 2 cores)."""
    if device.type != "cpu" or torch.get_num_threads() == 1:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def _full_float32():
    """TF32 off while comparing (torch and TensorFlow), restored after; yields whether it was on.

    On Ampere and newer GPUs both frameworks run float32 convolutions in TF32 by default (10-bit
    mantissa, relative errors near 1e-3): that would drown the port's own differences.
    """
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    was_on = any(saved) and torch.cuda.is_available()
    tf = sys.modules.get("tensorflow")
    tf_saved = None
    try:
        if tf is not None and tf.config.list_logical_devices("GPU"):
            tf_saved = tf.config.experimental.tensor_float_32_execution_enabled()
            was_on = was_on or tf_saved
            tf.config.experimental.enable_tensor_float_32_execution(False)
    except Exception:  # an unusual TensorFlow build: leave it alone
        tf_saved = None
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield was_on
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
        if tf_saved is not None:
            tf.config.experimental.enable_tensor_float_32_execution(tf_saved)


_RANDOM_NOTE = (
    "random at inference: Keras and PyTorch draw different values, so the values are not compared "
    "(the histograms show the two distributions) and the next layers are fed Keras's output"
)


class _Enough(Exception):
    """Raised by the drift check's tap once it has seen every row it needs."""


@dataclass
class _Observed:
    torch_shape: tuple | None
    numbers: stats.Numbers | None = None
    histogram: stats.Histogram | None = None
    preview: stats.Preview | None = None
    note: str = ""
    rel_diff: float | None = None  # the drift check keeps only this
    # and, beyond its tolerance: (Keras float32, the port) relative errors against Keras in float64
    float64: tuple[float, float] | None = None


class _Run:
    """One attempt: a Keras stepper and a PyTorch forward, compared layer by layer."""

    def __init__(
        self,
        graph: Graph,
        plan: Plan,
        arrays: list[np.ndarray],
        reporter: Reporter,
        isolate: bool = False,
        until: set[int] | None = None,
        phase: str = "comparing",
        recheck_above: float | None = None,
    ):
        """``until``: the drift check's mode: keep only relative errors, stop once these rows were
        seen. ``recheck_above``: rows of ``until`` with an error beyond it are also measured against
        Keras in float64."""
        self.graph, self.plan, self.arrays = graph, plan, arrays
        self.isolate, self.until = isolate, None if until is None else set(until)
        self.errors_only = until is not None
        self.recheck_above = recheck_above
        self.reporter, self.phase = reporter, phase
        wanted = {id(plan.rows[i].node.outputs[plan.rows[i].output_index]) for i in plan.wanted()}
        recheck = {id(plan.rows[i].node) for i in self.until or ()} if recheck_above is not None else set()
        self.keras = keras_side.KerasStepper(graph, arrays, wanted, keep_inputs_of=recheck)
        self.observed: dict[int, _Observed] = {}
        self.layers: list[LayerResult] = []
        self.error: str | None = None
        self.seconds = {"keras": 0.0, "torch": 0.0, "statistics": 0.0}
        self._stats_seconds = 0.0
        self._last: str | None = None

    def score(self) -> int:
        return len(self.observed) + (10**9 if self.error is None else 0)

    def execute(self) -> None:
        plan = self.plan
        inputs = plan.torch_inputs(self.arrays)
        wanted = plan.wanted()
        if self.until is not None:
            wanted = {index for index in wanted if index <= max(self.until)}
        self.reporter.start(self.phase, len(wanted))
        started = time.perf_counter()
        try:
            plan.run(self.observe, inputs)
        except _Enough:
            pass
        except keras_side.KerasFailure as failure:  # a Keras error is not the port's fault: raise it
            raise failure.error from failure.error.__cause__
        except Exception as error:  # the PyTorch forward raised: keep what was compared so far
            where = f" (after Keras layer {self._last!r})" if self._last else ""
            self.error = f"{type(error).__name__}: {error}{where}"
        if plan.device.type == "cuda":
            torch.cuda.synchronize(plan.device)
        forward = time.perf_counter() - started
        keras_during_forward = self.keras.seconds
        if not self.errors_only:
            with torch.no_grad():  # (the torch backend of Keras would record gradients otherwise)
                self.keras.finish()  # the layers no tap asked for: their shapes complete the table
        self.seconds = {
            "keras": self.keras.seconds,
            "torch": max(0.0, forward - keras_during_forward - self._stats_seconds),
            "statistics": self._stats_seconds,
        }
        if not self.errors_only:
            self.layers = [self._result(row) for row in plan.rows]

    def _result(self, row: Row) -> LayerResult:
        node = row.node
        value = node.outputs[row.output_index]
        result = LayerResult(
            index=row.index,
            keras_layer=node.qualified_name,
            keras_class=node.class_name,
            keras_shape=self.keras.shapes.get(id(value), tuple(value.shape)),
            torch_module=row.torch_module,
            keras_params=keras_params(node) if row.output_index == 0 else 0,
            torch_params=row.torch_params,
            note=row.note,
            is_output=any(value is output for output in self.graph.outputs),
            converter=row.converter,
            random=row.random,
            output=row.output,
        )
        found = self.observed.get(row.index)
        if found is not None:
            result.compared = True
            result.torch_shape = found.torch_shape
            result.numbers, result.histogram, result.preview = found.numbers, found.histogram, found.preview
            result.note = found.note
        elif row.index in self.plan.wanted():
            result.note = (
                "not reached: the PyTorch forward stopped before"
                if self.error
                else self.plan.missing(row.index)
            )
        result.note = "; ".join(filter(None, (result.note, row.params_note)))
        return result

    def _beyond_recheck(self, row: Row, rel_diff: float) -> bool:
        return self.recheck_above is not None and not row.random and not rel_diff <= self.recheck_above

    def _against_float64(self, row: Row, keras_tensor, aligned) -> tuple[float, float] | None:
        """(Keras float32, the port) relative errors against the layer rerun in float64, or None."""
        reference = self.keras.float64_output(row.node, row.output_index)
        if reference is None:
            return None
        cpu = torch.device("cpu")  # in float64, which MPS lacks
        reference = keras_side.to_torch(reference, cpu).double()
        keras32, port = keras_tensor.to(cpu).double(), aligned.to(cpu).double()
        return stats.rel_diff(reference, keras32), stats.rel_diff(reference, port)

    def observe(self, index: int, tensor):
        """The tap: compare one PyTorch output with Keras's; with ``isolate``, what replaces it."""
        row = self.plan.rows[index]
        try:
            keras_value = self.keras.output(row.node, row.output_index)
        except RuntimeError as error:
            raise keras_side.KerasFailure(error) from error
        self._last = row.node.qualified_name
        started = time.perf_counter()
        keras_shape = tuple(int(d) for d in keras_value.shape)
        torch_shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else None
        observed = _Observed(torch_shape)
        replacement = None
        try:
            aligned = self.plan.align(index, tensor, keras_shape, self.keras.shapes)
            if aligned is None or tuple(aligned.shape) != keras_shape:
                observed.note = (
                    f"shape mismatch: PyTorch {torch_shape} does not line up with Keras {keras_shape}"
                    if torch_shape is not None
                    else f"the PyTorch output is a {type(tensor).__name__}, not a tensor"
                )
            else:
                keras_tensor = keras_side.to_torch(keras_value, aligned.device)
                with _single_thread_on_cpu(aligned.device):  # (the isolating copy too: 3x faster)
                    if self.errors_only:
                        observed.rel_diff = stats.rel_diff(keras_tensor, aligned)
                        if self._beyond_recheck(row, observed.rel_diff):
                            observed.float64 = self._against_float64(row, keras_tensor, aligned)
                    else:
                        observed.numbers, observed.histogram, observed.preview = stats.layer(
                            keras_tensor, aligned
                        )
                    observed.note = self.plan.note(index)
                    if row.random:
                        observed.note = "; ".join(filter(None, (_RANDOM_NOTE, observed.note)))
                    if self.isolate or row.random:
                        replacement, why = self.plan.force(index, tensor, keras_tensor)
                        if why:
                            observed.note = "; ".join(filter(None, (observed.note, why)))
                del keras_tensor, aligned
        finally:
            del keras_value
            self.keras.forget_inputs(row.node)
            self.keras.release(row.node, row.output_index)
            self._stats_seconds += time.perf_counter() - started
        self.observed[index] = observed
        self.reporter.step()
        if self.until is not None:
            self.until.discard(index)
            if not self.until:
                raise _Enough
        return replacement
