"""The GPU step benchmark's LLaMA suite on CPU (the llama-tiny shape): every method runs with gradient
checkpointing, and a case that runs out of GPU memory is recorded as not fitting while the others go on."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import gpu_cases  # noqa: E402
import gpu_step  # noqa: E402

SMOKE = [
    "--device",
    "cpu",
    "--suite",
    "llama",
    "--llama-steps",
    "1",
    "--llama-warmup",
    "1",
    "--llama-batch-size",
    "2",
    "--llama-seq-len",
    "64",
    "--threads",
    "1",
]
IN_PROCESS = [*SMOKE, "--in-process"]  # the tests that replace a case function need the case in this process


@pytest.fixture(autouse=True)
def _restore_process_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The script patches ``calibrate`` (its calibration memo) and sets the thread count: undo both."""
    import sparsegrad_core.methods.sparsegrad as sparsegrad_method

    monkeypatch.setattr(sparsegrad_method, "calibrate", sparsegrad_method.calibrate)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _rows(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text())["rows"]  # type: ignore[no-any-return]


def test_llama_suite_runs_every_method_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "gpu_step.json"
    gpu_step.main([*SMOKE, "--out", str(out)])
    rows = _rows(out)
    assert [r["method"] for r in rows] == ["full", "lora", "sg_block", "sg_dynamic", "frozen_mlp"]
    for r in rows:
        assert r["status"] == "ok" and r["model"] == "llama-tiny" and r["precision"] == "fp32", r
        assert r["gradient_checkpointing"] is True and r["setting"] == "peft"
        assert r["steps_per_s"] > 0 and r["prepare_peak_bytes"] is not None
    by_method = {r["method"]: r for r in rows}
    assert by_method["frozen_mlp"]["trainable_params"] == 0
    assert by_method["full"]["trainable_params"] > by_method["lora"]["trainable_params"] > 0


def test_a_case_out_of_memory_is_recorded_and_the_run_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = gpu_cases.run_llama

    def run_llama(
        args: Any, shape: str, dtype: torch.dtype, method: str, device: torch.device
    ) -> dict[str, Any]:
        if method == "full":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 26.00 GiB")
        return real(args, shape, dtype, method, device)

    monkeypatch.setattr(gpu_cases, "run_llama", run_llama)
    out = tmp_path / "gpu_step.json"
    gpu_step.main([*IN_PROCESS, "--llama-methods", "full,lora", "--out", str(out)])
    full, lora = _rows(out)
    assert full["status"] == "OOM: does not fit" and full["note"] == "OOM: does not fit"
    assert full.get("steps_per_s") is None and "26.00 GiB" in full["error"]
    assert lora["status"] == "ok" and lora["x_full"] is None and lora["mem_x_lora"] == 1.0


def test_other_failures_are_recorded_then_exit_nonzero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def run_llama(*_: Any) -> dict[str, Any]:
        raise RuntimeError("expected m1 and m2 to have the same dtype")

    monkeypatch.setattr(gpu_cases, "run_llama", run_llama)
    out = tmp_path / "gpu_step.json"
    with pytest.raises(SystemExit, match="1 case"):
        gpu_step.main([*IN_PROCESS, "--llama-methods", "sg_dynamic", "--out", str(out)])
    (row,) = _rows(out)
    assert row["status"] == "error: RuntimeError: expected m1 and m2 to have the same dtype"


def test_a_run_stopped_part_way_keeps_the_cases_it_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A time limit (``timeout`` sends SIGTERM; here the interrupt a case raises) leaves the result file with
    every finished case, marked incomplete; a run that ends marks it complete."""
    real = gpu_cases.run_llama

    def run_llama(args: Any, shape: str, dtype: torch.dtype, method: str, device: torch.device) -> dict[str, Any]:
        if method == "lora":
            raise KeyboardInterrupt
        return real(args, shape, dtype, method, device)

    monkeypatch.setattr(gpu_cases, "run_llama", run_llama)
    out = tmp_path / "gpu_step.json"
    with pytest.raises(KeyboardInterrupt):
        gpu_step.main([*IN_PROCESS, "--llama-methods", "frozen_mlp,lora", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["complete"] is False
    assert [(r["method"], r["status"]) for r in saved["rows"]] == [("frozen_mlp", "ok")]
    gpu_step.main([*IN_PROCESS, "--llama-methods", "frozen_mlp", "--out", str(out)])
    assert json.loads(out.read_text())["complete"] is True


def test_each_method_runs_in_a_process_of_its_own_by_default(tmp_path: Path) -> None:
    """The default: one process per method, kept over its repeats (a crash or leak of one method cannot reach
    another, and the start-up is paid once per method)."""
    import os

    out = tmp_path / "gpu_step.json"
    gpu_step.main([*SMOKE, "--llama-methods", "full,sg_block", "--llama-repeats", "2", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["args"]["in_process"] is False and saved["complete"] is True
    assert [(r["method"], r["status"]) for r in saved["rows"]] == [("full", "ok"), ("sg_block", "ok")]
    pids = {m: {r["pid"] for r in saved["runs"] if r["method"] == m} for m in ("full", "sg_block")}
    assert len(pids["full"]) == len(pids["sg_block"]) == 1 and pids["full"] != pids["sg_block"]
    assert os.getpid() not in pids["full"] | pids["sg_block"]


def test_repeats_interleave_methods_and_report_medians_of_same_repeat_ratios(tmp_path: Path) -> None:
    out = tmp_path / "gpu_step.json"
    gpu_step.main([*IN_PROCESS, "--llama-methods", "full,frozen_mlp", "--llama-repeats", "3", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert [(r["method"], r["repeat"]) for r in saved["runs"]] == [
        ("full", 1), ("frozen_mlp", 1), ("full", 2), ("frozen_mlp", 2), ("full", 3), ("frozen_mlp", 3)
    ]
    full, frozen = saved["rows"]
    assert full["repeats"] == frozen["repeats"] == 3 and "repeat" not in full
    per_rep = {m: [r["steps_per_s"] for r in saved["runs"] if r["method"] == m] for m in ("full", "frozen_mlp")}
    assert frozen["steps_per_s"] == sorted(per_rep["frozen_mlp"])[1]
    ratios = [a / b for a, b in zip(per_rep["frozen_mlp"], per_rep["full"], strict=True)]
    assert frozen["x_full_reps"] == pytest.approx(ratios)
    assert frozen["x_full"] == pytest.approx(sorted(ratios)[1]) and full["x_full"] == 1.0
    first = saved["runs"][1]
    assert frozen["peak_bytes"] == first["peak_bytes"] and frozen["prepare_s"] == first["prepare_s"]
