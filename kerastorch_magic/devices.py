"""Which torch device to run on: one rule for the magic's ``--device`` and ``compare(device=...)``.

``auto`` (or None) picks CUDA, then Apple MPS, then the CPU. A named device must exist here:
:func:`check` says why not in words a user can act on (the magic turns them into usage errors).
"""

from __future__ import annotations

import re

import torch

DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
AUTO = "auto"


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def best() -> str:
    """What ``auto`` means on this machine: ``"cuda"``, ``"mps"`` or ``"cpu"``."""
    if torch.cuda.is_available():
        return "cuda"
    return "mps" if _mps_available() else "cpu"


def check(device: str | None) -> str:
    """``device`` validated and ``auto`` resolved; ValueError naming the problem otherwise."""
    device = AUTO if device is None else str(device)
    if not DEVICE_RE.match(device):
        raise ValueError(f"{device!r}: unknown device; use auto, cpu, cuda, cuda:N or mps")
    if device == AUTO:
        return best()
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"{device}: torch sees no CUDA device here (torch.cuda.is_available() is False); "
                "use cpu or auto"
            )
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"{device}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    if device == "mps" and not _mps_available():
        raise ValueError(
            "mps: torch sees no Apple MPS device here (torch.backends.mps.is_available() is False); "
            "use cpu or auto"
        )
    return device


def resolve(device=None) -> torch.device:
    """A ``torch.device``: None/``"auto"`` picks the best one; a torch.device or name is taken as given."""
    if isinstance(device, torch.device):
        return device
    if device is None or str(device) == AUTO:
        return torch.device(best())
    return torch.device(device)


def of_module(module: torch.nn.Module, device=None) -> torch.device:
    """Where ``module`` runs: ``device`` if given, else where its tensors live, else :func:`best`."""
    if device is not None and str(device) != AUTO:
        return resolve(device)
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return resolve(None)


def describe(device) -> str:
    """``cuda:0 (NVIDIA H200)``, ``cpu``, ``mps``: for headers and reports."""
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device)
