"""The comparison widget: an anywidget whose ESM and CSS ship inside this package (no build step).

State (all synced traits):

* ``header``: verdict inputs (model names, devices, input description, timings, error, the
  Python verdict line, whether the drift check ran).
* ``rows``: one small dict per Keras layer output (names, shapes, parameters, statistics).
* ``tolerance``: the tolerance control's value; the front end re-colours statuses from
  ``rows[i]["rel"]`` with the same rule as :func:`kerastorch_magic.stats.status`.
* ``selected``: the row whose activations the detail panel shows.
* ``detail`` (bytes) + ``detail_meta``: binary previews (uint8 maps, float32 series) and, per row,
  their offsets, shapes, scales and histogram. Small comparisons ship every row's previews at once
  (the view then works without a kernel, e.g. from saved widget state); large ones ship the
  selected row only, and the kernel answers each new selection.
* ``code``: the generated PyTorch code (the copy button), empty for a user's own module.
"""

from __future__ import annotations

import math
from pathlib import Path

import anywidget
import traitlets

from ..compare.results import STATUSES
from ..stats import WARN_FRACTION

_STATIC = Path(__file__).parent / "static"
PRELOAD_BYTES = 3 * 1024 * 1024  # ship every row's previews when they fit in this


def _finite(value):
    return float(value) if value is not None and math.isfinite(value) else None


def _shape(shape) -> list | None:
    return None if shape is None else [None if d is None else int(d) for d in shape]


def _isolated(layer) -> bool:
    return layer.drift is not None and layer.drift.isolated[layer.index] is not None


def row_state(layer) -> dict:
    """The JSON-able summary of one :class:`~kerastorch_magic.compare.LayerResult`.

    ``conv`` names the converter that wrote the layer's code (a tooltip on its name)."""
    numbers = layer.numbers
    return {
        "i": layer.index,
        "layer": layer.keras_layer,
        "cls": layer.keras_class,
        "kshape": _shape(layer.keras_shape),
        "tmod": layer.torch_module,
        "tshape": _shape(layer.torch_shape),
        "kp": layer.keras_params,
        "tp": layer.torch_params,
        "cmp": layer.compared,
        # rel is null for a compared layer whose statistics are NaN/inf or whose shapes mismatch:
        # the front end shows those as failing at any tolerance.
        "rel": _finite(layer.rel_diff) if layer.compared else None,
        "mad": _finite(layer.max_abs_diff) if numbers else None,
        "cos": _finite(layer.cosine) if numbers else None,
        "kmax": _finite(numbers.keras_absmax) if numbers else None,
        "note": layer.note,
        "out": layer.is_output,
        "conv": layer.converter,
        # Which output of a layer with several ("state h"; "" for one), and whether the row is random
        # at inference (status "random" at any tolerance: its values are not compared).
        "outl": layer.output,
        "rnd": layer.random and layer.numbers is not None,
        # The drift check's evidence (null when it did not run or did not reach the row), and the
        # rows this one reads from: the front end re-derives ``drift`` from them per tolerance.
        "irel": _finite(layer.drift.isolated[layer.index]) if _isolated(layer) else None,
        "ifail": _isolated(layer) and _finite(layer.drift.isolated[layer.index]) is None,
        "up": list(layer.drift.upstream[layer.index]) if layer.drift is not None else [],
        "kind": layer.preview.kind if layer.preview is not None else None,
    }


