"""The API under a bounded mixed load: reads, job creation, cancellation and SSE streams at once.

    .venv/bin/python bench/api_mixed_load.py [--duration 60] [--connections 50] [--sse 10] [--api-workers 1]

A scratch deployment (``service_common``: PostgreSQL, Redis, uvicorn, the tiny random BERT) with one worker
training a long "live" job, so SSE streams carry real events all along. ``--connections`` clients talk to the
API on loopback until ``--duration`` seconds have passed, each over its own connection:

* ``--sse`` of them follow the live job's event stream, each for 2–8 s, then reconnect with ``Last-Event-ID``
  (every event must arrive exactly once per client, in order);
* the others loop over a weighted mix: ``GET /v1/fine_tuning/jobs/{id}`` (the live job or one created
  earlier), the job list, a job's events, its metrics, ``POST /v1/fine_tuning/jobs`` and cancelling a job
  that client created.

Reports per operation: requests, req/s, p50/p90/p99/max latency (ms) and status classes; any 5xx or
transport error fails the run (exit 1), as does an SSE gap or duplicate, or a traceback in the API log.
The load generator (Python, asyncio + httpx) shares the machine's cores with the API, PostgreSQL and the
worker, so latencies include its own scheduling. Writes ``bench/results/api_mixed_load.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from service_common import (
    Scratch,
    cpu_delta,
    job_body,
    machine_busy,
    machine_jiffies,
    percentiles,
    pids_named,
    proc_cpu,
    process_tree,
    save_run,
    scratch_deployment,
    shown,
)

MIX = {"get_job": 55, "list_jobs": 10, "list_events": 10, "get_metrics": 5, "create_job": 12, "cancel_job": 8}


@dataclass
class Tally:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    errors: list[str] = field(default_factory=list)
    sse_connections: int = 0
    sse_received: list[list[int]] = field(default_factory=list)
    """Per SSE client, the seqs it received over all its reconnections, in order."""

    def record(self, op: str, started: float, response: httpx.Response | None, error: str | None = None) -> None:
        self.latencies[op].append(time.perf_counter() - started)
        if response is not None:
            self.statuses[op][f"{response.status_code // 100}xx"] += 1
            if response.status_code >= 500:
                self.errors.append(f"{op}: {response.status_code} {response.text[:200]}")
        else:
            self.statuses[op]["transport_error"] += 1
            self.errors.append(f"{op}: {error}")


async def request_loop(client: httpx.AsyncClient, scratch: Scratch, live_job: str, known: list[str],
                       tally: Tally, deadline: float, rng: random.Random) -> None:
    mine: list[str] = []
    ops, weights = list(MIX), list(MIX.values())
    n = 0
    while time.monotonic() < deadline:
        op = rng.choices(ops, weights)[0]
        job = live_job if rng.random() < 0.5 else rng.choice(known)
        if op == "cancel_job" and not mine:
            op = "create_job"
        n += 1
        started = time.perf_counter()
        try:
            if op == "get_job":
                r = await client.get(f"/v1/fine_tuning/jobs/{job}")
            elif op == "list_jobs":
                r = await client.get("/v1/fine_tuning/jobs", params={"limit": 20})
            elif op == "list_events":
                r = await client.get(f"/v1/fine_tuning/jobs/{job}/events", params={"limit": 20})
            elif op == "get_metrics":
                r = await client.get(f"/v1/fine_tuning/jobs/{job}/metrics")
            elif op == "create_job":
                body = job_body(scratch.file_id, 20, f"mixed-{id(mine)}-{n}")
                r = await client.post("/v1/fine_tuning/jobs", json=body)
                if r.status_code == 200:
                    mine.append(r.json()["id"])
            else:
                r = await client.post(f"/v1/fine_tuning/jobs/{mine.pop(rng.randrange(len(mine)))}/cancel")
        except httpx.HTTPError as exc:
            tally.record(op, started, None, repr(exc))
            continue
        tally.record(op, started, r)


async def sse_loop(client: httpx.AsyncClient, live_job: str, tally: Tally, deadline: float,
                   rng: random.Random) -> None:
    """Follow the live job's stream in 2–8 s sessions, resuming with Last-Event-ID each time."""
    last_id: int | None = None
    received: list[int] = []
    tally.sse_received.append(received)
    while time.monotonic() < deadline:
        headers = {} if last_id is None else {"Last-Event-ID": str(last_id)}
        until = min(deadline, time.monotonic() + rng.uniform(2, 8))
        started = time.perf_counter()
        try:
            async with client.stream("GET", f"/v1/fine_tuning/jobs/{live_job}/events/stream",
                                     headers=headers) as response:
                tally.record("sse_open", started, response)
                if response.status_code != 200:
                    await asyncio.sleep(0.5)
                    continue
                tally.sse_connections += 1
                lines = response.aiter_lines()
                while time.monotonic() < until:
                    try:
                        line = await asyncio.wait_for(anext(lines), timeout=max(until - time.monotonic(), 0.01))
                    except (TimeoutError, StopAsyncIteration):
                        break
                    if line.startswith("id:"):
                        last_id = int(line[3:].strip())
                        received.append(last_id)
        except httpx.HTTPError as exc:
            tally.record("sse_open", started, None, repr(exc))


