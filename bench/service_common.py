"""A scratch deployment of the service on this machine for the service benchmarks (``service_load.py``,
``job_load.py``, ``api_mixed_load.py``): a fresh PostgreSQL database (``SPARSEGRAD_TEST_PG``, default
postgres@127.0.0.1:5432) with the migrations run, Redis (``SPARSEGRAD_TEST_REDIS``, default
127.0.0.1:6379/15) as broker, the tiny random ``tiny-bert`` model of the tests, a small SST-2 training file
uploaded with a fresh API key, and the API under uvicorn. Workers are started by the caller
(``Deployment.start_worker``). Everything is stopped and the database dropped on exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from service.conftest import Deployment, deployment_env  # noqa: E402
from support.endpoints import PG_SERVER, REDIS_SERVER, admin_engine, free_port  # noqa: E402

RESULTS = Path(os.environ.get("BENCH_RESULTS_DIR") or REPO / "bench" / "results")

HZ = os.sysconf("SC_CLK_TCK")

BENCH_ENV = {
    "SPARSEGRAD_HEARTBEAT_INTERVAL_S": "2",  # the defaults of tests/service are for fault tests
    "SPARSEGRAD_HEARTBEAT_TIMEOUT_S": "60",
    "SPARSEGRAD_REAPER_INTERVAL_S": "30",
    "SPARSEGRAD_RESEND_AFTER_S": "60",
    "SPARSEGRAD_RATE_LIMIT_PER_MINUTE": "0",  # one key drives all the load: measure the API, not the limit
}


@dataclass
class Scratch:
    dep: Deployment
    pg_url: str
    key: str
    file_id: str
    served_queue: str
    """The queue workers listen to (``dep.env["SPARSEGRAD_TRAINING_QUEUE"]`` may be an unserved one)."""


def build_tiny_model(folder: Path) -> Path:
    """The tests' ``tiny_model_dir``: a tiny random BERT + the real MiniLM tokenizer."""
    from support.tiny import save_model_folder, tiny_bert

    from sparsegrad_core.loading import load_tokenizer

    tokenizer = load_tokenizer("minilm-l6")
    return save_model_folder(folder, tiny_bert(tokenizer), tokenizer)


def write_sst2(path: Path, n: int = 120) -> Path:
    from sparsegrad_data import glue_mapping, load_dataset, sample_path

    task, mapping = glue_mapping("sst2")
    data = load_dataset(sample_path("sst2_train"), task, mapping)
    with open(path, "w") as f:
        for ex in data.examples[:n]:
            f.write(json.dumps({"text": ex.text, "label": int(ex.label)}) + "\n")  # type: ignore[arg-type]
    return path


def job_body(training_file: str, max_steps: int, tag: str, **hyperparameters: Any) -> dict[str, Any]:
    return {"model": "tiny-bert", "training_file": training_file,
            "method": {"type": "sparsegrad", "sparsegrad": {"density": 0.05, "calibration_steps": 2}},
            "hyperparameters": {"batch_size": 8, "max_seq_length": 32, "learning_rate": 1e-3,
                                "max_steps": max_steps, **hyperparameters},
            "metadata": {"bench": tag}}


def epoch(value: datetime) -> float:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def start_api(dep: Deployment, workers: int) -> None:
    port = dep.url.rsplit(":", 1)[1]
    dep.api = dep._spawn([sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", port,
                          "--log-level", "warning", "--workers", str(workers)], dep.env, "api")
    dep.wait_ready()


def stop_api(dep: Deployment) -> None:
    if dep.api is not None:
        dep.kill(dep.api, signal.SIGTERM)
        dep.api = None


def percentiles(values: Sequence[float], scale: float = 1.0, digits: int = 4) -> dict[str, Any]:
    """n, p50, p90, p99, max and mean of ``values`` × ``scale``."""
    if not values:
        return {"n": 0}
    ordered = sorted(v * scale for v in values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], digits)

    return {"n": len(ordered), "p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": round(ordered[-1], digits),
            "mean": round(statistics.fmean(ordered), digits)}


@contextlib.contextmanager
def scratch_deployment(*, api_workers: int = 1, unserved_queue: bool = False, train_examples: int = 120,
                       env: dict[str, str] | None = None) -> Iterator[Scratch]:
    """The deployment described in the module docstring. With ``unserved_queue`` the API enqueues on a queue
    no worker listens to (``Scratch.served_queue`` is the one workers use)."""
    from sqlalchemy import text

    from migrations import upgrade
    from sparsegrad_service.db import dispose_engines

    root = Path(tempfile.mkdtemp(prefix="sg-bench-service-"))
    name = f"sg_bench_{secrets.token_hex(6)}"
    admin = admin_engine()
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    pg_url = f"{PG_SERVER}/{name}"
    dep: Deployment | None = None
    try:
        upgrade(pg_url)
        model = build_tiny_model(root / "tiny-bert")
        data = write_sst2(root / "sst2_small.jsonl", train_examples)
        dep_env = deployment_env(root, pg_url, REDIS_SERVER, {"tiny-bert": str(model)})
        dep_env.update(BENCH_ENV)
        dep_env.update(env or {})
        served_queue = dep_env["SPARSEGRAD_TRAINING_QUEUE"]
        if unserved_queue:
            dep_env["SPARSEGRAD_TRAINING_QUEUE"] = f"bench-unserved-{secrets.token_hex(4)}"
        dep = Deployment(root, dep_env, f"http://127.0.0.1:{free_port()}")
        start_api(dep, api_workers)
        key = dep.create_key("bench")
        with dep.client(key) as c, open(data, "rb") as f:
            r = c.post("/v1/files", files={"file": ("sst2.jsonl", f)}, data={"purpose": "fine-tune"})
            r.raise_for_status()
            file_id = r.json()["id"]
        yield Scratch(dep, pg_url, key, file_id, served_queue)
    except BaseException:
        if dep is not None:
            print(dep.log_tail(), file=sys.stderr)
        raise
    finally:
        if dep is not None:
            dep.stop()
        dispose_engines()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        shutil.rmtree(root, ignore_errors=True)


def proc_cpu(pids: list[int]) -> dict[int, float]:
    """CPU seconds (user + system) of each live pid."""
    out = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / HZ
    return out


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU used between two snapshots; a pid born in between counts from zero (exited ones are lost)."""
    return sum(v - before.get(pid, 0.0) for pid, v in after.items())


def pids_named(name: str) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    out.append(int(entry.name))
            except OSError:
                pass
    return out


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out



def machine_jiffies() -> tuple[int, int]:
    """(busy, total) CPU jiffies of the whole machine since boot (``/proc/stat``)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def machine_busy(before: tuple[int, int], after: tuple[int, int]) -> float:
    """Share of the machine's CPU time that was busy between two ``machine_jiffies`` readings."""
    total = after[1] - before[1]
    return round((after[0] - before[0]) / total, 3) if total else 0.0


def save_run(filename: str, label: str, run: dict[str, Any], targets: dict[str, str]) -> Path:
    """Merge ``run`` under ``label`` into ``bench/results/<filename>``."""
    path = RESULTS / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(path.read_text()) if path.is_file() else {}
    runs = previous.get("runs", {})
    runs[label] = run
    path.write_text(json.dumps({"targets": targets, "runs": runs}, indent=2) + "\n")
    return path


def shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)
