"""The API restarts while a job trains and an SSE client follows it: the client reconnects with
Last-Event-ID and, across both connections, sees every event of the job exactly once, in order; the
worker (which reaches the artifact store through the API) rides out the restart and the job succeeds."""

from __future__ import annotations

import signal
from pathlib import Path

from support.endpoints import wait_for
from support.sse import read_events

from .conftest import Deployment, tiny_job
from .test_end_to_end import job_status, upload


def test_sse_clients_resume_without_gaps_across_an_api_restart(deployment: Deployment, sst2_jsonl: Path) -> None:
    deployment.start_worker()
    key = deployment.create_key("acme")
    with deployment.client(key) as c:
        file_id = upload(c, sst2_jsonl)
        job = c.post("/v1/fine_tuning/jobs", json=tiny_job(file_id, max_steps=400, checkpoint_every=25)).json()
        stream = f"/v1/fine_tuning/jobs/{job['id']}/events/stream"
        wait_for(lambda: job_status(c, job["id"])["step"] >= 5, 120, "training to start", deployment)
        first = read_events(c, stream, timeout=120, stop_after=8)
        assert len(first) >= 8

        assert deployment.api is not None
        deployment.kill(deployment.api, signal.SIGTERM)
        deployment.start_api()  # same port, same database

        rest = read_events(c, stream, last_event_id=first[-1].id, timeout=120)
        assert rest and rest[-1].event == "end", rest[-3:]
        final = wait_for(lambda: (s := job_status(c, job["id"]))["status"] in ("succeeded", "failed") and s,
                         180, "the job to finish", deployment)
        assert final["status"] == "succeeded", final

        seen = [m.id for m in first + rest if m.event != "end"]  # every event but the last has its own id
        listed: list[str] = []
        after: str | None = None
        while True:
            page = c.get(f"/v1/fine_tuning/jobs/{job['id']}/events",
                         params={"order": "asc", "limit": 1000, **({"after": after} if after else {})}).json()
            listed += [e["id"] for e in page["data"]]
            if not page["has_more"]:
                break
            after = listed[-1]
        # SSE ids are the event sequence numbers; the listing's ids are "ftevent-<seq>".
        assert [f"ftevent-{i}" for i in seen] == listed  # every event once, in order, none lost in the restart
        assert len(seen) > len(first)
