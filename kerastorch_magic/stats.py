"""Statistics and previews of one layer's two activations, computed on the torch device.

Everything here takes two torch tensors of the same shape in Keras's layout (the Keras activation
and the PyTorch one re-laid to match) and returns small results: a handful of floats (one device
synchronisation per layer), a histogram and downsampled previews. Only those small results move to
the CPU; the activations themselves are never copied there.

Status bands (the widget re-computes them client-side from ``rel_diff`` when its tolerance
control moves, with the same rule):

* ``ok``: ``rel_diff <= tolerance / 10`` (float round-off),
* ``warn``: ``tolerance / 10 < rel_diff <= tolerance`` (within tolerance, but close to it),
* ``fail``: ``rel_diff > tolerance``, or NaN/inf on either side, or shapes that do not match.

NaN/inf count as agreement only where both sides have them at the same positions with the same
values (Keras itself overflows: an untrained net's activations can exceed float32); the error is
then measured on the finite entries and :attr:`Numbers.nonfinite_both` says how many were set
aside. Anywhere else a non-finite value fails the layer.

A comparison turns ``fail`` into ``drift`` where its drift check found the layer and everything
upstream exact on Keras's own inputs (:mod:`kerastorch_magic.compare.results`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

WARN_FRACTION = 0.1  # rel_diff above tolerance * WARN_FRACTION (and within tolerance) warns
HIST_BINS = 40
HIST_SAMPLES = 1 << 16  # histograms count a strided subsample of at most this many values per side
PREVIEW_SIDE = 64  # image previews are downsampled so that neither side exceeds this
PREVIEW_CHANNELS = 4  # channels shown per image preview: the first ones, plus the worst
PREVIEW_LENGTH = 512  # values shown per vector/sequence preview
THUMB_SIDE = 16  # static-HTML thumbnails


def status(rel_diff: float | None, tolerance: float, compared: bool = True) -> str:
    """``ok``/``warn``/``fail`` for a compared layer, ``skip`` for one that was not compared."""
    if not compared:
        return "skip"
    if rel_diff is None or not math.isfinite(rel_diff) or rel_diff > tolerance:
        return "fail"
    if rel_diff > tolerance * WARN_FRACTION:
        return "warn"
    return "ok"


@dataclass
class Numbers:
    """Scalar statistics of one layer (all Python floats)."""

    max_abs_diff: float
    rel_diff: float
    cosine: float
    keras_absmax: float
    torch_absmax: float
    keras_mean: float
    keras_std: float
    torch_mean: float
    torch_std: float
    finite: bool
    nonfinite_both: int = 0  # NaN/inf entries equal on both sides, left out of the figures above


@dataclass
class Histogram:
    low: float
    high: float
    keras: list[int]
    torch: list[int]


@dataclass
class Preview:
    """Downsampled activations of the first sample.

    ``kind == "image"``: ``keras``/``torch`` are uint8 maps (K, h, w) quantised per channel with a
    shared ``[low[k], high[k]]`` range; ``diff`` is |Δ| quantised to ``[0, diff_high[k]]``. A
    sequence (N, T, C) is one such map of (features, time): time runs left to right.
    ``kind == "lines"``: ``keras``/``torch`` are float32 (K, L) series; ``diff`` is None.
    """

    kind: str
    keras: np.ndarray
    torch: np.ndarray
    diff: np.ndarray | None = None
    channels: list[int] = field(default_factory=list)
    low: list[float] = field(default_factory=list)
    high: list[float] = field(default_factory=list)
    diff_high: list[float] = field(default_factory=list)
    source_shape: tuple = ()  # the shape the preview was taken from (Keras layout, one sample)
    label: str = ""  # what the preview shows, e.g. "channels 0, 1, 2 and 17 (largest |Δ|)"

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.keras, self.torch, self.diff) if a is not None)


def _flat(tensor):
    import torch

    return tensor.detach().to(torch.float32).contiguous().reshape(-1)


def layer(keras, torch_t) -> tuple[Numbers, Histogram, Preview]:
    """Everything kept about one layer: numbers, histogram, previews (two synchronisations)."""
    k, t = _flat(keras), _flat(torch_t)
    values, bounds = _numbers(k, t)
    return values, histogram(k, t, bounds=bounds), preview(keras, torch_t)


def numbers(keras, torch_t) -> Numbers:
    """Max |Δ|, relative error (max|Δ| / max|keras|), cosine similarity, means and stds."""
    return _numbers(_flat(keras), _flat(torch_t))[0]


def rel_diff(keras, torch_t) -> float:
    """Only :func:`numbers`' relative error, by the same rule, from three reductions (drift check)."""
    import torch

    k, t = _finite_where_both_agree(_flat(keras), _flat(torch_t))[:2]
    if k.numel() == 0:
        return 0.0
    max_abs, kabs, tabs = torch.stack([(t - k).abs_().max(), k.abs().max(), t.abs().max()]).cpu().tolist()
    if not all(math.isfinite(v) for v in (max_abs, kabs, tabs)):
        return float("nan")
    scale = kabs if kabs > 0 else tabs
    return max_abs / scale if scale > 0 else 0.0


