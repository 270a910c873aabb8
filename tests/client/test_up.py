"""``sparsegrad up``: one foreground command brings up the API and a worker on a fresh data dir, keys
created with ``sparsegrad keys create`` against that dir authenticate, Ctrl-C stops everything (exit 0,
no process left), and a child that dies takes the service down with a non-zero exit and its log tail."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
from support.endpoints import free_port, wait_ready

from .conftest import REPO, clean_env

UP = [sys.executable, "-m", "sparsegrad_cli", "up"]


def _start(data_dir: Path, port: int, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen([*UP, "--port", str(port), "--inference-port", str(free_port()),  # not port + 1
                                 "--data-dir", str(data_dir), *extra], cwd=REPO,
                                env=clean_env(), stdout=out, stderr=subprocess.STDOUT)


def _descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def test_up_serves_keys_authenticate_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    data_dir, port, log = tmp_path / "data", free_port(), tmp_path / "up.log"
    up = _start(data_dir, port, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, up, 90, log)
        children = _descendants(up.pid)
        names = " ".join(" ".join(c.cmdline()) for c in children)
        assert "uvicorn" in names and "celery" in names and "worker1@" in names and "worker.webhooks" in names
        keys = subprocess.run([*UP[:-1], "keys", "create", "--tenant", "smoke", "--data-dir", str(data_dir)],
                              cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=60)
        assert keys.returncode == 0, keys.stderr
        key = keys.stdout.strip().splitlines()[-1]
        models = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=10)
        assert models.status_code == 200 and any(m["id"] == "minilm-l6" for m in models.json()["data"])
        assert httpx.get(f"{url}/v1/models", timeout=10).status_code == 401
        time.sleep(1.0)  # let the worker finish starting: a stop during its boot is the slow path
    finally:
        up.send_signal(signal.SIGINT)
        code = up.wait(timeout=60)
    output = log.read_text(errors="replace")
    assert code == 0, output[-3000:]
    assert f"{url}/" in output and "/docs" in output
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE], output[-2000:]
    assert all((data_dir / "logs" / f"{name}.log").is_file() for name in ("api", "worker1", "webhooks"))


def test_up_exits_non_zero_with_the_log_tail_when_a_child_dies(tmp_path: Path) -> None:
    data_dir, port, log = tmp_path / "data", free_port(), tmp_path / "up.log"
    up = _start(data_dir, port, log, "--workers", "0", "--logs", "files")
    try:
        wait_ready(f"http://127.0.0.1:{port}", up, 90, log)
        (api,) = [c for c in _descendants(up.pid) if "uvicorn" in c.cmdline()]
        os.kill(api.pid, signal.SIGKILL)
        code = up.wait(timeout=30)
    finally:
        if up.poll() is None:
            up.kill()
    output = log.read_text(errors="replace")
    assert code == 1, output
    assert "api exited" in output and "api.log" in output
