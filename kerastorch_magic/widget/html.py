"""The static ``text/html`` form of a comparison: for HTML exports, nbclient runs, GitHub previews.

A verdict line, the devices/input/timing line and the per-layer table with small thumbnails
(Keras activation and |Δ| of the first channel as inline PNGs; vector outputs as inline SVG lines).
Everything is escaped: layer names are untrusted text.
"""

from __future__ import annotations

import base64
import html
import math
import struct
import zlib

import numpy as np

from .. import stats

THUMB_ROWS_ALL = 300  # up to this many rows, every row gets thumbnails
THUMB_ROWS_LIMIT = 60  # beyond, only the rows with issues (this many) and the outputs do

# Polynomial fits of matplotlib's viridis and magma (Matt Zucker's, public domain), t in [0, 1].
_VIRIDIS = np.array(
    [
        [0.2777273272234177, 0.005407344544966578, 0.3340998053353061],
        [0.1050930431085774, 1.404613529898575, 1.384590162594685],
        [-0.3308618287255563, 0.214847559468213, 0.09509516302823659],
        [-4.634230498983486, -5.799100973351585, -19.33244095627987],
        [6.228269936347081, 14.17993336680509, 56.69055260068105],
        [4.776384997670288, -13.74514537774601, -65.35303263337234],
        [-5.435455855934631, 4.645852612178535, 26.3124352495832],
    ]
)
_MAGMA = np.array(
    [
        [-0.002136485053939582, -0.000749655052795221, -0.005386127855323933],
        [0.2516605407371642, 0.6775232436837668, 2.494026599312351],
        [8.353717279216625, -3.577719514958484, 0.3144679030132573],
        [-27.66873308576866, 14.26473078096533, -13.64921318813922],
        [52.17613981234068, -27.94360607168351, 12.94416944238394],
        [-50.76852536473588, 29.04658282127291, 4.23415299384598],
        [18.65570506591883, -11.48977351997711, -5.601961508734096],
    ]
)


def colormap(values: np.ndarray, coefficients: np.ndarray = _VIRIDIS) -> np.ndarray:
    """(h, w) floats in [0, 1] -> (h, w, 3) uint8 colours."""
    t = np.clip(np.nan_to_num(values.astype(np.float64)), 0.0, 1.0)[..., None]
    colour = np.zeros((*values.shape, 3))
    for row in coefficients[::-1]:
        colour = colour * t + row
    return (np.clip(colour, 0.0, 1.0) * 255).round().astype(np.uint8)


