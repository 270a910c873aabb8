"""A real deployment for end-to-end tests: migrations on a fresh PostgreSQL database, the API under
uvicorn and Celery worker processes on Redis, each in its own process group so tests can SIGKILL them.

Workers run as "remote" workers: their own data directory (no shared disk with the API), artifacts and
uploads go through the API's ``/internal/store`` routes with the worker token. Timeouts are short
(heartbeat every 0.5 s, reaped after 5 s) so fault tests finish quickly.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from support.endpoints import free_port, wait_ready

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Deployment:
    """Processes and settings of one test deployment."""

    root: Path
    env: dict[str, str]
    url: str
    api: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _logs: list[Path] = field(default_factory=list)

    def _spawn(self, args: list[str], env: dict[str, str], log_name: str) -> subprocess.Popen[bytes]:
        log = self.root / f"{log_name}.log"
        self._logs.append(log)
        out = open(log, "ab")  # noqa: SIM115 - the child owns it
        return subprocess.Popen(args, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def start_api(self) -> None:
        port = self.url.rsplit(":", 1)[1]
        self.api = self._spawn([sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1",
                                "--port", port, "--log-level", "warning"], self.env, "api")
        self.wait_ready()

    def wait_ready(self, timeout: float = 60) -> None:
        wait_ready(self.url, self.api, timeout, self)

    def start_worker(self, name: str | None = None) -> subprocess.Popen[bytes]:
        name = name or f"w{len(self.workers)}"
        data = self.root / f"worker-{name}"  # its own disk: nothing shared with the API
        env = {**self.env, "SPARSEGRAD_DATA_DIR": str(data), "SPARSEGRAD_API_URL": self.url,
               "SPARSEGRAD_ARTIFACT_DIR": str(data / "no-shared-artifacts")}
        proc = self._spawn([sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker",
                            "-Q", self.env["SPARSEGRAD_TRAINING_QUEUE"], "-c", "1", "--pool", "solo",
                            "--without-gossip", "--without-mingle", "--without-heartbeat",
                            "--hostname", f"{name}@%h", "--loglevel", "INFO"], env, f"worker-{name}")
        self.workers.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)

    def stop(self) -> None:
        for proc in [*self.workers, *([self.api] if self.api else [])]:
            self.kill(proc, signal.SIGTERM)

    def log_tail(self, lines: int = 60) -> str:
        out = []
        for log in self._logs:
            if log.is_file():
                text = log.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {log.name}\n" + "\n".join(text))
        return "\n".join(out)

    def create_key(self, tenant: str) -> str:
        result = subprocess.run([sys.executable, "-m", "sparsegrad_cli", "keys", "create", "--tenant",
                                 tenant], env=self.env, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr + result.stdout
        return result.stdout.strip().splitlines()[-1]

    def client(self, key: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def deployment_env(root: Path, database_url: str, redis_url: str | None, models: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARSEGRAD_")}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    env.update({
        "PYTHONUNBUFFERED": "1",
        "SPARSEGRAD_DATA_DIR": str(root / "api-data"),
        "DATABASE_URL": database_url,
        "SPARSEGRAD_WORKER_TOKEN": secrets.token_urlsafe(24),
        "SPARSEGRAD_MODELS": json.dumps(models),
        "SPARSEGRAD_TRAINING_QUEUE": f"training-{secrets.token_hex(4)}",
        "SPARSEGRAD_HEARTBEAT_INTERVAL_S": "0.5",
        "SPARSEGRAD_HEARTBEAT_TIMEOUT_S": "5",
        "SPARSEGRAD_REAPER_INTERVAL_S": "1",
        "SPARSEGRAD_RESEND_AFTER_S": "5",
        "SPARSEGRAD_CHECKPOINT_EVERY": "10",
        "SPARSEGRAD_METRICS_FLUSH_S": "0.3",
        "SPARSEGRAD_STOP_CHECK_S": "0.1",
        "SPARSEGRAD_TORCH_THREADS": "1",
        # Tests time kills by polling a job many times a second for minutes, past a key's default rate limit;
        # the limiter has tests of its own (tests/api/test_rate_limit.py).
        "SPARSEGRAD_RATE_LIMIT_PER_MINUTE": "0",
    })
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


@contextlib.contextmanager
def running_deployment(root: Path, database_url: str, redis_url: str | None, tiny_model_dir: Path) -> Iterator[Deployment]:
    """Migrations on ``database_url``, then the API under uvicorn (workers are started by the test); its log tail
    is printed when the body fails."""
    from migrations import upgrade

    upgrade(database_url)
    env = deployment_env(root, database_url, redis_url, {"tiny-bert": str(tiny_model_dir)})
    dep = Deployment(root, env, f"http://127.0.0.1:{free_port()}")
    try:
        dep.start_api()
        yield dep
    except BaseException:
        print(dep.log_tail())
        raise
    finally:
        dep.stop()


@pytest.fixture()
def deployment(tmp_path: Path, pg_url: str, redis_url: str, tiny_model_dir: Path) -> Iterator[Deployment]:
    """PostgreSQL + Redis + uvicorn API (+ workers started by the test)."""
    with running_deployment(tmp_path, pg_url, redis_url, tiny_model_dir) as dep:
        yield dep


def tiny_job(training_file: str, **hyper: object) -> dict[str, object]:
    hp: dict[str, object] = {"batch_size": 8, "max_seq_length": 32, "learning_rate": 1e-3, "max_steps": 20}
    hp.update(hyper)
    return {"model": "tiny-bert", "training_file": training_file,
            "method": {"type": "sparsegrad", "sparsegrad": {"density": 0.05, "calibration_steps": 2}},
            "hyperparameters": hp}


@dataclass(frozen=True)
class Embedded:
    """``sparsegrad up`` on the embedded default: its URL, an API key of tenant ``local``, its data dir."""

    url: str
    key: str
    data_dir: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=60)


@contextlib.contextmanager
def embedded_up(tmp_path: Path, tiny_model_dir: Path, settings: dict[str, str] | None = None) -> Iterator[Embedded]:
    """``sparsegrad up`` (uvicorn + a Celery worker on the filesystem broker + SQLite + a local artifact store)
    on a fresh data dir with ``tiny-bert`` registered and a key created; Ctrl-C on exit, which must end it
    with status 0 (the log's tail otherwise). ``settings``: more ``SPARSEGRAD_*`` variables."""
    data_dir, port = tmp_path / "data", free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SPARSEGRAD_") and k not in ("DATABASE_URL", "REDIS_URL")}
    env.update({"SPARSEGRAD_MODELS": json.dumps({"tiny-bert": str(tiny_model_dir)}), "PYTHONUNBUFFERED": "1",
                "SPARSEGRAD_TORCH_THREADS": "1", **(settings or {})})
    log_path = tmp_path / "up.log"
    with open(log_path, "wb") as log:
        up = subprocess.Popen([sys.executable, "-m", "sparsegrad_cli", "up", "--port", str(port),
                               "--inference-port", str(free_port()),  # not port + 1: that may be taken
                               "--data-dir", str(data_dir)], env=env, cwd=REPO, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url, up, 90, log_path)
            keys = subprocess.run([sys.executable, "-m", "sparsegrad_cli", "keys", "create", "--tenant", "local",
                                   "--data-dir", str(data_dir)], env=env, cwd=REPO, capture_output=True, text=True,
                                  timeout=120)
            assert keys.returncode == 0, keys.stderr
            yield Embedded(url, keys.stdout.strip().splitlines()[-1], data_dir)
        finally:
            if up.poll() is None:
                os.killpg(up.pid, signal.SIGINT)
            code = up.wait(timeout=60)
    assert code == 0, log_path.read_text()[-3000:]
