"""The job page of a calibrating SparseGrad job, in a real browser against a real deployment: the phase names the
calibration pass and the ETA counts down to the end of calibration, live from the job's events."""

from __future__ import annotations

from typing import Any

import httpx
from service.conftest import Deployment
from support.endpoints import wait_for

from .test_dashboard_job import api, create_job, job_status, open_job, status_shown, training_file

__all__ = ["api", "training_file"]  # module fixtures shared with the job page tests

FACT = """(name) => {
  const term = [...document.querySelectorAll(".job-facts dt")].find((dt) => dt.textContent === name);
  return term ? term.nextElementSibling.textContent : "";
}"""


def test_a_calibrating_job_shows_its_pass_and_the_time_left(
    page: Any, dashboard_deployment: Deployment, api: tuple[str, httpx.Client], training_file: str,
) -> None:
    key, client = api
    # 2 x 1000 backward passes of 64 x 128 tokens: calibration lasts long enough to watch, then the job is cancelled
    method = {"type": "sparsegrad", "sparsegrad": {"density": 0.05, "calibration_steps": 1000, "selection": "block"}}
    job = create_job(client, training_file, method, batch_size=64, max_seq_length=128, max_steps=2)
    try:
        wait_for(lambda: job_status(client, job["id"])["phase"] == "calibrating", 60, "calibration to start",
                 dashboard_deployment)
        open_job(page, dashboard_deployment, key, job["id"])
        status_shown(page, "running")
        page.wait_for_function(f"() => /^calibrating · pass \\d+ of 2000$/.test(({FACT})('Phase'))", timeout=30_000)
        first = int(page.evaluate(FACT, "Phase").split()[-3])
        eta = page.evaluate(FACT, "ETA")
        assert eta.endswith("(to the end of calibration)") and ("s" in eta or eta.startswith("any moment")), eta
        page.wait_for_function(f"() => Number(({FACT})('Phase').split(' ').at(-3)) > {first}", timeout=30_000)
        assert page.locator(".event-log li", has_text="Calibration pass").count() >= 1
    finally:
        client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel")
    wait_for(lambda: job_status(client, job["id"])["status"] == "cancelled", 60, "the job to cancel", dashboard_deployment)
