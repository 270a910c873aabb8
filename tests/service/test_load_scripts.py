"""Short runs of the load scripts (``bench/job_load.py``, ``bench/api_mixed_load.py``) against real processes:
the same checks as their long runs, at a size that fits CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_every_job_of_a_burst_ends_terminal_exactly_once() -> None:
    sys.path.insert(0, str(BENCH))
    import job_load

    problems, figures = job_load.run(jobs=16, workers=2, max_steps=3, submitters=4, timeout=300)
    assert problems == [], problems
    assert figures["statuses"] == {"succeeded": 16}
    assert figures["queue_wait_s"]["n"] == 16 and figures["throughput_jobs_per_min"] > 0


def test_mixed_api_load_has_no_server_errors(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH / "api_mixed_load.py"), "--duration", "8", "--connections", "8", "--sse", "2",
         "--label", "ci"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "BENCH_RESULTS_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "5xx or transport errors: 0; tracebacks in the API log: 0" in result.stdout