def png(rgb: np.ndarray) -> bytes:
    """A minimal PNG encoder (8-bit RGB, no filter) for (h, w, 3) uint8 arrays."""
    height, width, _ = rgb.shape
    raw = b"".join(b"\0" + rgb[y].tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def _img(rgb: np.ndarray, title: str) -> str:
    data = base64.b64encode(png(rgb)).decode("ascii")
    height, width, _ = rgb.shape
    scale = 24 / max(height, width)
    return (
        f'<img class="k2t-thumb" alt="{html.escape(title)}" title="{html.escape(title)}" '
        f'width="{max(6, round(width * scale))}" height="{max(6, round(height * scale))}" '
        f'src="data:image/png;base64,{data}">'
    )


def _sparkline(series: list[np.ndarray], colours: list[str], title: str) -> str:
    width, height = 48, 18
    finite = [s[np.isfinite(s)] for s in series]
    values = np.concatenate([s for s in finite if s.size]) if any(s.size for s in finite) else np.zeros(1)
    low, high = float(values.min()), float(values.max())
    span = high - low or 1.0
    lines = []
    for values_, colour, dash in zip(series, colours, ("", ' stroke-dasharray="2 1"')):
        count = len(values_)
        if count == 0:
            continue
        step = width / max(1, count - 1)
        points = " ".join(
            f"{i * step:.1f},{height - 1 - (float(v) - low) / span * (height - 2):.1f}"
            for i, v in enumerate(np.nan_to_num(values_))
        )
        lines.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1"{dash} points="{points}"/>')
    return (
        f'<svg class="k2t-thumb" width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
        f"<title>{html.escape(title)}</title>{''.join(lines)}</svg>"
    )


def thumbnails(layer, tolerance: float) -> tuple[str, str]:
    """HTML of the (Keras, |Δ|) thumbnails of one layer ("" when it has no preview)."""
    preview = layer.preview
    if preview is None:
        return "", ""
    if preview.kind == "image":
        keras = colormap(stats.thumbnail(preview.keras[0]))
        diff = stats.thumbnail(preview.diff[0]) * (preview.diff_high[0] if preview.diff_high else 0.0)
        scale = max(layer.max_abs_diff if math.isfinite(layer.max_abs_diff) else 0.0, 0.0)
        scale = max(scale, tolerance * (layer.numbers.keras_absmax if layer.numbers else 0.0)) or 1.0
        # An image's first shown channel, or a sequence's (features × time) map.
        what = f"channel {preview.channels[0]}" if preview.channels else "features × time"
        return (
            _img(keras, f"Keras, {what}"),
            _img(colormap(diff / scale, _MAGMA), f"|Δ|, {what} (bright: the largest error)"),
        )
    keras, torch = preview.keras[0][:64], preview.torch[0][:64]
    diff = np.abs(torch - keras)
    return (
        _sparkline([keras, torch], ["#1f6feb", "#e8590c"], "Keras (blue) and PyTorch (orange)"),
        _sparkline([diff], ["#cf222e"], "|Δ|"),
    )


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    if value == 0:
        return "0"
    return f"{value:.{digits}e}" if abs(value) < 1e-2 or abs(value) >= 1e4 else f"{value:.{digits + 2}g}"


def _shape(shape) -> str:
    if shape is None:
        return "—"
    return "×".join("N" if d is None else str(d) for d in shape) or "scalar"


# Exports embed JupyterLab's stylesheet, whose ``.jp-RenderedHTMLCommon table`` is
# ``table-layout: fixed`` (equal columns: long names ran over their neighbours) and whose cells are
# right-aligned with 0.5em padding. The selectors below out-rank those: the table sizes its columns
# to their content, long names are clipped with an ellipsis (full text in the tooltip), and the
# wrapper scrolls sideways when the table is wider than the page.
_CSS = """
<style>
.k2t-static{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;font-size:12px;
  color:var(--jp-ui-font-color0,#1f2328);max-width:100%}
.k2t-static .k2t-s-verdict{font-size:15px;font-weight:600;padding:6px 10px;border-radius:6px;margin:2px 0 6px}
.k2t-static .k2t-s-ok{background:#dafbe1;color:#116329}
.k2t-static .k2t-s-drift{background:#ddf4ff;color:#0550ae}
.k2t-static .k2t-s-fail{background:#ffebe9;color:#a40e26}
.k2t-static .k2t-s-meta{color:var(--jp-ui-font-color2,#59636e);margin:0 0 6px}
.k2t-static .k2t-s-wrap{max-height:460px;overflow:auto;border:1px solid var(--jp-border-color2,#d1d9e0);
  border-radius:6px}
.k2t-static table.k2t-s-table{table-layout:auto;border-collapse:collapse;width:max-content;min-width:100%;
  margin:0;font-variant-numeric:tabular-nums;font-size:12px}
.k2t-static table.k2t-s-table th,.k2t-static table.k2t-s-table td{font-size:12px;text-align:left;
  white-space:nowrap;max-width:none;line-height:1.35;vertical-align:middle}
.k2t-static table.k2t-s-table th{position:sticky;top:0;background:var(--jp-layout-color2,#f6f8fa);
  font-weight:600;padding:4px 6px;z-index:1;border-bottom:1px solid var(--jp-border-color2,#d1d9e0)}
.k2t-static table.k2t-s-table td{padding:2px 6px;border-bottom:1px solid var(--jp-border-color3,#eef1f4)}
.k2t-static table.k2t-s-table .k2t-s-num{text-align:right}
.k2t-static .k2t-s-clip{display:inline-block;max-width:18em;overflow:hidden;text-overflow:ellipsis;
  white-space:nowrap;vertical-align:bottom}
.k2t-static .k2t-thumb{image-rendering:pixelated;vertical-align:middle;border-radius:2px}
.k2t-static .k2t-badge{display:inline-block;padding:0 7px;border-radius:9px;font-weight:600;font-size:11px}
.k2t-static .k2t-b-ok{background:#dafbe1;color:#116329}
.k2t-static .k2t-b-warn{background:#fff8c5;color:#7d4e00}
.k2t-static .k2t-b-drift{background:#ddf4ff;color:#0550ae}
.k2t-static .k2t-b-fail{background:#ffebe9;color:#a40e26}
.k2t-static .k2t-b-random{background:#fbefff;color:#6639ba}
.k2t-static .k2t-b-skip{background:#eef1f4;color:#59636e}
.k2t-static tr.k2t-s-row-fail td{background:rgba(255,129,130,.08)}
.k2t-static .k2t-s-bad{color:#a40e26;font-weight:600}
.k2t-static .k2t-s-dim{color:var(--jp-ui-font-color2,#59636e)}
</style>
"""
_COLUMNS = (
    ("status", ""),
    ("#", "k2t-s-num"),
    ("Keras layer", ""),
    ("Keras shape", ""),
    ("PyTorch module", ""),
    ("PyTorch shape", ""),
    ("params", "k2t-s-num"),
    ("max |Δ|", "k2t-s-num"),
    ("rel. err", "k2t-s-num"),
    ("cosine", "k2t-s-num"),
    ("Keras", ""),
    ("|Δ|", ""),
)


def header_lines(comparison) -> tuple[str, str]:
    """(verdict, details) as plain text: shared by the static table and the widget's fallback."""
    info = comparison.info
    seconds = info.seconds
    verdict = ("✔ " if comparison.ok else "✖ ") + comparison.summary()
    parts = [
        f"Keras {info.model_name!r} vs PyTorch {info.torch_name}",
        f"PyTorch on {info.torch_device}",
        f"Keras on {info.keras_device}",
        f"input: {info.input}",
        "each layer fed Keras's inputs" if info.isolate else "end to end",
    ]
    if seconds:
        timing = (
            f"{seconds.get('total', 0):.2f} s (Keras {seconds.get('keras', 0):.2f}, PyTorch "
            f"{seconds.get('torch', 0):.2f}, statistics {seconds.get('statistics', 0):.2f}"
        )
        if "drift_check" in seconds:
            timing += f", drift check {seconds['drift_check']:.2f}"
        parts.append(timing + ")")
    return verdict, " · ".join(parts)


def _clip(text: str, inner: str | None = None, title: str | None = None) -> str:
    """``text`` (or the ``inner`` markup) clipped with an ellipsis past 18em; full text on hover."""
    title = text if title is None else title
    return (
        f'<span class="k2t-s-clip" title="{html.escape(title)}">'
        f"{inner if inner is not None else html.escape(text)}</span>"
    )


def _row(layer, status: str, thumbs: tuple[str, str]) -> str:
    params = f"{layer.keras_params:,}"
    if layer.torch_params is not None and layer.torch_params != layer.keras_params:
        params = f'<span class="k2t-s-bad">{params} &ne; {layer.torch_params:,}</span>'
    note = f' title="{html.escape(layer.note)}"' if layer.note else ""
    output = f" · {layer.output}" if layer.output else ""  # which of several outputs ("state h")
    name = f"{layer.keras_layer}{output} {layer.keras_class}"
    title = name + (f" · converter: {layer.converter}" if layer.converter else "")
    name_html = (
        f"{html.escape(layer.keras_layer + output)} "
        f'<span class="k2t-s-dim">{html.escape(layer.keras_class)}</span>'
    )
    module = _clip(layer.torch_module) if layer.torch_module else '<span class="k2t-s-dim">·</span>'
    cells = [
        f'<span class="k2t-badge k2t-b-{status}">{status}</span>',
        str(layer.index),
        _clip(name, name_html, title),
        _shape(layer.keras_shape),
        module,
        _shape(layer.torch_shape),
        params,
        _fmt(layer.max_abs_diff),
        _fmt(layer.rel_diff),
        _fmt(layer.cosine, 5) if layer.numbers else "—",
        *thumbs,
    ]
    body = "".join(
        f'<td class="{css}">{cell}</td>' if css else f"<td>{cell}</td>"
        for cell, (_, css) in zip(cells, _COLUMNS)
    )
    return f'<tr class="k2t-s-row-{status}"{note}>{body}</tr>'


def comparison_html(comparison) -> str:
    tolerance = comparison.tolerance
    layers = comparison.layers
    verdict, details = header_lines(comparison)
    thumbs_for = set(range(len(layers)))
    if len(layers) > THUMB_ROWS_ALL:
        issues = [layer.index for layer in layers if layer.status(tolerance) in ("fail", "warn")]
        thumbs_for = set(issues[:THUMB_ROWS_LIMIT]) | {layer.index for layer in layers if layer.is_output}
    rows = []
    for layer in layers:
        thumbs = thumbnails(layer, tolerance) if layer.index in thumbs_for else ("", "")
        rows.append(_row(layer, layer.status(tolerance), thumbs))
    head = "".join(f'<th class="{css}">{name}</th>' if css else f"<th>{name}</th>" for name, css in _COLUMNS)
    kind = "fail" if not comparison.ok else "drift" if comparison.drifting else "ok"
    text = (
        f'{_CSS}<div class="k2t-static">'
        f'<div class="k2t-s-verdict k2t-s-{kind}">{html.escape(verdict)}</div>'
        f'<div class="k2t-s-meta">{html.escape(details)} · tolerance {tolerance:g}</div>'
        f'<div class="k2t-s-wrap"><table class="k2t-s-table"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div></div>"
    )
    return text.encode("ascii", "xmlcharrefreplace").decode("ascii")  # safe in any export encoding
