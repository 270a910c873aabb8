"""The job page in a real browser against a real deployment: live charts, event log and method insight of
a running SparseGrad job; pause, resume and cancel from the page; a succeeded job's adapter and checkpoint models
downloaded through the page (checksums equal to the API's), its spec, results and a merged model requested; a job
continuing from one of its checkpoints shows its lineage."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from service.conftest import Deployment
from support.endpoints import wait_for

from .conftest import SCREENSHOTS, screenshot

# Points drawn by a series: its circles when it has them (<= 200 points), else the vertices of its path.
PLOTTED = """(selector) => {
  const chart = document.querySelector(selector);
  if (!chart) return 0;
  const circles = chart.querySelectorAll("circle.chart-point").length;
  const paths = [...chart.querySelectorAll("path.chart-line")];
  const vertices = paths.reduce((n, p) => n + ((p.getAttribute("d") || "").match(/[ML]/g) || []).length, 0);
  return Math.max(circles, vertices);
}"""


@pytest.fixture(scope="module")
def api(dashboard_deployment: Deployment) -> Iterator[tuple[str, httpx.Client]]:
    key = dashboard_deployment.create_key("dashboard-job")
    with dashboard_deployment.client(key) as client:
        yield key, client


@pytest.fixture(scope="module")
def training_file(api: tuple[str, httpx.Client], sst2_jsonl: Path) -> str:
    _, client = api
    with open(sst2_jsonl, "rb") as f:
        r = client.post("/v1/files", files={"file": ("sst2.jsonl", f)}, data={"purpose": "fine-tune"})
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


SPARSEGRAD = {"type": "sparsegrad", "sparsegrad": {"density": 0.05, "calibration_steps": 2}}


def create_job(client: httpx.Client, training_file: str, method: dict[str, Any] | None = None,
               **hyper: Any) -> dict[str, Any]:
    hp = {"batch_size": 8, "max_seq_length": 32, "learning_rate": 1e-3, **hyper}
    body = {"model": "tiny-bert", "training_file": training_file, "hyperparameters": hp,
            "method": method or SPARSEGRAD, "validation_split": 0.2}  # 24 of the 120 examples: enough to evaluate
    r = client.post("/v1/fine_tuning/jobs", json=body)
    assert r.status_code == 200, r.text
    return dict(r.json())


def job_status(client: httpx.Client, job_id: str) -> dict[str, Any]:
    return dict(client.get(f"/v1/fine_tuning/jobs/{job_id}").json())


def open_job(page: Any, dep: Deployment, key: str, job_id: str) -> list[str]:
    """Sign in (the key in session storage) and open the job's page; returns the console errors, live."""
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.add_init_script(f"sessionStorage.setItem('sparsegrad.apiKey', {json.dumps(key)})")
    page.goto(f"{dep.url}/#/jobs/{job_id}")
    page.wait_for_selector("#chart-loss svg")
    return errors


def status_shown(page: Any, status: str, timeout_s: float = 60) -> None:
    page.wait_for_selector(f".job-badge .status-{status}", timeout=timeout_s * 1000)


def plotted(page: Any, selector: str) -> int:
    return int(page.evaluate(PLOTTED, selector))