def sse_problems(received: list[list[int]], all_seqs: list[int]) -> list[str]:
    """Each client must have received every event of the job, once and in order, up to its last one
    (event seqs are global, so a job's own seqs are not consecutive: compare with the job's full list)."""
    problems = []
    for i, got in enumerate(received):
        if not got:
            continue
        expected = all_seqs[:all_seqs.index(got[-1]) + 1] if got[-1] in all_seqs else all_seqs
        if got != expected:
            missing = sorted(set(expected) - set(got))[:5]
            problems.append(f"SSE client {i}: {len(got)} events for {len(expected)}, "
                            f"{len(got) - len(set(got))} duplicates, missing e.g. {missing}")
    return problems


async def drive(scratch: Scratch, live_job: str, known: list[str], duration: float, connections: int,
                sse: int, seed: int) -> Tally:
    tally = Tally()
    deadline = time.monotonic() + duration
    headers = {"Authorization": f"Bearer {scratch.key}"}
    timeout = httpx.Timeout(30, connect=10)
    clients = [httpx.AsyncClient(base_url=scratch.dep.url, headers=headers, timeout=timeout,
                                 limits=httpx.Limits(max_connections=1)) for _ in range(connections)]
    try:
        tasks = [sse_loop(c, live_job, tally, deadline, random.Random(seed + i)) for i, c in enumerate(clients[:sse])]
        tasks += [request_loop(c, scratch, live_job, known, tally, deadline, random.Random(seed + i))
                  for i, c in enumerate(clients[sse:], start=sse)]
        await asyncio.gather(*tasks)
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    return tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=60, help="Seconds of load (bounded; at least 60 "
                        "for the published figure).")
    parser.add_argument("--connections", type=int, default=50, help="Concurrent clients, one connection each.")
    parser.add_argument("--sse", type=int, default=10, help="How many of them follow SSE streams.")
    parser.add_argument("--api-workers", type=int, default=1, help="uvicorn --workers.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--label", default="run", help="Key of this run in the JSON file.")
    args = parser.parse_args()
    if not 0 <= args.sse < args.connections:
        sys.exit("--sse must be at least 0 and less than --connections")

    out: dict[str, Any] = {"label": args.label, "duration_s": args.duration, "connections": args.connections,
                           "sse_clients": args.sse, "api_workers": args.api_workers, "cpu_count": os.cpu_count(),
                           "mix": MIX, "started": datetime.now(UTC).isoformat(timespec="seconds")}
    with scratch_deployment(api_workers=args.api_workers) as scratch:
        dep = scratch.dep
        worker = dep.start_worker()
        os.setpriority(os.PRIO_PGRP, worker.pid, 19)  # as if on its own machine: the API host comes first
        with dep.client(scratch.key) as c:
            live = c.post("/v1/fine_tuning/jobs", json=job_body(scratch.file_id, 1_000_000, "live",
                                                                 checkpoint_every=1000)).json()["id"]
            known = [c.post("/v1/fine_tuning/jobs", json=job_body(scratch.file_id, 20, f"known-{i}")).json()["id"]
                     for i in range(10)]
            deadline = time.monotonic() + 120
            while c.get(f"/v1/fine_tuning/jobs/{live}").json()["status"] != "running":
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the live job never started\n{dep.log_tail()}")
                time.sleep(0.5)
        print(f"{args.duration:.0f} s of mixed load, {args.connections} connections ({args.sse} SSE)...", flush=True)
        assert dep.api is not None
        api_pid = dep.api.pid
        groups = {"api": lambda: process_tree(api_pid), "postgres": lambda: pids_named("postgres"),
                  "worker": lambda: process_tree(worker.pid), "load_generator": lambda: [os.getpid()]}
        before = {name: proc_cpu(pids()) for name, pids in groups.items()}
        machine_before = machine_jiffies()
        t0 = time.monotonic()
        tally = asyncio.run(drive(scratch, live, known, args.duration, args.connections, args.sse, args.seed))
        wall = time.monotonic() - t0
        cores = os.cpu_count() or 1
        cpu = {name: round(cpu_delta(before[name], proc_cpu(pids())) / (wall * cores), 3)
               for name, pids in groups.items()}
        cpu["machine_busy"] = machine_busy(machine_before, machine_jiffies())
        with dep.client(scratch.key) as c:
            c.post(f"/v1/fine_tuning/jobs/{live}/cancel").raise_for_status()
        from sqlalchemy import select

        from sparsegrad_service.db import session_factory
        from sparsegrad_service.models import JobEvent

        with session_factory(scratch.pg_url)() as session:
            all_seqs = list(session.scalars(select(JobEvent.seq).where(JobEvent.job_id == live)
                                            .order_by(JobEvent.seq)))
        sse_issues = sse_problems(tally.sse_received, all_seqs)
        api_log = (dep.root / "api.log").read_text(errors="replace")
        tracebacks = api_log.count("Traceback (most recent call last)")

    ops = {}
    for op, values in sorted(tally.latencies.items()):
        ops[op] = {"requests": len(values), "req_per_s": round(len(values) / wall, 1),
                   "ms": percentiles(values, scale=1000, digits=1), "statuses": dict(tally.statuses[op])}
    requests = sum(len(v) for op, v in tally.latencies.items() if op != "sse_open")
    all_ms = percentiles([x for op, v in tally.latencies.items() if op != "sse_open" for x in v], 1000, 1)
    out.update(wall_s=round(wall, 1), operations=ops, requests=requests, req_per_s=round(requests / wall, 1),
               all_requests_ms=all_ms, server_errors=len(tally.errors), errors=tally.errors[:20],
               sse={"connections": tally.sse_connections, "events": sum(map(len, tally.sse_received)),
                    "job_events": len(all_seqs), "gaps_or_duplicates": sse_issues[:20]},
               api_log_tracebacks=tracebacks, cpu_share_of_machine=cpu)

    print(f"\n{out['label']}: {wall:.0f} s, {args.connections} connections ({args.sse} SSE), "
          f"{os.cpu_count()} CPU cores shared by the load generator, API, PostgreSQL and a training worker")
    print(f"{'operation':<14}{'requests':>10}{'req/s':>8}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}  statuses")
    for op, r in ops.items():
        ms = r["ms"]
        print(f"{op:<14}{r['requests']:>10}{r['req_per_s']:>8.1f}{ms['p50']:>9.1f}{ms['p90']:>9.1f}{ms['p99']:>9.1f}"
              f"{ms['max']:>9.1f}  {r['statuses']}")
    print(f"{'all requests':<14}{requests:>10}{out['req_per_s']:>8.1f}{all_ms['p50']:>9.1f}{all_ms['p90']:>9.1f}"
          f"{all_ms['p99']:>9.1f}{all_ms['max']:>9.1f}")
    print(f"SSE: {tally.sse_connections} streams opened, {out['sse']['events']} events received over "
          f"{args.sse} clients (the job wrote {len(all_seqs)}), {len(sse_issues)} clients with gaps or duplicates")
    print("CPU share of the machine: " + ", ".join(f"{k} {v:.0%}" for k, v in cpu.items())
          + " (PostgreSQL backends that closed meanwhile are not counted)")
    print(f"5xx or transport errors: {len(tally.errors)}; tracebacks in the API log: {tracebacks}")
    path = save_run("api_mixed_load.json", args.label, out,
                    {"server_errors": "0", "sse": "no gaps or duplicates", "p99": "reported"})
    print(f"wrote {shown(path)} (run '{args.label}')")
    if tally.errors or sse_issues or tracebacks or not out["sse"]["events"]:
        for line in tally.errors[:20] + sse_issues[:20]:
            print("  " + line, file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
