"""Live terminal progress for a run: a rich progress bar fed by trainer callbacks (CLI, notebooks)."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from .callbacks import CalibrationProgress, Phase, Spectra, TrainerCallback, describe_recalibration


class RichProgress(TrainerCallback):
    """Progress bars for calibration and training (loss, lr, tokens/s), and a line per evaluation.

    Use as a context manager around preparation and training so the live display is closed on errors.
    """

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(bar_width=20), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("{task.fields[info]}"),
            console=self.console, transient=False,
        )
        self._calibration: TaskID | None = None
        self._training: TaskID | None = None

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def on_phase(self, name: Phase) -> None:
        if name == "calibrating" and self._calibration is None:
            self._calibration = self.progress.add_task("calibrating", total=None, info="")

    def on_calibration_step(self, progress: CalibrationProgress) -> None:
        if self._calibration is None:
            self._calibration = self.progress.add_task("calibrating", total=progress.total, info="")
        eta = progress.eta_s
        left = f"  {eta:.0f} s left" if eta is not None and progress.step < progress.total else ""
        self.progress.update(self._calibration, completed=progress.step, total=progress.total,
                             info=f"loss {progress.loss:.4f}{left}")

    def on_calibration_done(self, spectra: Spectra) -> None:
        kinds = ", ".join(f"{kind} ({len(s['out'])}×{len(s['in'])})" for kind, s in spectra.items())
        self.console.print(f"HOSVD bases ready for {kinds}")

    def on_train_begin(self, start_step: int, total_steps: int) -> None:
        self._training = self.progress.add_task("training", total=total_steps, completed=start_step, info="")

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        if self._training is None:
            return
        info = f"loss {metrics['loss']:.4f}  lr {metrics['lr']:.2e}  {metrics['tokens_per_s']:,.0f} tok/s"
        if "topk_energy_share" in metrics:
            info += f"  top-k energy {metrics['topk_energy_share']:.2f}"
        self.progress.update(self._training, completed=step, info=info)

    def on_recalibrated(self, step: int, stats: dict[str, Any]) -> None:
        self.console.print(describe_recalibration(step, stats))

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        shown = "  ".join(f"{k.removeprefix('eval_')} {v:.4f}" for k, v in metrics.items()
                          if k != "eval_tokens" and not math.isnan(v))
        self.console.print(f"eval @ step {step}: {shown}")


def metrics_table(before: dict[str, float] | None, after: dict[str, float] | None, title: str = "evaluation") -> Table:
    """Before/after eval metrics side by side."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    for key in (after or before or {}):
        if key == "eval_tokens":
            continue
        b = "" if before is None or key not in before else f"{before[key]:.4f}"
        a = "" if after is None or key not in after else f"{after[key]:.4f}"
        table.add_row(key.removeprefix("eval_"), b, a)
    return table
