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
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TextIO

REPO_ROOT = Path(__file__).resolve().parents[1]
READY, DONE = "@@worker-ready", "@@worker-done"


def _worker_env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    # Idle OpenMP threads sleep instead of spinning: CPU time then counts work, not waiting, and a
    # descheduled peer thread on a shared machine does not burn the other thread's time.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def run_worker(script: Path, payload: Mapping[str, Any], *, timeout: float = 1800) -> dict[str, Any]:
    """Run ``python script _worker <json>`` in a fresh process; it writes its result JSON to a temp file."""
    with tempfile.NamedTemporaryFile("r", suffix=".json", delete=False) as tmp:
        out_path = tmp.name
    try:
        env = _worker_env()
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


class WorkerPool:
    """One long-lived process per key (``python script _serve <json>``), started together and asked one job at a
    time: a benchmark that interleaves methods over repetitions keeps each method in a process of its own
    without paying the interpreter's and the libraries' start-up for every job.

    The script's ``_serve`` entry point calls :func:`serve` with a handler; each job's result comes back
    through a file, so the worker's own prints never mix with it. A worker that dies or overruns a job's
    ``timeout`` is killed and answers that job (and any later one) with ``{"error": ...}``.
    """

    def __init__(self, script: Path, keys: Iterable[str], payload: Mapping[str, Any], *, timeout: float) -> None:
        self.timeout = timeout
        self.procs: dict[str, subprocess.Popen[str]] = {}
        for key in keys:  # all at once: their imports overlap
            self.procs[key] = subprocess.Popen(
                [sys.executable, str(script), "_serve", json.dumps(dict(payload, worker=key))],
                env=_worker_env(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        self.errors: dict[str, str] = {}
        self.lines: dict[str, queue.Queue[str | None]] = {}
        for key, proc in self.procs.items():
            self.lines[key] = queue.Queue()
            threading.Thread(target=self._read, args=(proc, self.lines[key]), daemon=True).start()
        for key in self.procs:  # nothing is measured before every worker has started (no import competes)
            self._wait_for(key, READY)

    @staticmethod
    def _read(proc: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)  # end of output: the worker exited

    def _wait_for(self, key: str, marker: str) -> None:
        deadline = time.monotonic() + self.timeout
        while key not in self.errors:
            try:
                line = self.lines[key].get(timeout=max(deadline - time.monotonic(), 0.001))
            except queue.Empty:
                self._fail(key, f"no answer within {self.timeout:.0f} s")
                break
            if line is None:
                self._fail(key, f"worker exited {self.procs[key].wait()}")
                break
            if line.strip() == marker:
                return
            sys.stdout.write(line)  # the worker's own output, passed on

    def _fail(self, key: str, why: str) -> None:
        self.errors[key] = why
        with contextlib.suppress(OSError):
            self.procs[key].kill()

    def run(self, key: str, job: Mapping[str, Any]) -> dict[str, Any]:
        """``job`` done by ``key``'s worker: its handler's result, or ``{"error": ...}``."""
        if key in self.errors:
            return {"error": self.errors[key]}
        with tempfile.NamedTemporaryFile("r", suffix=".json", delete=False) as tmp:
            out_path = tmp.name
        try:
            proc = self.procs[key]
            assert proc.stdin is not None
            try:
                proc.stdin.write(json.dumps(dict(job, result_path=out_path)) + "\n")
                proc.stdin.flush()
            except OSError as exc:
                self._fail(key, f"worker gone: {exc}")
            self._wait_for(key, DONE)
            if key in self.errors:
                return {"error": self.errors[key]}
            with open(out_path) as f:
                return json.load(f)  # type: ignore[no-any-return]
        finally:
            with contextlib.suppress(OSError):
                os.unlink(out_path)

    def close(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(OSError):
                assert proc.stdin is not None
                proc.stdin.close()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is not None:  # interrupted (a time limit): no job's end is waited for
            for proc in self.procs.values():
                proc.kill()
        self.close()


def serve(handle: Callable[[dict[str, Any]], Mapping[str, Any]], stdin: TextIO = sys.stdin) -> None:
    """The worker side of :class:`WorkerPool`: announce readiness, then answer one JSON job per line."""
    print(READY, flush=True)
    for line in stdin:
        job = json.loads(line)
        write_result(handle(job), job["result_path"])
        print(DONE, flush=True)
