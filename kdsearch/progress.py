"""Step progress for long training: in place on a terminal, every quarter epoch in logs."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class StepProgress:
    """Callable as ``progress(epoch, step_in_epoch, steps_in_epoch)`` by the trainer."""

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.start = time.perf_counter()
        self.last_quarter = -1

    def __call__(self, epoch: int, step: int, total: int) -> None:
        if step == 1:
            self.start, self.last_quarter = time.perf_counter(), 0
        rate = step / max(1e-9, time.perf_counter() - self.start)
        eta = (total - step) / max(rate, 1e-9)
        text = f"  {self.label} epoch {epoch}: step {step}/{total} ({rate:.1f} steps/s, ~{eta:.0f}s left)"
        if self.tty:
            end = "\n" if step == total else ""
            self.stream.write("\r" + text + " " * 4 + end)
            self.stream.flush()
            return
        quarter = 4 * step // total
        if quarter > self.last_quarter and step < total:
            self.last_quarter = quarter
            print(text, file=self.stream, flush=True)