def test_running_sparsegrad_job_is_watched_live_and_paused_resumed_cancelled_from_the_page(
    page: Any, dashboard_deployment: Deployment, api: tuple[str, httpx.Client], training_file: str,
) -> None:
    key, client = api
    job = create_job(client, training_file, max_steps=4000, checkpoint_every=20, original_share_every=5,
                     eval_every=40)
    wait_for(lambda: job_status(client, job["id"])["step"] >= 10, 120, "training to pass step 10", dashboard_deployment)
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    console_errors = open_job(page, dashboard_deployment, key, job["id"])
    status_shown(page, "running")

    # charts: loss points, growing live; the spectra per projection kind; the top-k energy shares
    page.wait_for_function(f"() => ({PLOTTED})('#chart-loss') >= 10", timeout=20_000)
    first = plotted(page, "#chart-loss")
    page.wait_for_function(f"() => ({PLOTTED})('#chart-loss') > {first}", timeout=20_000)
    for chart in ("#chart-lr", "#chart-step_time", "#chart-throughput", "#chart-memory"):
        assert plotted(page, chart) >= 5, chart
    page.wait_for_function(f"() => ({PLOTTED})('#chart-eval') >= 1", timeout=30_000)  # before-training eval
    page.wait_for_selector("#insight .spectrum-card")  # from the insight route: the job object has no spectra
    assert plotted(page, "#insight .spectrum-card") >= 10
    assert any(url.endswith(f"/v1/fine_tuning/jobs/{job['id']}/insight") for url in requested)
    assert "spectra" not in (job_status(client, job["id"])["summary"] or {})
    page.wait_for_selector("#chart-energy [data-series='original basis, same k'] circle", timeout=20_000)
    page.wait_for_function(f"() => ({PLOTTED})(\"#chart-energy [data-series='SparseGrad basis (top-k)']\") >= 5",
                           timeout=20_000)  # the series grows live: wait for it, do not sample it once
    assert (page.locator("#chart-loss svg title").first.text_content() or "").startswith("Loss vs step")

    # the event log streams: lines now, more later
    page.wait_for_function("() => document.querySelectorAll('.event-log li').length >= 3")
    lines = page.locator(".event-log li").count()
    page.wait_for_function(f"() => document.querySelectorAll('.event-log li').length > {lines}", timeout=20_000)
    assert page.locator(".event-log li[data-type='phase']").count() >= 1
    screenshot(page, "job_running")
    page.locator("#insight").screenshot(path=str(SCREENSHOTS / "method_insight.png"))

    # pause (the job checkpoints and stops), resume (queued again, then running), cancel
    assert page.locator("#resume-job").is_disabled()
    page.click("#pause-job")
    status_shown(page, "paused")
    assert page.locator("#resume-job").is_enabled() and page.locator("#pause-job").is_disabled()
    page.wait_for_function("() => document.querySelectorAll('#checkpoints tbody tr').length >= 1", timeout=15_000)
    paused_step = job_status(client, job["id"])["step"]
    page.click("#resume-job")
    status_shown(page, "running")
    wait_for(lambda: job_status(client, job["id"])["step"] > paused_step + 3, 60, "training to continue")
    page.click("#cancel-job")
    status_shown(page, "cancelled")
    assert page.locator("#cancel-job").is_disabled()
    page.locator(".event-log li", has_text="Cancellation requested").wait_for()
    assert not console_errors


def test_a_lora_job_cancelled_from_its_page_and_a_409_is_shown(
    page: Any, dashboard_deployment: Deployment, api: tuple[str, httpx.Client], training_file: str,
) -> None:
    key, client = api
    job = create_job(client, training_file, {"type": "lora", "lora": {"rank": 4}}, max_steps=4000)
    open_job(page, dashboard_deployment, key, job["id"])
    assert "applies to SparseGrad jobs" in page.locator("#insight").inner_text()
    assert "LoRA · rank 4" in page.locator(".job-header").inner_text()
    page.click("#cancel-job")
    status_shown(page, "cancelled")
    assert job_status(client, job["id"])["status"] == "cancelled"
    assert page.locator("#pause-job").is_disabled() and page.locator("#resume-job").is_disabled()
    # a request the job's status does not allow: the API's message is shown as it is
    page.evaluate("() => { const b = document.getElementById('resume-job'); b.disabled = false; b.click(); }")
    alert = page.locator("#job-action-error")
    alert.wait_for()
    assert f"Cannot resume job {job['id']}: its status is 'cancelled'." in alert.inner_text()