def detail_payload(layers, indices) -> tuple[bytes, dict]:
    """Binary previews of the given rows and the JSON describing where each array lies."""
    chunks: list[bytes] = []
    offset = 0
    rows: dict[str, dict] = {}

    def put(array) -> int:
        nonlocal offset
        data = array.tobytes()
        start = offset
        padding = (-len(data)) % 4  # keep every array 4-byte aligned (Float32Array views)
        chunks.append(data + b"\0" * padding)
        offset += len(data) + padding
        return start

    for index in indices:
        layer = layers[index]
        preview, numbers, histogram = layer.preview, layer.numbers, layer.histogram
        if preview is None:
            continue
        entry = {
            "kind": preview.kind,
            "label": preview.label,
            "shape": list(preview.keras.shape),
            "dtype": "uint8" if preview.kind == "image" else "float32",
            "keras": put(preview.keras),
            "torch": put(preview.torch),
            "channels": preview.channels,
            "low": preview.low,
            "high": preview.high,
            "diff_high": preview.diff_high,
            "source": list(preview.source_shape),
        }
        if preview.diff is not None:
            entry["diff"] = put(preview.diff)
        if histogram is not None:
            entry["hist"] = {
                "low": histogram.low,
                "high": histogram.high,
                "keras": histogram.keras,
                "torch": histogram.torch,
            }
        if numbers is not None:
            keys = ("keras_mean", "keras_std", "torch_mean", "torch_std", "keras_absmax", "torch_absmax")
            entry["stats"] = {key: _finite(getattr(numbers, key)) for key in keys}
        rows[str(index)] = entry
    return b"".join(chunks), {"rows": rows}


class ComparisonWidget(anywidget.AnyWidget):
    """Interactive per-layer view of a :class:`~kerastorch_magic.compare.Comparison`."""

    _esm = _STATIC / "widget.js"
    _css = _STATIC / "widget.css"

    header = traitlets.Dict().tag(sync=True)
    rows = traitlets.List().tag(sync=True)
    tolerance = traitlets.Float(1e-4).tag(sync=True)
    warn_fraction = traitlets.Float(0.1).tag(sync=True)
    selected = traitlets.Int(-1).tag(sync=True)
    detail = traitlets.Bytes(b"").tag(sync=True)
    detail_meta = traitlets.Dict().tag(sync=True)
    code = traitlets.Unicode("").tag(sync=True)

    def __init__(self, comparison, **kwargs):

        self._comparison = comparison
        layers = comparison.layers
        info = comparison.info
        statuses = [layer.status(comparison.tolerance) for layer in layers]
        first = comparison.first_failure
        if first is not None:
            selected = first.index
        else:
            with_preview = [layer.index for layer in layers if layer.preview is not None]
            selected = with_preview[-1] if with_preview else -1
        total = sum(layer.preview.nbytes for layer in layers if layer.preview is not None)
        self._complete = total <= PRELOAD_BYTES
        indices = range(len(layers)) if self._complete else ([selected] if selected >= 0 else [])
        detail, meta = detail_payload(layers, indices)
        meta["complete"] = self._complete
        drift = info.drift
        header = {
            "model": info.model_name,
            "torch": info.torch_name,
            "kind": info.kind,
            "torch_device": info.torch_device,
            "keras_device": info.keras_device,
            "input": info.input,
            "input_format": info.input_format,
            "seconds": info.seconds,
            "error": info.error,
            "isolate": info.isolate,
            "tf32_disabled": info.tf32_disabled,
            "drift_checked": drift is not None,
            "counts": {status: statuses.count(status) for status in STATUSES},
            "summary": comparison.summary(),
        }
        super().__init__(
            header=header,
            rows=[row_state(layer) for layer in layers],
            tolerance=comparison.tolerance,
            warn_fraction=WARN_FRACTION,
            selected=selected,
            detail=detail,
            detail_meta=meta,
            code=info.code or "",
            **kwargs,
        )

    @traitlets.observe("selected")
    def _load_selected(self, change) -> None:
        index = change["new"]
        if self._complete or index < 0 or index >= len(self._comparison.layers):
            return
        if str(index) in self.detail_meta.get("rows", {}):
            return
        detail, meta = detail_payload(self._comparison.layers, [index])
        meta["complete"] = False
        with self.hold_sync():
            self.detail = detail
            self.detail_meta = meta
