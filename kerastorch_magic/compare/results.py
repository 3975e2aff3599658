"""What a comparison keeps: per-layer results, the run's facts, statuses and the verdict.

Statuses (:data:`Status`) of one Keras layer output, at a tolerance on the relative error
``max|Δ| / max|Keras|`` (the bands of :func:`kerastorch_magic.stats.status`):

* ``ok`` / ``warn``: within tolerance (``warn`` above a tenth of it);
* ``fail``: beyond tolerance, NaN/inf, or shapes that do not line up, and not explained by drift;
* ``drift``: beyond tolerance end to end, but this layer and every layer it reads from are within
  tolerance when fed Keras's own inputs (the drift check of :mod:`.run`; measured against the
  layer recomputed in float64 where Keras's own float32 output is the rounded one): float32
  round-off grown through the layers before, not a conversion error;
* ``random``: random at inference (a traced layer drawing ``keras.random``, e.g. a VAE's
  ``Sampling``): the two sides draw different values, so its numbers say nothing about the port
  and the next layers are fed Keras's own output (their rows stay exact);
* ``skip``: nothing to compare it with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import pandas as pd

from .. import stats

Status = Literal["ok", "warn", "drift", "fail", "random", "skip"]
STATUSES: tuple[Status, ...] = ("ok", "warn", "drift", "fail", "random", "skip")


@dataclass
class DriftCheck:
    """Evidence from the drift check: every layer re-run on Keras's own inputs.

    ``isolated`` holds, per row, the relative error of that layer fed Keras's inputs (None where
    the check did not compare it: no counterpart, or past the last row failing at the tolerance
    the comparison ran with, where the check stops); ``upstream`` the rows each row reads from
    directly (through layers without a row, such as the model inputs, to the nearest rows).
    ``float64`` holds, for rows still beyond tolerance on Keras's inputs, the relative errors of
    Keras's float32 output and of the port's against that Keras layer recomputed in float64
    (where it could be): a port within tolerance of float64 Keras is right, Keras's float32
    result the rounded one.
    """

    isolated: list[float | None]
    upstream: list[tuple[int, ...]]
    seconds: float
    float64: dict[int, tuple[float, float]] = field(default_factory=dict)
    _tainted: dict[float, list[bool]] = field(default_factory=dict, repr=False)

    def own_error(self, index: int) -> float | None:
        """The row's own error: against Keras's float32 output, or float64 Keras's where smaller."""
        own = self.isolated[index]
        if own is not None and index in self.float64:
            port = self.float64[index][1]
            return port if own != own else min(own, port)  # (NaN: float64 decides)
        return own

    def tainted(self, tolerance: float) -> list[bool]:
        """Per row: it, or a row it depends on, is beyond ``tolerance`` on Keras's own inputs."""
        if tolerance not in self._tainted:
            marks: list[bool] = []
            for index, upstream in enumerate(self.upstream):
                own = self.own_error(index)
                wrong = own is not None and not own <= tolerance  # NaN and inf are wrong too
                marks.append(wrong or any(marks[j] for j in upstream))
            self._tainted = {tolerance: marks}  # one tolerance at a time is all callers use
        return self._tainted[tolerance]

    def float64_note(self, index: int) -> str:
        keras32, port = self.float64[index]
        return (
            f"Keras's own float32 output is off by {keras32:.2g} from this layer recomputed in "
            f"float64, which the port matches (relative error {port:.2g})"
        )

    def max_isolated(self) -> float:
        """The largest own error (:meth:`own_error`) of any row the check compared."""
        values = [value for value in map(self.own_error, range(len(self.isolated))) if value is not None]
        return max(values) if values else math.nan


@dataclass
class RunInfo:
    """Facts about one comparison run (what the header of the table and the widget show)."""

    model_name: str
    torch_name: str
    kind: Literal["conversion", "module"]
    torch_device: str
    keras_device: str
    input: str  # what was fed, e.g. "random normal data (seed 0), batch 2: input (2, 8) float32"
    input_format: str
    seconds: dict[str, float]  # keras, torch, statistics, total (+ drift_check when it ran)
    error: str | None = None  # why the PyTorch forward stopped early
    code: str | None = None  # the generated source (conversions only)
    isolate: bool = False  # every layer fed Keras's inputs throughout
    tf32_disabled: bool = False  # TF32 was on and was turned off while comparing
    drift: DriftCheck | None = None  # the drift check's evidence, when it ran


