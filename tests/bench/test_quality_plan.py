"""The quality benchmark's plan, resumability and report aggregation (no training: a fake train_one)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

QUALITY = Path(__file__).resolve().parents[2] / "bench" / "quality"
sys.path.insert(0, str(QUALITY))

import quality_plan as qp  # noqa: E402
import report  # noqa: E402
import run as quality_run  # noqa: E402


def _opts(**kw):
    return qp.PlanOptions(profile=qp.PROFILES[kw.pop("profile", "quick")], **kw)


def test_quick_plan_size_and_budget() -> None:
    opts = _opts()
    sel = qp.selection_runs(opts)
    # 3 tasks x (5 methods + full once) x 2 learning rates, seed 0, paper setting
    assert len(sel) == 3 * 6 * 2
    assert {r.phase for r in sel} == {"select"} and {r.seed for r in sel} == {0}
    assert {r.lr for r in sel} == set(qp.PROFILES["quick"].lr_grid)
    assert qp.planned_final_count(opts) == 3 * 6 * 3
    n_sel, n_fin, est = qp.estimate_plan(opts)
    assert (n_sel, n_fin) == (36, 54)
    assert est < 75 * 60, "the quick profile (six methods) must fit in about an hour"
    assert all(r.train_size == qp.PROFILES["quick"].train_size[r.task] for r in sel)


def test_full_profile_has_both_settings_and_full_runs_once() -> None:
    sel = qp.selection_runs(_opts(profile="full"))
    assert {r.setting for r in sel if r.method == "lora"} == {"paper", "peft"}
    assert {r.setting for r in sel if r.method == "full"} == {"paper"}
    assert len(sel) == 3 * (5 * 2 + 1) * 4


def test_final_runs_use_chosen_lr_and_sweep_shares_default_point() -> None:
    opts = _opts(tasks=["sst2"], methods=["sparsegrad"], sweep_density=True)
    sel = qp.selection_runs(opts)
    assert qp.final_runs(opts, {}) == []  # nothing chosen yet
    chosen = {sel[0].group: 4e-4}
    fin = qp.final_runs(opts, chosen)
    assert {r.lr for r in fin} == {4e-4}
    assert sorted({r.density for r in fin}) == list(qp.SWEEP_DENSITIES)
    assert len(fin) == len({r.key for r in fin}) == 4 * 3


def test_available_rows_cap_subsample_and_steps_override() -> None:
    opts = _opts(tasks=["mrpc"], methods=["lora"], available={"mrpc": 800}, steps=10)
    run = qp.selection_runs(opts)[0]
    assert run.train_size == 800 and run.steps == 10
    assert "steps=10" in run.key


def test_decoder_runs() -> None:
    opts = _opts(tasks=[], decoder=True)
    sel = qp.selection_runs(opts)
    assert {r.method for r in sel} == set(qp.DECODER_METHODS)
    assert {r.model for r in sel} == {"smollm2-135m"} and {r.task for r in sel} == {"chat"}


def _metrics(task: str, score: float) -> dict[str, float]:
    return {"eval_accuracy": score, "eval_f1": score, "eval_mcc": score, "eval_loss": 1 - score}


def fake_trainer(calls: list[str], fail_key: str | None = None):
    def run_all(runs):
        for r in runs:
            if r.key == fail_key:
                raise RuntimeError("boom")
            calls.append(r.key)
            yield r, {"metrics": _metrics(r.task, 0.5 + r.lr * 100 + r.seed * 0.01), "s_per_step": 0.1,
                      "trainable_params": 1000}
    return run_all


def test_resumable_restart_skips_finished_runs(tmp_path: Path) -> None:
    argv = ["--profile", "quick", "--tasks", "sst2", "--methods", "sparsegrad,lora", "--out", str(tmp_path),
            "--no-report"]
    calls: list[str] = []
    assert quality_run.main(argv, trainer=fake_trainer(calls)) == 0
    rows = qp.RunLog(tmp_path).rows()
    assert len(rows) == len(calls) == 2 * 2 + 2 * 3
    finals = [r for r in rows if r["phase"] == "final"]
    assert {r["lr"] for r in finals} == {4e-4}  # the better grid point under the fake
    again: list[str] = []
    assert quality_run.main(argv, trainer=fake_trainer(again)) == 0
    assert again == [] and len(qp.RunLog(tmp_path).rows()) == len(rows)


def test_failed_run_is_logged_and_retried(tmp_path: Path) -> None:
    argv = ["--tasks", "sst2", "--methods", "lora", "--out", str(tmp_path), "--no-report"]
    opts = quality_run.build_options(quality_run.parse_args(argv))
    bad = qp.selection_runs(opts)[0].key
    calls: list[str] = []
    assert quality_run.main(argv, trainer=fake_trainer(calls, fail_key=bad)) == 1
    assert bad not in qp.RunLog(tmp_path).done()
    assert json.loads((tmp_path / "errors.jsonl").read_text().splitlines()[0])["key"] == bad
    retry: list[str] = []
    assert quality_run.main(argv, trainer=fake_trainer(retry)) == 0
    assert retry[0] == bad


def test_truncated_line_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "runs.jsonl").write_text('{"key": "a", "phase": "final"}\n{"key": "b", "pha')
    assert qp.RunLog(tmp_path).done() == {"a"}


def _row(task, method, seed, score, phase="final", lr=1e-4, density=0.01, setting="paper"):
    run = qp.Run(phase=phase, task=task, method=method, setting=setting, seed=seed, lr=lr, density=density,
                 train_size=100, steps=10, batch_size=16, max_seq_length=64, calibration_steps=10,
                 val_fraction=0.2, data="glue")
    return {**run.to_dict(), "metrics": _metrics(task, score), "s_per_step": 0.2, "trainable_params": 50}


def test_report_aggregation(tmp_path: Path) -> None:
    rows = [_row("sst2", "lora", 0, 0.7, "select", lr=1e-4), _row("sst2", "lora", 0, 0.8, "select", lr=4e-4)]
    scores = {"sst2": [0.80, 0.82, 0.84], "mrpc": [0.70, 0.72, 0.74], "cola": [0.30, 0.32, 0.34]}
    rows += [_row(t, "lora", s, v, lr=4e-4) for t, vals in scores.items() for s, v in enumerate(vals)]
    agg = report.aggregate(rows)
    sst2 = next(e for e in agg["results"] if e["task"] == "sst2")
    assert sst2["metrics"]["eval_accuracy"]["mean"] == pytest.approx(0.82)
    assert sst2["metrics"]["eval_accuracy"]["std"] == pytest.approx(0.02)  # sample std
    assert sst2["lr"] == 4e-4 and sst2["seeds"] == [0, 1, 2]
    (glue,) = agg["glue_average"]
    assert glue["mean"] == pytest.approx((0.82 + 0.72 + 0.32) / 3) and glue["n"] == 3
    assert [s["chosen"] for s in agg["selection"]] == [False, True]
    md = report.markdown(agg)
    assert "82.0 ± 2.0" in md and "| sst2 | lora | paper | 0.0001: 70.0, 0.0004: 80.0 | 0.0004 |" in md
    (tmp_path / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report.write_report(tmp_path)
    assert (tmp_path / "quality.png").stat().st_size > 1000
    assert json.loads((tmp_path / "results.json").read_text())["n_rows"] == len(rows)


def test_choose_lrs_ties_and_nan() -> None:
    rows = [_row("cola", "full", 0, 0.3, "select", lr=4e-4), _row("cola", "full", 0, 0.3, "select", lr=1e-4),
            _row("sst2", "full", 0, math.nan, "select", lr=1e-4), _row("sst2", "full", 0, 0.6, "select", lr=4e-4)]
    chosen = qp.choose_lrs(rows)
    assert chosen[("cola", "full", "paper", "minilm-l6", 0.01)] == 1e-4
    assert chosen[("sst2", "full", "paper", "minilm-l6", 0.01)] == 4e-4


def test_report_leaves_out_finals_at_an_lr_no_longer_chosen() -> None:
    """The grid grew (2e-4 added) and 2e-4 won: the finals run earlier at 4e-4 are not averaged in."""
    rows = [_row("sst2", "lora", 0, v, "select", lr=lr) for lr, v in ((1e-4, 0.7), (2e-4, 0.9), (4e-4, 0.8))]
    rows += [_row("sst2", "lora", s, 0.5, lr=4e-4) for s in range(3)]  # chosen before 2e-4 existed
    rows += [_row("sst2", "lora", s, 0.9, lr=2e-4) for s in range(3)]
    agg = report.aggregate(rows)
    (sst2,) = agg["results"]
    assert sst2["lr"] == 2e-4 and sst2["seeds"] == [0, 1, 2]
    assert sst2["metrics"]["eval_accuracy"]["mean"] == pytest.approx(0.9)
    (glue,) = agg["glue_average"]
    assert glue["mean"] == pytest.approx(0.9) and glue["n"] == 3
