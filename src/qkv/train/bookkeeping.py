"""What the training loop keeps track of besides the model: the best validation figure so far (for
`best/` and early stopping), the metrics log, and the stop signals."""

from __future__ import annotations

import json
import math
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Every validation metric but the loss is a rate of hits (BLEU, accuracy): higher is better.
LOWER_IS_BETTER = frozenset({"val_loss"})


@dataclass
class Best:
    """The best value so far of the metric that picks `best/` (`train.best_metric`), and how many
    evaluations since have not beaten it (what `train.patience` counts). Both travel in `last`'s
    trainer_state.json, so a resumed run goes on counting."""

    metric: str = "val_loss"
    value: float = field(default=math.nan)  # nan until the first evaluation: no value beats it then
    stale: int = 0

    def __post_init__(self) -> None:
        if math.isnan(self.value):  # the worst value, so the first finite one is a new best
            self.value = math.inf if self.lower_is_better else -math.inf

    @property
    def lower_is_better(self) -> bool:
        return self.metric in LOWER_IS_BETTER

    def update(self, metrics: dict[str, float]) -> bool:
        """Count one evaluation; True when it is a new best (a NaN never is)."""
        if self.metric not in metrics:  # the CLI checks the config first; this is for `fit` called from Python
            raise ValueError(f"train.best_metric {self.metric!r} is not among the evaluation's {', '.join(metrics)}")
        value = metrics[self.metric]
        if value < self.value if self.lower_is_better else value > self.value:
            self.value, self.stale = value, 0
            return True
        self.stale += 1
        return False

    def no_better(self) -> str:
        """'no lower val_loss than 2.0000': what the stale evaluations failed to bring."""
        return f"no {'lower' if self.lower_is_better else 'higher'} {self.metric} than {self.value:.4f}"

    def out_of_patience(self, patience: int) -> str | None:
        """Why a run with `train.patience` should stop now (early stopping), or None to go on."""
        if not patience or self.stale < patience:
            return None
        return f"the last {self.stale} evaluations brought {self.no_better()} (train.patience = {patience})"

    def record(self) -> dict[str, Any]:
        """What `last` keeps; `best_val_loss` (the key when the metric is the loss) as earlier runs wrote it."""
        return {"best_metric": self.metric, f"best_{self.metric}": self.value, "evaluations_since_best": self.stale}

    @staticmethod
    def metric_of(record: dict[str, Any]) -> str:
        """The metric a checkpoint's record counted (runs before `train.best_metric` counted val_loss)."""
        return record.get("best_metric", "val_loss")

    @classmethod
    def restored(cls, record: dict[str, Any], metric: str) -> Best:
        """The count a checkpoint's record holds, if it counted `metric` (runs before `train.best_metric`
        counted val_loss); otherwise a fresh count: the resumed run picks `best` by another metric now."""
        if cls.metric_of(record) != metric or f"best_{metric}" not in record:
            return cls(metric)
        return cls(metric, record[f"best_{metric}"], record.get("evaluations_since_best", 0))


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