def _finite_where_both_agree(k, t):
    """``(k, t, count)``: the entries left once NaN/inf equal on both sides are set aside.

    Where the two sides disagree on any non-finite entry (position, sign of inf), both are
    returned whole, so the figures come out NaN and the layer fails.
    """
    import torch

    k_bad, t_bad = ~torch.isfinite(k), ~torch.isfinite(t)
    count = int(k_bad.sum())
    if count == 0 and not bool(t_bad.any()):
        return k, t, 0
    same_places = torch.equal(k_bad, t_bad)
    if not same_places or not torch.equal(k[k_bad].nan_to_num(nan=0.0), t[t_bad].nan_to_num(nan=0.0)):
        return k, t, 0
    return k[~k_bad], t[~t_bad], count


def _numbers(k, t) -> tuple[Numbers, tuple[float, float] | None]:
    import torch

    k, t, nonfinite_both = _finite_where_both_agree(k, t)
    if k.numel() == 0 and nonfinite_both:
        return Numbers(0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, True, nonfinite_both), None
    if k.numel() == 0:
        return Numbers(0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, True), None
    kstd, kmean = torch.std_mean(k, correction=0)
    tstd, tmean = torch.std_mean(t, correction=0)
    kmin, kmax = torch.aminmax(k)
    tmin, tmax = torch.aminmax(t)
    values = torch.stack(
        [
            (t - k).abs_().max(),
            torch.maximum(kmax, -kmin),
            torch.maximum(tmax, -tmin),
            torch.dot(k, t),
            torch.dot(k, k),
            torch.dot(t, t),
            kmean,
            kstd,
            tmean,
            tstd,
            torch.minimum(kmin, tmin),
            torch.maximum(kmax, tmax),
        ]
    )
    (max_abs, kabs, tabs, dot, kk, tt, kmean, kstd, tmean, tstd, low, high) = values.cpu().tolist()
    # NaN propagates through max and inf shows in the absolute maxima: no separate isfinite pass.
    finite = all(math.isfinite(v) for v in (max_abs, kabs, tabs))
    if not finite:
        max_abs = float("nan")
        rel = float("nan")
    else:
        scale = kabs if kabs > 0 else tabs
        rel = max_abs / scale if scale > 0 else 0.0
    if kk > 0 and tt > 0 and math.isfinite(dot):
        cosine = max(-1.0, min(1.0, dot / math.sqrt(kk * tt)))
    elif kk == 0 and tt == 0:
        cosine = 1.0
    else:
        cosine = 0.0 if finite else float("nan")
    result = Numbers(max_abs, rel, cosine, kabs, tabs, kmean, kstd, tmean, tstd, finite, nonfinite_both)
    return result, ((low, high) if finite else None)


