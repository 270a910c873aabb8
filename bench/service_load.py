"""Service numbers against a real deployment on this machine: API throughput and latency under ``wrk``,
submit → worker start latency, and metric emitted → seen on the SSE stream latency.

    .venv/bin/python bench/service_load.py [--duration 20] [--connections 50] [--api-workers 1] [--label NAME]

It creates a scratch PostgreSQL database (``SPARSEGRAD_TEST_PG``, default postgres@127.0.0.1:5432), runs the
migrations, uses Redis (``SPARSEGRAD_TEST_REDIS``, default 127.0.0.1:6379/15), builds the tiny random
``tiny-bert`` model of the tests, starts the API under uvicorn (``--api-workers`` processes) and, for the
latency part, one remote Celery worker exactly like ``tests/service/conftest.py`` (whose ``Deployment`` it
reuses). Everything is stopped and the database dropped at the end.

1. ``wrk`` (Debian's; loopback, bounded duration) on ``GET /v1/fine_tuning/jobs/{id}`` and on
   ``POST /v1/fine_tuning/jobs`` (every request its own Idempotency-Key and body; the API enqueues on a queue
   no worker listens to, and these jobs are cancelled in SQL afterwards), with a Lua script for the
   Authorization header, the bodies and the latency percentiles.
2. ``--jobs`` tiny jobs one after another with the worker: ``started_at - created_at`` (server timestamps in
   SQL) and the first "Attempt … started" event's ``created_at - created_at``.
3. While each runs, an SSE client follows its stream; for every event written after the stream opened, the
   time it was received minus its ``created_at`` (SQL) — ``metrics`` events separately.

Prints a table and writes ``bench/results/service_load.json`` (runs keyed by ``--label``, merged with what
the file already holds).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from service_common import (
    Deployment,
    cpu_delta,
    epoch,
    job_body,
    pids_named,
    proc_cpu,
    process_tree,
    save_run,
    scratch_deployment,
    shown,
    start_api,
    stop_api,
)

WRK_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"errors_connect":%d,' ..
    '"errors_read":%d,"errors_write":%d,"errors_status":%d,"errors_timeout":%d,"p50_us":%d,"p75_us":%d,' ..
    '"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n', summary.requests, summary.duration,
    summary.bytes, e.connect, e.read, e.write, e.status, e.timeout, latency:percentile(50),
    latency:percentile(75), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"""


def lua_get(key: str) -> str:
    return f'wrk.method = "GET"\nwrk.headers["Authorization"] = "Bearer {key}"\n' + WRK_DONE


def lua_post(key: str, body_template: str, run: str) -> str:
    """Each thread numbers its requests; the Idempotency-Key and the body's metadata carry that number."""
    return f"""
local next_id = 1
function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
end
local n = 0
local template = [[{body_template}]]
function request()
  n = n + 1
  local id = string.format("{run}-%d-%d", tid, n)
  local body = string.gsub(template, "@ID@", id)
  return wrk.format("POST", "/v1/fine_tuning/jobs", {{["Authorization"] = "Bearer {key}",
    ["Content-Type"] = "application/json", ["Idempotency-Key"] = id}}, body)
end
""" + WRK_DONE


