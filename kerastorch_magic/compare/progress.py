"""Progress while comparing: layer k of N, elapsed and remaining time.

``compare(progress=...)`` takes None (the default: an updating line in the notebook's output area
when running in a Jupyter kernel, nothing elsewhere), True (that line, or on stderr outside a
kernel), False (nothing) or a callable receiving :class:`Progress` updates. The notebook line has a
``text/plain`` form, so exported notebooks keep its last state ("compared 669 layer outputs in
12.3 s") in their text form too.
"""

from __future__ import annotations

import html
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

INTERVAL = 0.25  # seconds between two display updates


@dataclass(frozen=True)
class Progress:
    """One update: ``done`` of ``total`` layer outputs of ``phase`` after ``elapsed`` seconds."""

    phase: str  # "comparing" (end to end) or "drift check" (each layer on Keras's inputs)
    done: int
    total: int
    elapsed: float  # since the comparison started (both phases)
    phase_elapsed: float
    finished: bool = False

    @property
    def remaining(self) -> float | None:
        """Seconds left in this phase, extrapolated from its pace (None before the first layer)."""
        if not self.done:
            return None
        return self.phase_elapsed / self.done * max(0, self.total - self.done)

    def text(self) -> str:
        if self.finished:
            return f"keras2torch: compared {self.total:,} layer outputs in {self.elapsed:.1f} s"
        what = "comparing" if self.phase == "comparing" else "checking for float32 drift:"
        text = f"keras2torch: {what} layer {self.done:,} of {self.total:,} · {self.elapsed:.1f} s elapsed"
        remaining = self.remaining
        if remaining is not None:
            text += f", ~{remaining:.0f} s left"
        return text


Callback = Callable[[Progress], None]


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class _NotebookLine:
    """One display in the output area, updated in place (``display_id``)."""

    def __init__(self):
        self.handle = None

    def __call__(self, update: Progress) -> None:
        from IPython.display import display

        fraction = update.done / update.total if update.total else 1.0
        bar = (
            ""
            if update.finished
            else f'<progress value="{fraction:.3f}" max="1" style="width:12em"></progress> '
        )
        bundle = {
            "text/plain": update.text(),
            "text/html": f'<div class="k2t-progress">{bar}{html.escape(update.text())}</div>',
        }
        if self.handle is None:
            self.handle = display(bundle, raw=True, display_id=True)
        else:
            self.handle.update(bundle, raw=True)


def _stderr_line(update: Progress) -> None:
    sys.stderr.write("\r" + update.text() + ("\n" if update.finished else ""))
    sys.stderr.flush()


def callback(progress) -> Callback | None:
    """What ``compare(progress=...)`` reports to (None: nothing)."""
    if progress is False:
        return None
    if callable(progress):
        return progress
    if progress is None:
        return _NotebookLine() if _in_kernel() else None
    if progress is True:
        return _NotebookLine() if _in_kernel() else _stderr_line
    raise TypeError(f"progress is None, True, False or a callable, not {type(progress).__name__}")


class Reporter:
    """Counts compared layer outputs and reports at most every :data:`INTERVAL` seconds."""

    def __init__(self, report: Callback | None):
        self.report = report
        self.started = time.perf_counter()
        self.phase, self.total, self.done = "comparing", 0, 0
        self.phase_started = self.started
        self._last = -INTERVAL

    def start(self, phase: str, total: int) -> None:
        self.phase, self.total, self.done = phase, total, 0
        self.phase_started = time.perf_counter()
        self._send(force=True)

    def step(self) -> None:
        self.done += 1
        self._send(force=self.done == self.total)

    def finish(self, compared: int) -> None:
        """The last line: how many layer outputs were compared, in how long."""
        if self.report is not None:
            now = time.perf_counter()
            self.report(Progress(self.phase, compared, compared, now - self.started, 0.0, finished=True))

    def _send(self, force: bool) -> None:
        if self.report is None:
            return
        now = time.perf_counter()
        if force or now - self._last >= INTERVAL:
            self._last = now
            update = Progress(self.phase, self.done, self.total, now - self.started, now - self.phase_started)
            self.report(update)