@dataclass
class LayerResult:
    """One Keras layer output and its PyTorch counterpart."""

    index: int
    keras_layer: str
    keras_class: str
    keras_shape: tuple
    torch_module: str
    keras_params: int
    torch_params: int | None
    torch_shape: tuple | None = None
    compared: bool = False
    numbers: stats.Numbers | None = None
    histogram: stats.Histogram | None = None
    preview: stats.Preview | None = None
    note: str = ""
    is_output: bool = False
    converter: str = ""  # the converter that produced this layer's code ("" for your own module)
    random: bool = False  # random at inference: never compared by value (status ``random``)
    output: str = ""  # which of a layer's several outputs ("state h", "output 2 of 3"; "" if one)
    drift: DriftCheck | None = field(default=None, repr=False)  # shared by the rows of one run

    @property
    def max_abs_diff(self) -> float:
        return self.numbers.max_abs_diff if self.numbers else math.nan

    @property
    def rel_diff(self) -> float:
        if self.numbers:
            return self.numbers.rel_diff
        return math.inf if self.compared else math.nan

    @property
    def cosine(self) -> float:
        return self.numbers.cosine if self.numbers else math.nan

    @property
    def isolated_rel_diff(self) -> float:
        """Relative error of this layer fed Keras's inputs (NaN when the drift check did not run)."""
        value = self.drift.isolated[self.index] if self.drift is not None else None
        return math.nan if value is None else value

    def status(self, tolerance: float) -> Status:
        if self.compared and self.numbers is None:  # compared, but the shapes did not match
            return "fail"
        if self.random and self.compared:
            return "random"
        status = stats.status(self.rel_diff, tolerance, self.compared)
        drift = self.drift
        if status == "fail" and drift is not None and drift.isolated[self.index] is not None:
            if not drift.tainted(tolerance)[self.index]:
                return "drift"
        return status


def _count(what: str, number: int) -> str:
    return f"{number:,} {what}" + ("" if number == 1 else "s")


