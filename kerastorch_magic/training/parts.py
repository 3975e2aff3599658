"""The training snippet being assembled, shared by the optimizer and loss translations."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Parts:
    """The snippet being assembled: lines of ``configure_training`` and of ``train_step``."""

    imports: list[str] = field(default_factory=list)  # besides torch and nn (added when used)
    setup: list[str] = field(default_factory=list)
    loss_lines: list[str] = field(default_factory=list)  # in train_step, computing `loss`
    before_update: list[str] = field(default_factory=list)  # clipping, weight decay
    metrics: list[tuple[str, str, str | None]] = field(default_factory=list)  # name, expr, comment
    refusals: list[str] = field(default_factory=list)
    schedule: list[str] = field(default_factory=list)  # in configure_training, after the optimizer
    classes: list[str] = field(default_factory=list)  # top-level definitions before the functions

    @property
    def scheduler(self) -> bool:
        return bool(self.schedule)


def num(value) -> str:
    """A float as its shortest float32 text (Keras stores hyper-parameters as float32)."""
    return str(np.float32(value))
