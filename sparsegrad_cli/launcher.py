"""The embedded service under one foreground command: migrations, then the API (uvicorn), N Celery training
workers, a webhook worker and the inference server as child processes, readiness, log files (optionally
followed on the terminal), and shutdown.

Each child runs in its own process group and writes to ``<data_dir>/logs/<name>.log``; stopping sends
SIGTERM to every group, then SIGKILL after a grace period, so nothing is left behind. Settings reach the
children through the environment (``SPARSEGRAD_DATA_DIR``; ``DATABASE_URL``/``REDIS_URL`` pass through).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from sparsegrad_service.allocator import with_jemalloc
from sparsegrad_service.settings import Settings

WORKER_ARGS = ["worker", "-Q", "{queue}", "-c", "1", "--pool", "solo", "--without-gossip", "--without-mingle",
               "--without-heartbeat", "--loglevel", "INFO"]
LOG_TAIL_LINES = 40


class ServiceError(RuntimeError):
    """The embedded service could not start, or one of its processes died."""


def celery_worker_command(queue: str, hostname: str | None = None, concurrency: int = 1) -> list[str]:
    """The command line of one training worker (``python -m celery -A worker.celery_app worker ...``)."""
    args = [a.format(queue=queue) for a in WORKER_ARGS]
    if concurrency != 1:
        args[args.index("-c") + 1] = str(concurrency)
        args[args.index("--pool") + 1] = "prefork"
    command = [sys.executable, "-m", "celery", "-A", "worker.celery_app", *args]
    if hostname:
        command += ["--hostname", hostname]
    return command


WEBHOOK_WORKER_THREADS = 4
"""Deliveries one webhook worker makes at once (threads: its tasks wait on HTTP)."""


def webhook_worker_command(queue: str, hostname: str | None = None, threads: int = WEBHOOK_WORKER_THREADS) -> list[str]:
    """The command line of one webhook worker (``python -m celery -A worker.webhooks worker ...``): its own
    Celery app and queue, so deliveries never wait behind a training job, and its relay queues due deliveries."""
    command = [sys.executable, "-m", "celery", "-A", "worker.webhooks", "worker", "-Q", queue, "-c", str(threads),
               "--pool", "threads", "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "INFO"]
    return command + (["--hostname", hostname] if hostname else [])


def inference_command(host: str, port: int, backend: str | None = None) -> list[str]:
    """The command line of the inference server (``python -m inference ...``)."""
    command = [sys.executable, "-m", "inference", "--host", host, "--port", str(port)]
    return [*command, "--backend", backend] if backend else command


def service_env(settings: Settings, public_url: str | None = None) -> dict[str, str]:
    """The environment children inherit: this one plus the data dir (absolute) and the public URL."""
    env = dict(os.environ)
    env["SPARSEGRAD_DATA_DIR"] = str(Path(settings.data_dir).resolve())
    if public_url and not env.get("SPARSEGRAD_PUBLIC_URL"):
        env["SPARSEGRAD_PUBLIC_URL"] = public_url
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def training_worker_env(settings: Settings, env: dict[str, str]) -> dict[str, str]:
    """A training worker's environment: ``env`` with jemalloc preloaded unless the ``worker_jemalloc`` setting is off
    (:func:`~sparsegrad_service.allocator.with_jemalloc`)."""
    return with_jemalloc(env) if settings.worker_jemalloc else dict(env)


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host if host not in ("", "0.0.0.0") else "0.0.0.0", port))
        except OSError:
            return True
    return False


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class Child:
    """One child process of the service and its log file."""

    name: str
    command: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = None
    log_offset: int = 0
    """Size of the log file before this run (where following it on the terminal starts)."""

    def start(self, env: dict[str, str], cwd: Path) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.log_file = open(self.log_path, "ab")  # noqa: SIM115 - held open while the child writes to it
        self.log_file.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {self.name}\n".encode())
        self.log_file.flush()
        self.process = subprocess.Popen(self.command, stdout=self.log_file, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=env, cwd=cwd, start_new_session=True)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)  # its own group: also any process it started

    def close(self) -> None:
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None


@dataclass
class EmbeddedService:
    """API + workers of one data dir. ``start()`` returns once ``/readyz`` answers 200."""

    settings: Settings
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    api_workers: int = 1
    """uvicorn processes serving the API (they share the port; each runs its own reaper loop, which is safe)."""
    inference_port: int | None = None
    """Start the inference server on this port of 127.0.0.1 and point the API at it (None: start none). The
    service is ready once the API is; the inference routes answer 503 until the server listens too."""
    grace_s: float = 15.0
    echo: Callable[[str], None] | None = None
    """Receives every log line prefixed with its process name (None: logs only go to files)."""
    children: list[Child] = field(default_factory=list)
    _followers: list[threading.Thread] = field(default_factory=list)
    _stop_follow: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://{host}:{self.port}"

    @property
    def inference_url(self) -> str | None:
        return None if self.inference_port is None else f"http://127.0.0.1:{self.inference_port}"

    @property
    def log_dir(self) -> Path:
        return Path(self.settings.data_dir).resolve() / "logs"

    def migrate(self) -> None:
        from migrations import upgrade

        Path(self.settings.data_dir).mkdir(parents=True, exist_ok=True)
        upgrade(self.settings.sql_url)

    def start(self, ready_timeout_s: float = 180.0, on_wait: Callable[[float], None] | None = None) -> None:
        if port_in_use(self.host, self.port):
            raise ServiceError(f"port {self.port} on {self.host} is already in use (another `sparsegrad up`?); "
                               "choose another with --port")
        if self.inference_port is not None and port_in_use("127.0.0.1", self.inference_port):
            raise ServiceError(f"port {self.inference_port} (the inference server's) is already in use; choose "
                               "another with --inference-port")
        self.migrate()
        env = service_env(self.settings, self.settings.public_url or self.url)
        cwd = Path.cwd()
        api = [sys.executable, "-m", "uvicorn", "api.main:app", "--host", self.host, "--port", str(self.port),
               "--log-level", "info", "--no-access-log", "--timeout-graceful-shutdown", "5"]
        if self.api_workers > 1:
            api += ["--workers", str(self.api_workers)]
        self.children = [Child("api", api, self.log_dir / "api.log")]
        training: set[str] = set()
        for i in range(1, self.workers + 1):
            name = f"worker{i}"
            command = celery_worker_command(self.settings.training_queue, f"{name}@%h")
            self.children.append(Child(name, command, self.log_dir / f"{name}.log"))
            training.add(name)
        self.children.append(Child("webhooks", webhook_worker_command(self.settings.webhook_queue, "webhooks@%h"),
                                   self.log_dir / "webhooks.log"))
        if self.inference_port is not None:
            env["SPARSEGRAD_INFERENCE_URL"] = str(self.inference_url)
            self.children.append(Child("inference", inference_command("127.0.0.1", self.inference_port),
                                       self.log_dir / "inference.log"))
        for child in self.children:
            child.start(training_worker_env(self.settings, env) if child.name in training else env, cwd)
            if self.echo is not None:
                self._follow(child)
        self.wait_ready(ready_timeout_s, on_wait)

    def wait_ready(self, timeout_s: float, on_wait: Callable[[float], None] | None = None) -> None:
        t0 = time.monotonic()
        with httpx.Client(timeout=3.0) as http:
            while True:
                self.check_children()
                try:
                    if http.get(f"{self.url}/readyz").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                waited = time.monotonic() - t0
                if waited > timeout_s:
                    raise ServiceError(f"the API did not become ready within {timeout_s:.0f} s; "
                                       f"last lines of {self.children[0].log_path}:\n{tail(self.children[0].log_path)}")
                if on_wait is not None:
                    on_wait(waited)
                time.sleep(0.3)

    def check_children(self) -> None:
        """Raise :class:`ServiceError` with the log tail of the first child that exited."""
        for child in self.children:
            if child.process is not None and child.process.poll() is not None:
                raise ServiceError(f"{child.name} exited with code {child.process.returncode}; "
                                   f"last lines of {child.log_path}:\n{tail(child.log_path)}")

    def stop(self) -> None:
        """SIGTERM every child, SIGKILL whatever is still alive after ``grace_s``; idempotent."""
        for child in self.children:
            if child.alive:
                child.signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        for child in self.children:
            if child.process is None:
                continue
            try:
                child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.signal(signal.SIGKILL)
                child.process.wait(timeout=10)
            child.signal(signal.SIGKILL)  # leftovers of the group, if any
        self._stop_follow.set()
        for thread in self._followers:
            thread.join(timeout=2)
        for child in self.children:
            child.close()

    def kill(self) -> None:
        for child in self.children:
            child.signal(signal.SIGKILL)

    # ------------------------------------------------------------------------------------ terminal logs
    def _follow(self, child: Child) -> None:
        echo = self.echo
        assert echo is not None

        def run() -> None:
            with open(child.log_path, "rb") as f:
                f.seek(child.log_offset)
                pending = b""
                while True:
                    chunk = f.read(65536)
                    if chunk:
                        pending += chunk
                        *lines, pending = pending.split(b"\n")
                        for line in lines:
                            echo(f"{child.name:<8}| {line.decode(errors='replace').rstrip()}")
                    elif self._stop_follow.is_set():
                        return
                    else:
                        time.sleep(0.2)

        thread = threading.Thread(target=run, name=f"log-{child.name}", daemon=True)
        thread.start()
        self._followers.append(thread)


def run_foreground(service: EmbeddedService, on_ready: Callable[[], None]) -> int:
    """Start, then wait for SIGINT/SIGTERM (exit 0) or a child's death (stop the rest, exit 1)."""
    stop = threading.Event()
    received: list[int] = []

    def handle(signum: int, _frame: object) -> None:
        if received:  # a second Ctrl-C: no more waiting
            service.kill()
        received.append(signum)
        stop.set()

    def interrupted(_waited: float) -> None:
        if stop.is_set():
            raise _Interrupted

    previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        service.start(on_wait=interrupted)
        on_ready()
        while not stop.wait(0.5):
            service.check_children()
        return 0
    except _Interrupted:
        return 0
    finally:
        service.stop()
        for s, h in previous.items():
            signal.signal(s, h)


class _Interrupted(Exception):
    """Ctrl-C arrived while the service was starting."""