def test_succeeded_job_adapter_downloads_with_the_apis_checksum(
    page: Any, dashboard_deployment: Deployment, api: tuple[str, httpx.Client], training_file: str,
) -> None:
    key, client = api
    job = create_job(client, training_file, max_steps=12, checkpoint_every=5)
    done = wait_for(lambda: (s := job_status(client, job["id"]))["status"] in ("succeeded", "failed") and s, 120,
                    "the short job to finish", dashboard_deployment)
    assert done["status"] == "succeeded", done
    artifacts = client.get(f"/v1/fine_tuning/jobs/{job['id']}/artifacts").json()["data"]
    adapter = next(a for a in artifacts if a["kind"] == "adapter")

    console_errors = open_job(page, dashboard_deployment, key, job["id"])
    status_shown(page, "succeeded")
    row = page.locator("#artifacts tbody tr", has_text=adapter["filename"])
    assert adapter["sha256"] in row.inner_text()
    with page.expect_download() as info:
        row.get_by_role("button", name="Download").click()
    download = info.value
    assert download.suggested_filename == adapter["filename"]
    data = Path(download.path()).read_bytes()
    assert len(data) == adapter["bytes"]
    assert hashlib.sha256(data).hexdigest() == adapter["sha256"]
    row.get_by_text("checksum verified").wait_for()

    # the spec is the request body that reproduces the job; the results compare before and after
    spec = json.loads(page.locator("#spec pre").inner_text())
    assert spec["model"] == "tiny-bert" and spec["training_file"] == training_file
    assert spec["method"]["sparsegrad"]["density"] == 0.05 and spec["hyperparameters"]["max_steps"] == 12
    page.click("#copy-spec")
    page.locator(".toast", has_text="Job spec copied").wait_for()
    results = page.locator("#summary").inner_text()
    assert "accuracy" in results and "Trainable parameters" in results
    assert plotted(page, "#chart-loss") >= 12
    page.wait_for_selector("#insight .spectrum-card svg")
    # the succeeded job keeps its final step and newest checkpoint as models (SPARSEGRAD_KEEP_FINISHED_CHECKPOINTS
    # defaults to 2): named as OpenAI names them, downloadable with the API's checksum
    model = done["fine_tuned_model"]
    checkpoints = client.get(f"/v1/fine_tuning/jobs/{job['id']}/checkpoints").json()["data"]
    assert [c["step_number"] for c in checkpoints] == [12, 10]
    final = page.locator("#checkpoints tbody tr", has_text=f"{model}:ckpt-step-12")
    final.wait_for()
    assert page.locator("#checkpoints tbody tr", has_text=f"{model}:ckpt-step-10").count() == 1
    with page.expect_download() as info:
        final.get_by_role("button", name="Download").click()
    data = Path(info.value.path()).read_bytes()
    assert hashlib.sha256(data).hexdigest() == checkpoints[0]["sha256"] and len(data) == checkpoints[0]["bytes"]
    final.get_by_text("checksum verified").wait_for()
    screenshot(page, "job_succeeded")


    # readable on a phone: nothing wider than the screen
    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_timeout(300)
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 391
    screenshot(page, "job_phone")
    page.set_viewport_size({"width": 1280, "height": 860})

    # a merged model on request: a worker merges the adapter, the page lists the new archive
    page.click("#merge-button")
    page.wait_for_selector("#artifacts tbody tr[data-kind='merged_model'], #artifacts button[data-kind='merged_model']",
                           timeout=90_000)
    assert page.locator("#merge-button").count() == 0

    # a job continuing from a checkpoint shows where it starts from, linking back to this job
    child = client.post("/v1/fine_tuning/jobs", json={"model": f"{model}:ckpt-step-10", "training_file": training_file,
                                                     "hyperparameters": {"max_steps": 2}})
    assert child.status_code == 200, child.text
    page.goto(f"{dashboard_deployment.url}/#/jobs/{child.json()['id']}")
    lineage = page.locator(".lineage li")
    lineage.first.wait_for()
    assert [lineage.nth(i).inner_text() for i in range(lineage.count())] == [
        "tiny-bert (base model)", f"{model}:ckpt-step-10 ({job['id']}, step 10)"]
    assert page.locator(f".lineage a[href='#/jobs/{job['id']}']").count() == 1
    assert not console_errors
