"""What the training loop keeps track of besides the model: the best validation loss so far (for
`best/` and early stopping), the metrics log, and the stop signals."""

from __future__ import annotations

import json
import math
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Best:
    """The lowest validation loss so far, and how many evaluations since have not beaten it (what
    `train.patience` counts). Both travel in `last`'s trainer_state.json, so a resumed run goes on counting."""

    val_loss: float = math.inf
    stale: int = 0

    def update(self, val_loss: float) -> bool:
        """Count one evaluation; True when it is a new best."""
        if val_loss < self.val_loss:
            self.val_loss, self.stale = val_loss, 0
            return True
        self.stale += 1
        return False

    def out_of_patience(self, patience: int) -> str | None:
        """Why a run with `train.patience` should stop now (early stopping), or None to go on."""
        if not patience or self.stale < patience:
            return None
        no_better = f"brought no val_loss below {self.val_loss:.4f}"
        return f"the last {self.stale} evaluations {no_better} (train.patience = {patience})"

    def record(self) -> dict[str, float | int]:
        return {"best_val_loss": self.val_loss, "evaluations_since_best": self.stale}


class MetricsLog:
    """JSON lines, one object per record, flushed as written."""

    def __init__(self, path: Path) -> None:
        if path.exists():  # a run killed mid-write may have left half a line: drop it before appending
            text = path.read_text(encoding="utf-8")
            if text and not text.endswith("\n"):
                path.write_text(text[: text.rfind("\n") + 1], encoding="utf-8")
        self.file = open(path, "a", encoding="utf-8")

    def write(self, **record: Any) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class StopSignals:
    """SIGINT/SIGTERM ask the loop to save and stop after the current step; a second signal acts at
    once (the default handlers are back in place after the first)."""

    def __enter__(self) -> "StopSignals":
        self.received: int | None = None
        self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, frame) -> None:
        self.received = signum
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)