def histogram(keras, torch_t, bins: int = HIST_BINS, bounds=None) -> Histogram:
    """Counts of both activations over common bins (computed on the device).

    Large activations are subsampled with a fixed stride (the same elements on both sides).
    """
    import torch

    k, t = _flat(keras), _flat(torch_t)
    if bounds is None:  # unknown or not finite: find the finite range first
        k, t = k[torch.isfinite(k)], t[torch.isfinite(t)]
        if k.numel() == 0 and t.numel() == 0:
            return Histogram(0.0, 1.0, [0] * bins, [0] * bins)
        ends = [torch.stack([x.min(), x.max()]) for x in (k, t) if x.numel()]
        found = torch.cat(ends).cpu().tolist()
        bounds = (min(found), max(found))
    low, high = bounds
    if high <= low:
        low, high = low - 0.5, high + 0.5
    step = max(1, -(-max(k.numel(), t.numel()) // HIST_SAMPLES))
    k, t = k[::step], t[::step]  # the shape of the distribution, at a bounded cost
    counts = torch.stack([_histc(x, bins, low, high) for x in (k, t)]).to(torch.int64).cpu().tolist()
    return Histogram(low, high, counts[0], counts[1])


def _histc(x, bins: int, low: float, high: float):
    import torch

    if x.numel() == 0:
        return torch.zeros(bins, device=x.device)
    try:
        return x.histc(bins=bins, min=low, max=high)
    except (RuntimeError, NotImplementedError):  # a backend without histc (some MPS builds)
        return x.cpu().histc(bins=bins, min=low, max=high).to(x.device)


def preview(
    keras,
    torch_t,
    side: int = PREVIEW_SIDE,
    channels: int = PREVIEW_CHANNELS,
    length: int = PREVIEW_LENGTH,
) -> Preview:
    """Small previews of the first sample (Keras layout: channels last).

    Rank ≥ 4 (N, [D,] H, W, C): the first ``channels - 1`` channels plus the one with the largest
    |Δ| as (h, w) maps (middle slice of extra spatial axes), area-downsampled (|Δ| max-pooled so
    that a single wrong pixel stays visible). Rank 3 (N, T, C), a sequence (recurrent layers,
    Conv1D, attention): one (features × time) map, like a spectrogram, each axis downsampled to
    at most ``side`` on its own (a 500-step, 4-feature sequence stays 4 rows high). Rank ≤ 2:
    the first ``length`` values as lines.
    """
    import torch

    k = keras.detach().to(torch.float32)
    t = torch_t.detach().to(torch.float32)
    if k.dim() >= 2:  # the first sample
        k, t = k[0], t[0]
    source = tuple(k.shape)
    if k.dim() >= 3:
        while k.dim() > 3:  # (D, H, W, C): the middle slice of the leading spatial axes
            k, t = k[k.shape[0] // 2], t[t.shape[0] // 2]
        k, t = k.permute(2, 0, 1), t.permute(2, 0, 1)  # (C, H, W)
        return _image_preview(k, t, side, channels, source, "channel")
    if k.dim() == 2:  # (T, C): features down, time across
        return _image_preview(k.T[None], t.T[None], side, 1, source, "sequence")
    flat_k, flat_t = k.reshape(1, -1), t.reshape(1, -1)
    count = flat_k.shape[1]
    label = f"{count} values" if count <= length else f"first {length} of {count} values"
    return _lines(flat_k[:, :length], flat_t[:, :length], source, label)


def _lines(k, t, source, label) -> Preview:
    # Copies: on the CPU ``.numpy()`` shares memory with the activation, which a comparison then
    # overwrites in place with Keras's values (isolation, random layers).
    return Preview(
        "lines",
        np.array(k.cpu().numpy(), dtype=np.float32),
        np.array(t.cpu().numpy(), dtype=np.float32),
        source_shape=source,
        label=label,
    )


def _image_preview(k, t, side, channels, source, what) -> Preview:
    """``k``, ``t``: (C, H, W) on the device."""
    import torch
    import torch.nn.functional as F

    count = k.shape[0]
    chosen = list(range(min(count, channels)))
    diff = (t - k).abs()
    diff = torch.nan_to_num(diff, nan=float("inf"))
    label = ""
    if count > channels and channels > 1:
        worst = int(diff.reshape(count, -1).amax(dim=1).argmax().item())
        if worst not in chosen and float(diff[worst].max().item()) > 0:
            chosen[-1] = worst
            label = f" (channel {worst}: largest |Δ|)"
    index = torch.tensor(chosen, device=k.device)
    k, t, diff = k.index_select(0, index), t.index_select(0, index), diff.index_select(0, index)
    height, width = k.shape[1:]
    if what == "sequence":  # each axis on its own: keep every feature row of a long sequence
        size = (min(height, side), min(width, side))
    elif max(height, width) > side:
        scale = side / max(height, width)
        size = (max(1, math.ceil(height * scale)), max(1, math.ceil(width * scale)))
    else:
        size = (height, width)
    if size != (height, width):
        k = F.adaptive_avg_pool2d(k[None], size)[0]
        t = F.adaptive_avg_pool2d(t[None], size)[0]
        diff = F.adaptive_max_pool2d(diff[None], size)[0]
    k, t = torch.nan_to_num(k), torch.nan_to_num(t)
    low = torch.minimum(k.amin(dim=(1, 2)), t.amin(dim=(1, 2)))
    high = torch.maximum(k.amax(dim=(1, 2)), t.amax(dim=(1, 2)))
    finite_diff = torch.nan_to_num(diff, posinf=0.0)
    diff_high = finite_diff.amax(dim=(1, 2))
    span = (high - low).clamp_min(1e-30)[:, None, None]
    qk = ((k - low[:, None, None]) / span * 255).round().clamp(0, 255).to(torch.uint8)
    qt = ((t - low[:, None, None]) / span * 255).round().clamp(0, 255).to(torch.uint8)
    qd = (finite_diff / diff_high.clamp_min(1e-30)[:, None, None] * 255).round().clamp(0, 255)
    qd = torch.where(torch.isinf(diff), torch.full_like(qd, 255), qd).to(torch.uint8)
    if what == "sequence":
        steps, features = source
        label = f"features × time: {features} feature{'s' if features > 1 else ''} over {steps} steps"
        if size != (height, width):
            label += f" (shown {size[0]} × {size[1]})"
    else:
        names = ", ".join(str(c) for c in chosen)
        label = f"channel{'s' if len(chosen) > 1 else ''} {names} of {count}{label}"
    return Preview(
        "image",
        qk.cpu().numpy(),
        qt.cpu().numpy(),
        qd.cpu().numpy(),
        channels=[] if what == "sequence" else chosen,  # a sequence map has no channel to name
        low=low.cpu().tolist(),
        high=high.cpu().tolist(),
        diff_high=diff_high.cpu().tolist(),
        source_shape=source,
        label=label,
    )


def thumbnail(array: np.ndarray, side: int = THUMB_SIDE) -> np.ndarray:
    """A (≤ side, ≤ side) float map in [0, 1] from a uint8 (h, w) preview map (block means).

    Each axis is reduced on its own, so a long sequence's few feature rows stay rows."""
    array = array.astype(np.float32) / 255.0
    height, width = array.shape
    step_h, step_w = max(1, math.ceil(height / side)), max(1, math.ceil(width / side))
    if step_h == step_w == 1:
        return array
    pad_h, pad_w = (-height) % step_h, (-width) % step_w
    padded = np.pad(array, ((0, pad_h), (0, pad_w)), mode="edge")
    return padded.reshape(padded.shape[0] // step_h, step_h, padded.shape[1] // step_w, step_w).mean(
        axis=(1, 3)
    )
