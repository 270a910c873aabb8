"""``worker_process.WorkerPool``: one long-lived process per key, one job at a time, failures answered as errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import worker_process  # noqa: E402

SCRIPT = f"""
import os, sys, time
sys.path.insert(0, {str(BENCH)!r})
import worker_process

def handle(job):
    if job["x"] == "die":
        sys.exit(3)
    if job["x"] == "hang":
        time.sleep(60)
    print("some output of the worker's own")
    return {{"y": job["x"] * 2, "pid": os.getpid()}}

if sys.argv[1] == "_serve":
    worker_process.serve(handle)
"""


@pytest.fixture()
def script(tmp_path: Path) -> Path:
    path = tmp_path / "worker.py"
    path.write_text(SCRIPT)
    return path


def test_each_key_keeps_one_process_and_answers_in_order(script: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with worker_process.WorkerPool(script, ["a", "b"], {}, timeout=60) as pool:
        first, second, other = pool.run("a", {"x": 2}), pool.run("a", {"x": 5}), pool.run("b", {"x": 1})
    assert (first["y"], second["y"], other["y"]) == (4, 10, 2)
    assert first["pid"] == second["pid"] != other["pid"]
    assert "some output of the worker's own" in capsys.readouterr().out  # passed on, never mixed into results


def test_a_dead_or_stuck_worker_answers_with_an_error_and_the_others_go_on(script: Path) -> None:
    with worker_process.WorkerPool(script, ["a", "b", "c"], {}, timeout=3) as pool:
        assert pool.run("a", {"x": "die"}) == {"error": "worker exited 3"}
        assert pool.run("a", {"x": 1}) == {"error": "worker exited 3"}
        assert pool.run("b", {"x": "hang"}) == {"error": "no answer within 3 s"}
        assert pool.run("c", {"x": 4})["y"] == 8
