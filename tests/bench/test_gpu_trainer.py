"""The training-job CUDA-graph benchmark on the CPU: its eager cases run a real Trainer per method in fresh
processes and the table's ratios come from those runs; graphs are refused without CUDA."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import gpu_trainer  # noqa: E402

SMOKE = ["--device", "cpu", "--graphs", "off", "--model", "bert-small", "--steps", "3", "--skip", "1",
         "--repeats", "1", "--batch-size", "2", "--seq-len", "16", "--calib-steps", "1"]


def test_the_eager_cases_train_every_method_and_compare_them_with_full_ft(tmp_path: Path) -> None:
    out = gpu_trainer.main([*SMOKE, "--methods", "full,sg_block", "--out", str(tmp_path / "r.json")])
    assert (tmp_path / "r.json").is_file()
    rows = {r["method"]: r for r in out["rows"]}
    assert set(rows) == {"full", "sg_block"}
    for row in rows.values():
        assert "error" not in row, row
        assert row["steps"] == 3 and row["cuda_graphs"] is False and row["replays"] is None
        assert row["median_step_s"] > 0
    table = {e["method"]: e for e in out["table"]}
    assert table["full"]["vs_full"] == 1.0
    expected = rows["sg_block"]["steps_per_s"] / rows["full"]["steps_per_s"]
    assert table["sg_block"]["vs_full"] == pytest.approx(expected)


def test_graphs_without_cuda_are_refused() -> None:
    with pytest.raises(SystemExit):
        gpu_trainer.parse_args(["--device", "cpu", "--graphs", "both"])