def run_wrk(url: str, script: str, duration: int, connections: int, threads: int, api_pid: int,
            profile: Path | None = None) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    before = (resource.getrusage(resource.RUSAGE_CHILDREN), proc_cpu(process_tree(api_pid)),
              proc_cpu(pids_named("postgres")))
    spy = None
    if profile is not None:  # py-spy (pip install py-spy) samples the API process while wrk runs
        spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw",
                                "--nonblocking", "-o", str(profile), "--duration", str(duration), "--pid",
                                str(api_pid), "--subprocesses"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    started = time.monotonic()
    result = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s",
                             "--timeout", "10s", "-s", f.name, url], capture_output=True, text=True,
                            timeout=duration + 60)
    wall = time.monotonic() - started
    after = (resource.getrusage(resource.RUSAGE_CHILDREN), proc_cpu(process_tree(api_pid)),
             proc_cpu(pids_named("postgres")))
    os.unlink(f.name)
    if spy is not None:
        spy.wait(timeout=60)
    line = next((ln for ln in result.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    raw = json.loads(line.split(" ", 1)[1])
    cores = os.cpu_count() or 1
    wrk_cpu = (after[0].ru_utime + after[0].ru_stime) - (before[0].ru_utime + before[0].ru_stime)
    ok = raw["requests"] - raw["errors_status"]
    return {
        "requests": raw["requests"], "non_2xx": raw["errors_status"],
        "socket_errors": raw["errors_connect"] + raw["errors_read"] + raw["errors_write"] + raw["errors_timeout"],
        "req_per_s": round(raw["requests"] / (raw["duration_us"] / 1e6), 1),
        "ok_req_per_s": round(ok / (raw["duration_us"] / 1e6), 1),
        **{k.replace("_us", "_ms"): round(raw[k] / 1000, 2) for k in ("p50_us", "p75_us", "p90_us", "p99_us",
                                                                        "max_us", "mean_us")},
        "cpu_share_of_machine": {  # CPU seconds / (wall seconds × cores)
            "wrk": round(wrk_cpu / (wall * cores), 3),
            "api": round(cpu_delta(before[1], after[1]) / (wall * cores), 3),
            "postgres": round(cpu_delta(before[2], after[2]) / (wall * cores), 3),
        },
        "duration_s": round(raw["duration_us"] / 1e6, 2), "connections": connections, "wrk_threads": threads,
    }


class SseFollower(threading.Thread):
    """Reads a job's SSE stream, noting when each message arrived (wall clock)."""

    def __init__(self, client: httpx.Client, job_id: str) -> None:
        super().__init__(daemon=True)
        self.client, self.job_id = client, job_id
        self.opened = threading.Event()
        self.opened_at = 0.0
        self.received: list[tuple[int, str, float]] = []  # (seq, event type, time received)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.client.stream("GET", f"/v1/fine_tuning/jobs/{self.job_id}/events/stream",
                                    timeout=httpx.Timeout(300, connect=10)) as response:
                response.raise_for_status()
                self.opened_at = time.time()
                self.opened.set()
                current: dict[str, str] = {}
                for line in response.iter_lines():
                    now = time.time()
                    if not line:
                        if current.get("event") == "end":
                            return
                        if "id" in current:
                            self.received.append((int(current["id"]), current.get("event", ""), now))
                        current = {}
                        continue
                    if line.startswith(":"):
                        continue
                    key, _, value = line.partition(":")
                    current[key] = value[1:] if value.startswith(" ") else value
        except BaseException as exc:  # reported by the caller
            self.error = exc
        finally:
            self.opened.set()


def summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    return {"n": len(values), "median_s": round(statistics.median(values), 4), "max_s": round(max(values), 4),
            "min_s": round(min(values), 4)}


def latency_part(dep: Deployment, pg_url: str, key: str, training_file: str, jobs: int,
                 max_steps: int) -> dict[str, Any]:
    from sqlalchemy import select

    from sparsegrad_service.db import session_factory
    from sparsegrad_service.models import Job, JobEvent

    sessions = session_factory(pg_url)
    start_lat, attempt_lat, sse_all, sse_metrics = [], [], [], []
    per_job = []
    with dep.client(key) as client:
        for i in range(jobs):
            r = client.post("/v1/fine_tuning/jobs", json=job_body(training_file, max_steps, f"latency-{i}"))
            r.raise_for_status()
            job_id = r.json()["id"]
            follower = SseFollower(client, job_id)
            follower.start()
            follower.join(timeout=300)
            if follower.error is not None:
                raise RuntimeError(f"SSE of {job_id} failed: {follower.error!r}\n{dep.log_tail()}")
            with sessions() as session:
                job = session.scalar(select(Job).where(Job.id == job_id))
                assert job is not None
                events = {e.seq: e for e in session.scalars(select(JobEvent).where(JobEvent.job_id == job_id))}
            if job.started_at is None:
                raise RuntimeError(f"job {job_id} never started ({job.status})\n{dep.log_tail()}")
            created = epoch(job.created_at)
            start_lat.append(epoch(job.started_at) - created)
            attempt = min((e for e in events.values() if e.message.startswith("Attempt ")), key=lambda e: e.seq,
                          default=None)
            if attempt is not None:
                attempt_lat.append(epoch(attempt.created_at) - created)
            job_sse = []
            for seq, kind, received in follower.received:
                event = events.get(seq)
                if event is None or epoch(event.created_at) < follower.opened_at:
                    continue  # written before the stream opened: replayed, not live
                delay = received - epoch(event.created_at)
                job_sse.append(delay)
                if kind == "metrics":
                    sse_metrics.append(delay)
            sse_all.extend(job_sse)
            per_job.append({"job_id": job_id, "status": job.status, "start_s": round(start_lat[-1], 4),
                            "attempt_event_s": round(attempt_lat[-1], 4) if attempt is not None else None,
                            "live_events": len(job_sse)})
    return {"submit_to_started_at": summary(start_lat), "submit_to_attempt_event": summary(attempt_lat),
            "sse_metrics_event": summary(sse_metrics), "sse_any_event": summary(sse_all), "jobs": per_job,
            "max_steps": max_steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=20, help="Seconds of each wrk run.")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--api-workers", type=int, default=1, help="uvicorn --workers.")
    parser.add_argument("--jobs", type=int, default=5, help="Tiny jobs for the latency part.")
    parser.add_argument("--max-steps", type=int, default=300, help="Training steps of each tiny job.")
    parser.add_argument("--label", default="run", help="Key of this run in the JSON file.")
    parser.add_argument("--skip-latency", action="store_true", help="Only the wrk part.")
    parser.add_argument("--profile", type=Path, help="Folder for py-spy folded stacks of the API under wrk "
                        "(<route>.folded; needs py-spy in the venv).")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing: apt-get install -y wrk")

    from sqlalchemy import update

    from sparsegrad_service.db import session_factory
    from sparsegrad_service.enums import JobStatus
    from sparsegrad_service.models import Job

    out: dict[str, Any] = {"label": args.label, "api_workers": args.api_workers, "cpu_count": os.cpu_count(),
                           "started": datetime.now(UTC).isoformat(timespec="seconds")}
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    with scratch_deployment(api_workers=args.api_workers, unserved_queue=True) as scratch:
        dep, key, file_id = scratch.dep, scratch.key, scratch.file_id
        assert dep.api is not None
        with dep.client(key) as c:
            r = c.post("/v1/fine_tuning/jobs", json=job_body(file_id, 20, "get-target"))
            r.raise_for_status()
            job_id = r.json()["id"]
            assert c.get(f"/v1/fine_tuning/jobs/{job_id}").status_code == 200

        print(f"wrk GET job ({args.duration} s, {args.connections} connections)...", flush=True)
        out["get_job"] = run_wrk(f"{dep.url}/v1/fine_tuning/jobs/{job_id}", lua_get(key), args.duration,
                                 args.connections, args.wrk_threads, dep.api.pid,
                                 args.profile / "get_job.folded" if args.profile else None)
        template = json.dumps(job_body(file_id, 20, "@ID@"))
        print(f"wrk POST job ({args.duration} s, {args.connections} connections)...", flush=True)
        out["create_job"] = run_wrk(f"{dep.url}/v1/fine_tuning/jobs", lua_post(key, template, secrets.token_hex(3)),
                                    args.duration, args.connections, args.wrk_threads, dep.api.pid,
                                    args.profile / "create_job.folded" if args.profile else None)
        with session_factory(scratch.pg_url)() as session:  # nobody will run them: keep them from the worker
            created = session.execute(update(Job).where(Job.status == JobStatus.queued)
                                      .values(status=JobStatus.cancelled)).rowcount  # type: ignore[attr-defined]
            session.commit()
        out["create_job"]["jobs_created"] = created

        if not args.skip_latency:
            stop_api(dep)
            dep.env["SPARSEGRAD_TRAINING_QUEUE"] = scratch.served_queue
            start_api(dep, args.api_workers)
            dep.start_worker()
            time.sleep(3)  # let the worker connect to the broker
            print(f"{args.jobs} tiny jobs with one worker...", flush=True)
            out["latency"] = latency_part(dep, scratch.pg_url, key, file_id, args.jobs, args.max_steps)

    report(out)
    path = save_run("service_load.json", args.label, out,
                    {"get_job": ">= 1000 req/s, p99 <= 50 ms", "latencies": "<= 1 s"})
    print(f"wrote {shown(path)} (run '{args.label}')")


def report(out: dict[str, Any]) -> None:
    print(f"\n{out['label']}: uvicorn workers {out['api_workers']}, {out['cpu_count']} CPU cores "
          "(wrk, uvicorn and PostgreSQL share them)")
    print(f"{'route':<28}{'req/s':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'non-2xx':>9}"
          f"{'wrk CPU':>9}{'API CPU':>9}{'PG CPU':>9}")
    for name, route in (("get_job", "GET /v1/fine_tuning/jobs/{id}"), ("create_job", "POST /v1/fine_tuning/jobs")):
        r = out.get(name)
        if r:
            cpu = r["cpu_share_of_machine"]
            print(f"{route:<28}{r['req_per_s']:>9.0f}{r['p50_ms']:>9.1f}{r['p90_ms']:>9.1f}{r['p99_ms']:>9.1f}"
                  f"{r['non_2xx']:>9}{cpu['wrk']:>9.1%}{cpu['api']:>9.0%}{cpu['postgres']:>9.0%}")
    lat = out.get("latency")
    if lat:
        for key, what in (("submit_to_started_at", "submit → started_at"),
                          ("submit_to_attempt_event", "submit → 'Attempt … started'"),
                          ("sse_metrics_event", "metrics event → SSE client"),
                          ("sse_any_event", "any live event → SSE client")):
            s = lat[key]
            if s["n"]:
                print(f"{what:<34} median {s['median_s'] * 1000:8.1f} ms   max {s['max_s'] * 1000:8.1f} ms   "
                      f"(n={s['n']})")


if __name__ == "__main__":
    main()