class Comparison:
    """The outcome of :func:`~kerastorch_magic.compare`: per-layer results, a verdict, tables, a widget.

    Attributes:
        layers: one :class:`LayerResult` per Keras layer output, in forward order.
        tolerance: the relative error above which a layer fails (settable: statuses follow it).
        info: the :class:`RunInfo` (devices, input, timings, the forward's error, drift evidence).

    Example:
        >>> result = k2t.compare(model, k2t.convert(model))  # doctest: +SKIP
        >>> result.ok, result.first_failure, result.to_dataframe()  # doctest: +SKIP
    """

    def __init__(self, layers: list[LayerResult], tolerance: float, info: RunInfo):
        self.layers = layers
        self.tolerance = float(tolerance)
        self.info = info
        self._widget = None

    # -- verdicts ---------------------------------------------------------------------------------
    @property
    def error(self) -> str | None:
        """Why the PyTorch forward pass stopped early (None when it ran through)."""
        return self.info.error

    def status(self, index: int) -> Status:
        return self.layers[index].status(self.tolerance)

    def statuses(self) -> list[Status]:
        return [layer.status(self.tolerance) for layer in self.layers]

    @property
    def compared(self) -> list[LayerResult]:
        return [layer for layer in self.layers if layer.compared]

    @property
    def ok(self) -> bool:
        """No conversion error: every compared layer within tolerance, drifting only through
        float32 round-off or random at inference, at least one compared, and no forward error."""
        return self.error is None and bool(self.compared) and "fail" not in self.statuses()

    @property
    def failures(self) -> list[LayerResult]:
        return [layer for layer in self.layers if layer.status(self.tolerance) == "fail"]

    @property
    def drifting(self) -> list[LayerResult]:
        """Layers beyond tolerance end to end only through float32 round-off (status ``drift``)."""
        return [layer for layer in self.layers if layer.status(self.tolerance) == "drift"]

    @property
    def first_failure(self) -> LayerResult | None:
        """The first layer (in forward order) that fails: where the two models part."""
        failures = self.failures
        return failures[0] if failures else None

    @property
    def max_rel_diff(self) -> float:
        """The largest relative error among compared layers (random ones left out)."""
        values = [layer.rel_diff for layer in self.compared if not layer.random]
        return max(values) if values else math.nan

    # -- tables -----------------------------------------------------------------------------------
    def to_dataframe(self) -> pd.DataFrame:
        """One row per Keras layer output, in forward order."""
        records = []
        for layer in self.layers:
            numbers = layer.numbers
            records.append(
                {
                    "index": layer.index,
                    "keras_layer": layer.keras_layer,
                    "keras_class": layer.keras_class,
                    "keras_shape": layer.keras_shape,
                    "torch_module": layer.torch_module,
                    "torch_shape": layer.torch_shape,
                    "keras_params": layer.keras_params,
                    "torch_params": layer.torch_params,
                    "max_abs_diff": layer.max_abs_diff,
                    "rel_diff": layer.rel_diff,
                    "cosine": layer.cosine,
                    "status": layer.status(self.tolerance),
                    "isolated_rel_diff": layer.isolated_rel_diff,
                    "converter": layer.converter,
                    "output": layer.output,  # which of several outputs ("state h"), "" for one
                    "keras_mean": numbers.keras_mean if numbers else math.nan,
                    "keras_std": numbers.keras_std if numbers else math.nan,
                    "torch_mean": numbers.torch_mean if numbers else math.nan,
                    "torch_std": numbers.torch_std if numbers else math.nan,
                    "note": layer.note,
                }
            )
        frame = pd.DataFrame.from_records(records)
        if len(frame):
            frame["torch_params"] = frame["torch_params"].astype("Int64")
        return frame.set_index("index", drop=False) if len(frame) else frame

    def summary(self) -> str:
        """One line: the verdict."""
        total, compared = len(self.layers), len(self.compared)
        if self.error:
            return f"PyTorch forward failed: {self.error}"
        if not compared:
            return f"nothing compared: none of the {total} Keras layer outputs had a PyTorch counterpart"
        first = self.first_failure
        if first is not None:
            text = (
                f"{len(self.failures)} of {compared} layer outputs differ beyond {self.tolerance:g}; "
                f"first: {first.keras_layer!r} ({first.keras_class}), relative error {first.rel_diff:.3g}"
            )
            if self.info.drift is not None and not math.isnan(first.isolated_rel_diff):
                text += f" ({first.isolated_rel_diff:.3g} fed Keras's own inputs)"
            return text
        drifting = self.drifting
        if drifting:
            return self._drift_summary(drifting)
        warned = sum(layer.status(self.tolerance) == "warn" for layer in self.layers)
        random = [layer.keras_layer for layer in self.layers if layer.status(self.tolerance) == "random"]
        exact = compared - len(random)
        text = f"all {exact} compared layer outputs match within {self.tolerance:g}"
        text += f" (max relative error {self.max_rel_diff:.2g})"
        if warned:
            text += f"; {warned} close to the tolerance"
        overflowing = sum(bool(layer.numbers and layer.numbers.nonfinite_both) for layer in self.layers)
        if overflowing:
            text += (
                f"; NaN/inf in {_count('layer output', overflowing)}, on both sides at the same "
                "places (Keras overflows too; the error is measured on the finite values)"
            )
        if random:
            names = ", ".join(repr(name) for name in dict.fromkeys(random))
            text += f"; random at inference: {names} (the next layers fed Keras's draw)"
        return text

    def _drift_summary(self, drifting: list[LayerResult]) -> str:
        drift = self.info.drift
        isolated = drift.max_isolated()
        worst = max(drifting, key=lambda layer: layer.rel_diff)
        at = "at the output" if worst.is_output else f"at {worst.keras_layer!r}"
        rounded_by_keras = [
            layer
            for layer in self.layers
            if layer.index in drift.float64 and not drift.isolated[layer.index] <= self.tolerance
        ]
        whose = ""
        if rounded_by_keras:
            names = ", ".join(repr(layer.keras_layer) for layer in rounded_by_keras)
            keras32 = max(drift.float64[layer.index][0] for layer in rounded_by_keras)
            isolated_text = f"{isolated:.2g}; {names} against Keras in float64"
            whose = f" (Keras's own, up to {keras32:.2g} in {names})"
        else:
            isolated_text = f"{isolated:.2g}"
        return (
            f"no conversion error: every compared layer matches within {self.tolerance:g} when fed "
            f"Keras's own inputs (max relative error {isolated_text}); end to end {len(drifting)} of "
            f"{len(self.compared)} layer outputs drift beyond it (up to {worst.rel_diff:.2g}, {at}): "
            f"float32 round-off{whose} amplified through {_count('layer', len(self.layers))}"
        )

    def __repr__(self) -> str:
        names = f"Keras {self.info.model_name!r} and {self.info.torch_name}"
        return f"<Comparison of {names}: {self.summary()}>"

    # -- display ----------------------------------------------------------------------------------
    def widget(self):
        """The interactive view (an anywidget), created once."""
        if self._widget is None:
            from ..widget import ComparisonWidget  # anywidget loads only when a widget is asked for

            self._widget = ComparisonWidget(self)
        return self._widget

    def to_html(self) -> str:
        """A static HTML table with small thumbnails (HTML exports, nbclient outputs)."""
        from ..widget.html import comparison_html

        return comparison_html(self)

    def _repr_mimebundle_(self, include=None, exclude=None):
        bundle = {"text/plain": repr(self), "text/html": self.to_html()}
        try:
            widget_bundle = self.widget()._repr_mimebundle_()
        except Exception:  # no widget support (plain Python): the static table still shows
            widget_bundle = None
        if isinstance(widget_bundle, tuple):
            widget_bundle = widget_bundle[0]
        if widget_bundle and "application/vnd.jupyter.widget-view+json" in widget_bundle:
            bundle["application/vnd.jupyter.widget-view+json"] = widget_bundle[
                "application/vnd.jupyter.widget-view+json"
            ]
        return bundle
