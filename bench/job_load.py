"""Many tiny real jobs through the whole service: every job must end in a terminal state exactly once.

    .venv/bin/python bench/job_load.py [--jobs 1000] [--workers 2] [--max-steps 3] [--timeout 3600]

A scratch deployment (``service_common``: PostgreSQL, Redis, uvicorn, the tiny random BERT) with
``--workers`` Celery worker processes (remote workers: files, checkpoints and artifacts go over HTTP). All
jobs are submitted over REST as fast as ``--submitters`` threads can, each a real SparseGrad job (calibration,
HOSVD, ``--max-steps`` training steps, evaluation, adapter and metrics artifacts). The script waits (showing
progress) until every job is terminal or ``--timeout`` passes, then checks each job in SQL:

* its status is terminal and it ran exactly one attempt (one "Attempt … started" event);
* it has exactly one closing event (an event whose data carries the final status), and that status is the
  job's;
* a succeeded job lists its adapter and metrics artifacts (a default job: the exact selection, which has no PEFT
  LoRA form)
  and one loss point per training step.

Reports throughput (jobs finished per minute, from the first submission to the last finish), the queue wait
(``started_at - queued_at``: median, p99, slowest) and the run time per job; writes
``bench/results/job_load.json``. Exits 1 if any check fails.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from service_common import Scratch, epoch, job_body, percentiles, save_run, scratch_deployment, shown

TERMINAL = {"succeeded", "failed", "cancelled"}

EXPECTED_ARTIFACTS = {"adapter", "metrics"}
"""What a default SparseGrad job (exact selection) stores."""


def submit_all(scratch: Scratch, n: int, max_steps: int, threads: int) -> list[str]:
    """Create ``n`` jobs over REST with ``threads`` clients; returns their ids (submission order)."""
    ids: list[str | None] = [None] * n
    done = Counter[str]()
    lock = threading.Lock()

    def submit(i: int) -> None:
        client = local.client if hasattr(local, "client") else None
        if client is None:
            client = local.client = scratch.dep.client(scratch.key)
        r = client.post("/v1/fine_tuning/jobs", json=job_body(scratch.file_id, max_steps, f"load-{i}"),
                        headers={"Idempotency-Key": f"job-load-{i}"})
        r.raise_for_status()
        ids[i] = r.json()["id"]
        with lock:
            done["n"] += 1
            if done["n"] % 100 == 0 or done["n"] == n:
                print(f"  submitted {done['n']}/{n}", flush=True)

    local = threading.local()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(submit, range(n)))
    assert all(ids), "a submission returned no id"
    return [i for i in ids if i is not None]


def wait_terminal(scratch: Scratch, ids: list[str], timeout: float, every: float = 10.0) -> dict[str, int]:
    """Poll SQL until every job is terminal (or ``timeout``); prints the status counts as it goes."""
    from sqlalchemy import func, select

    from sparsegrad_service.db import session_factory
    from sparsegrad_service.models import Job

    sessions = session_factory(scratch.pg_url)
    deadline, started, shown = time.monotonic() + timeout, time.monotonic(), -1.0
    while True:
        with sessions() as session:
            counts = dict(session.execute(select(Job.status, func.count()).where(Job.id.in_(ids))
                                          .group_by(Job.status)).all())
        finished = sum(v for k, v in counts.items() if k in TERMINAL)
        now = time.monotonic()
        if now - shown >= every or finished == len(ids):
            shown = now
            rate = finished / max(now - started, 1e-9) * 60
            print(f"  {now - started:6.0f} s  " + "  ".join(f"{k} {v}" for k, v in sorted(counts.items()))
                  + f"  ({rate:.0f} jobs/min)", flush=True)
        if finished == len(ids) or now > deadline:
            return counts
        time.sleep(1.0)


def check_jobs(scratch: Scratch, ids: list[str], max_steps: int) -> tuple[list[str], dict[str, Any]]:
    """The per-job checks of the module docstring; returns (problems, figures)."""
    from sqlalchemy import func, select

    from sparsegrad_service.db import session_factory
    from sparsegrad_service.models import Artifact, Job, JobEvent, MetricPoint

    problems: list[str] = []
    sessions = session_factory(scratch.pg_url)
    with sessions() as session:
        jobs = {j.id: j for j in session.scalars(select(Job).where(Job.id.in_(ids)))}
        closing: dict[str, list[str]] = {}
        attempts: Counter[str] = Counter()
        for job_id, message, data in session.execute(
                select(JobEvent.job_id, JobEvent.message, JobEvent.data).where(JobEvent.job_id.in_(ids))):
            if message.startswith("Attempt "):
                attempts[job_id] += 1
            if isinstance(data, dict) and data.get("status") in TERMINAL:
                closing.setdefault(job_id, []).append(str(data["status"]))
        kinds: dict[str, set[str]] = {}
        for job_id, kind in session.execute(select(Artifact.job_id, Artifact.kind).where(Artifact.job_id.in_(ids))):
            kinds.setdefault(job_id, set()).add(kind)
        losses = dict(session.execute(
            select(MetricPoint.job_id, func.count()).where(MetricPoint.job_id.in_(ids), MetricPoint.name == "loss")
            .group_by(MetricPoint.job_id)).all())
    waits, runs, finishes, created = [], [], [], []
    for job_id in ids:
        job = jobs.get(job_id)
        if job is None:
            problems.append(f"{job_id}: missing")
            continue
        if job.status not in TERMINAL:
            problems.append(f"{job_id}: still {job.status}")
            continue
        if job.attempts != 1 or attempts[job_id] != 1:
            problems.append(f"{job_id}: {job.attempts} attempts, {attempts[job_id]} attempt events")
        if closing.get(job_id) != [job.status]:
            problems.append(f"{job_id}: closing events {closing.get(job_id)} for status {job.status}")
        if job.status == "succeeded":
            if kinds.get(job_id) != EXPECTED_ARTIFACTS:
                problems.append(f"{job_id}: artifacts {sorted(kinds.get(job_id, ()))}")
            if losses.get(job_id) != max_steps:
                problems.append(f"{job_id}: {losses.get(job_id)} loss points for {max_steps} steps")
        else:
            problems.append(f"{job_id}: {job.status} ({(job.error or {}).get('message')})")
        created.append(epoch(job.created_at))
        if job.started_at is not None and job.finished_at is not None:
            waits.append(epoch(job.started_at) - epoch(job.queued_at or job.created_at))
            runs.append(epoch(job.finished_at) - epoch(job.started_at))
            finishes.append(epoch(job.finished_at))
    span = (max(finishes) - min(created)) if finishes and created else float("nan")
    figures = {
        "statuses": dict(Counter(j.status for j in jobs.values())),
        "throughput_jobs_per_min": round(len(finishes) / span * 60, 1) if finishes else 0.0,
        "first_submit_to_last_finish_s": round(span, 1),
        "queue_wait_s": percentiles(waits, digits=2),
        "run_time_s": percentiles(runs, digits=3),
    }
    return problems, figures


def run(jobs: int, workers: int, max_steps: int, submitters: int, timeout: float) -> tuple[list[str], dict[str, Any]]:
    """Deploy, submit ``jobs``, wait, check; returns (problems, figures)."""
    with scratch_deployment(train_examples=48) as scratch:
        for _ in range(workers):
            scratch.dep.start_worker()
        time.sleep(3)  # let the workers connect to the broker
        print(f"submitting {jobs} jobs ({submitters} clients)...", flush=True)
        t0 = time.monotonic()
        ids = submit_all(scratch, jobs, max_steps, submitters)
        submit_s = time.monotonic() - t0
        print(f"waiting for {workers} workers...", flush=True)
        wait_terminal(scratch, ids, timeout)
        problems, figures = check_jobs(scratch, ids, max_steps)
        alive = [w.poll() is None for w in scratch.dep.workers]
        if not all(alive):
            problems.append(f"worker processes alive at the end: {alive}")
        figures.update(jobs=jobs, workers=workers, max_steps=max_steps, submit_s=round(submit_s, 1),
                       submit_per_s=round(jobs / submit_s, 1))
        return problems, figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes.")
    parser.add_argument("--max-steps", type=int, default=3, help="Training steps of each job.")
    parser.add_argument("--submitters", type=int, default=8, help="Concurrent REST clients submitting jobs.")
    parser.add_argument("--timeout", type=float, default=3600, help="Seconds to wait for the jobs to finish.")
    parser.add_argument("--label", default="run", help="Key of this run in the JSON file.")
    args = parser.parse_args()

    started = datetime.now(UTC).isoformat(timespec="seconds")
    problems, figures = run(args.jobs, args.workers, args.max_steps, args.submitters, args.timeout)
    figures.update(started=started, cpu_count=os.cpu_count(), problems=problems[:50], problem_count=len(problems))
    w, r = figures["queue_wait_s"], figures["run_time_s"]
    print(f"\n{args.jobs} jobs, {args.workers} workers, {args.max_steps} steps each, {os.cpu_count()} CPU cores")
    print(f"statuses: {figures['statuses']}")
    print(f"throughput: {figures['throughput_jobs_per_min']} jobs/min "
          f"({figures['first_submit_to_last_finish_s']} s from first submission to last finish; "
          f"submission alone {figures['submit_s']} s, {figures['submit_per_s']} jobs/s)")
    if w["n"]:
        print(f"queue wait: median {w['p50']} s, p99 {w['p99']} s, slowest {w['max']} s")
        print(f"run time per job: median {r['p50']} s, p99 {r['p99']} s")
    path = save_run("job_load.json", args.label, figures,
                    {"every job": "terminal exactly once, one attempt, its artifacts and every step's loss"})
    print(f"wrote {shown(path)} (run '{args.label}')")
    if problems:
        print(f"{len(problems)} problems:\n  " + "\n  ".join(problems[:50]), file=sys.stderr)
        sys.exit(1)
    print("every job ended terminal exactly once")


if __name__ == "__main__":
    main()
