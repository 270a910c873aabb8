"""Run one benchmark case in a fresh Python process and hand its result back as JSON.

The parent calls ``run_worker(script, payload)``: it runs ``python script _worker <json>`` with the payload
plus a ``result_path``; the script's ``_worker`` entry point measures and calls ``write_result(result,
payload["result_path"])``. A fresh process per case keeps one case's memory and caches out of the next one's
measurement.

Not a library module: the scripts in ``bench/`` put this folder on ``sys.path`` and ``import worker_process``.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_worker(script: Path, payload: Mapping[str, Any], *, timeout: float = 1800) -> dict[str, Any]:
    """Run ``python script _worker <json>`` in a fresh process; it writes its result JSON to a temp file."""
    with tempfile.NamedTemporaryFile("r", suffix=".json", delete=False) as tmp:
        out_path = tmp.name
    try:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
        # Idle OpenMP threads sleep instead of spinning: CPU time then counts work, not waiting, and a
        # descheduled peer thread on a shared machine does not burn the other thread's time.
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        proc = subprocess.run(
            [sys.executable, str(script), "_worker", json.dumps(dict(payload, result_path=out_path))],
            env=env,
            timeout=timeout,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            tail = (proc.stdout[-2000:] + proc.stderr[-4000:]).strip()
            return {"error": f"worker exited {proc.returncode}: {tail}"}
        with open(out_path) as f:
            return json.load(f)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(out_path)


def write_result(result: Mapping[str, Any], path: str | Path) -> None:
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
