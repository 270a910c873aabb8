"""The dashboard's sign-in, jobs list, new job form and compare page in headless Chromium against a real
deployment (PostgreSQL, Redis, the API, one worker training ``tiny-bert``).

The tests share one deployment and run in file order: the form test leaves the jobs that the jobs list and
compare tests watch.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from service.conftest import Deployment

from .conftest import screenshot

pytestmark = pytest.mark.timeout(300)

PHONE = {"width": 390, "height": 844}
TERMINAL = {"succeeded", "failed", "cancelled"}
LONG_STEPS = 300


@pytest.fixture(scope="module")
def tenant_key(dashboard_deployment: Deployment) -> str:
    return dashboard_deployment.create_key("dash-main")


@pytest.fixture(scope="module")
def shared() -> dict[str, Any]:
    """What one test leaves for the next (job ids)."""
    return {}


def sign_in(page: Any, dep: Deployment, key: str, route: str = "#/jobs") -> None:
    page.goto(f"{dep.url}/#/login")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector("h1:has-text('Fine-tuning jobs')")
    if route != "#/jobs":
        page.evaluate("route => { location.hash = route; }", route)


WIDEST = """() => [...document.querySelectorAll('body *')]
  .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1
    && e.parentElement.getBoundingClientRect().right <= window.innerWidth + 1)
  .slice(0, 8).map((e) => `${e.tagName.toLowerCase()}#${e.id}.${e.className} ${Math.round(e.getBoundingClientRect().right)}`)"""


def no_horizontal_overflow(page: Any) -> None:
    width = page.evaluate("() => [document.documentElement.scrollWidth, document.body.scrollWidth, window.innerWidth]")
    assert max(width[0], width[1]) <= width[2], f"horizontal overflow at phone width: {width} {page.evaluate(WIDEST)}"


def fill_job_form(page: Any, good_file: Path, max_steps: int = 20) -> None:
    """A tiny SparseGrad job on tiny-bert (the form's model list comes from /v1/models)."""
    page.set_input_files("#train-file", str(good_file))
    page.wait_for_selector("#train-file-status .upload-ok")
    page.select_option("#model", "tiny-bert")
    page.fill("#sg-density", "0.05")
    page.fill("#sg-calibration", "2")
    page.fill("#hp-batch_size", "8")
    page.fill("#hp-max_seq_length", "32")
    page.fill("#hp-max_steps", str(max_steps))
    page.fill("#hp-learning_rate", "1e-3")
    page.evaluate("() => { document.querySelector('details.more').open = true; }")
    page.fill("#validation-split", "0.2")  # 24 of the 120 examples: enough to evaluate


def test_sign_in_wrong_key_then_right_key_and_sign_out(page: Any, dashboard_deployment: Deployment,
                                                      tenant_key: str) -> None:
    dep = dashboard_deployment
    page.goto(f"{dep.url}/")
    page.wait_for_url("**/#/login")
    assert page.get_by_role("button", name="Sign out").is_hidden()
    page.get_by_label("API key").fill("sg-not-a-real-key")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector("#login-error:has-text('That key was not accepted')")
    assert page.get_attribute("#api-key", "aria-invalid") == "true"
    assert page.evaluate("() => sessionStorage.getItem('sparsegrad.apiKey')") is None
    screenshot(page, "login")

    page.get_by_label("API key").fill(tenant_key)
    page.keyboard.press("Enter")  # the form submits from the keyboard
    page.wait_for_selector("h1:has-text('Fine-tuning jobs')")
    assert page.evaluate("() => sessionStorage.getItem('sparsegrad.apiKey')") == tenant_key
    assert page.get_by_role("link", name="Jobs").get_attribute("aria-current") == "page"
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/#/login")
    assert page.evaluate("() => sessionStorage.getItem('sparsegrad.apiKey')") is None
    page.evaluate("() => { location.hash = '#/new'; }")  # signed out: every page asks for the key
    page.wait_for_url("**/#/login")


def test_new_job_upload_errors_inline_then_submit_double_click_makes_one_job(
        page: Any, dashboard_deployment: Deployment, tenant_key: str, sst2_jsonl: Path, tmp_path: Path,
        shared: dict[str, Any]) -> None:
    dep = dashboard_deployment
    bad = tmp_path / "bad_train.jsonl"
    rows = [{"text": "a fine film", "label": 1}, {"text": "dull", "label": 0}, {"label": 1}, {"text": "ok", "label": 0}]
    bad.write_text("\n".join(json.dumps(r) for r in rows) + "\n")

    sign_in(page, dep, tenant_key, "#/new")
    page.wait_for_selector("h1:has-text('New fine-tuning job')")
    page.wait_for_selector("#model option[value='tiny-bert']", state="attached")
    page.wait_for_selector("#sg-selection option[value='block']", state="attached")  # the contract's defaults came
    assert page.input_value("#hp-n_epochs") == "3" and page.input_value("#hp-batch_size") == "16"
    assert page.input_value("#sg-density") == "0.01" and page.is_checked("#method-sparsegrad")
    assert page.input_value("#sg-selection") == "dynamic" and page.input_value("#setting") == "peft"
    # the learning rate is left to each method's and setting's default, which the field shows
    assert page.input_value("#hp-learning_rate") == ""
    assert page.get_attribute("#hp-learning_rate", "placeholder") == "default 0.0003"
    page.select_option("#setting", "paper")
    assert page.get_attribute("#hp-learning_rate", "placeholder") == "default 0.0001"
    page.select_option("#setting", "peft")
    page.check("#compare-full")  # compared methods keep their own defaults
    assert page.get_attribute("#hp-learning_rate", "placeholder") == "default 0.0003 / 0.0001"
    page.uncheck("#compare-full")
    assert page.input_value("#seed") == "42" and page.input_value("#validation-split") == "0.1"
    assert "10% of the training file is held out when that is at least 20 examples" in page.inner_text("#valid-file-hint")
    assert page.is_hidden("#lora-rank")  # only the chosen method's parameters show
    page.check("#method-lora")
    assert page.is_visible("#lora-rank") and page.is_hidden("#sg-calibration")
    page.check("#method-sparsegrad")

    page.set_input_files("#train-file", str(bad))
    alert = page.wait_for_selector("#train-file-status [role=alert]")
    items = alert.query_selector_all("li")
    assert len(items) == 1 and "Line 3" in items[0].inner_text() and "text" in items[0].inner_text()
    assert page.get_attribute("#train-file", "aria-invalid") == "true"
    page.select_option("#model", "tiny-bert")
    screenshot(page, "new_job")

    fill_job_form(page, sst2_jsonl, max_steps=LONG_STEPS)  # runs long enough to be seen running
    page.fill("#hp-checkpoint_every", "100")
    assert "120 examples" in page.inner_text("#train-file-status")
    page.fill("#hp-batch_size", "0")  # a server 400 lands next to its field
    page.click("#submit-job")
    page.wait_for_selector("#hp-batch_size-error:not(:empty)")
    assert "batch_size" in page.inner_text("#hp-batch_size-error")
    page.fill("#hp-batch_size", "8")
    page.select_option("#sg-selection", "block")
    page.fill("#sg-recalibrate", "100")  # block selection cannot re-calibrate: said at the field
    page.click("#submit-job")
    page.wait_for_selector("#sg-recalibrate-error:not(:empty)")
    assert "needs selection 'dynamic'" in page.inner_text("#sg-recalibrate-error")
    page.fill("#sg-recalibrate", "")
    page.select_option("#sg-selection", "dynamic")

    with dep.client(tenant_key) as api:
        before = len(api.get("/v1/fine_tuning/jobs", params={"limit": 100}).json()["data"])
        page.dblclick("#submit-job")
        page.wait_for_url("**/#/jobs/ftjob*")
        job_id = page.url.rsplit("/", 1)[-1]
        time.sleep(1.0)  # a second request would have landed by now
        jobs = api.get("/v1/fine_tuning/jobs", params={"limit": 100}).json()["data"]
    assert len(jobs) == before + 1, [j["id"] for j in jobs]
    assert jobs[0]["id"] == job_id
    assert jobs[0]["method"]["sparsegrad"]["density"] == 0.05
    assert jobs[0]["hyperparameters"]["max_steps"] == LONG_STEPS and jobs[0]["hyperparameters"]["batch_size"] == 8
    assert jobs[0]["hyperparameters"]["checkpoint_every"] == 100

    # "Compare methods": one job per ticked method from the same spec, then the compare page.
    page.evaluate("() => { location.hash = '#/new'; }")
    page.wait_for_selector("#model option[value='tiny-bert']", state="attached")
    fill_job_form(page, sst2_jsonl)
    page.select_option("#setting", "peft")  # only the method and the head train: the curves differ
    page.check("#compare-sparsegrad")
    page.check("#compare-lora")
    page.fill("#lora-rank", "2")
    page.click("#compare-methods")
    page.wait_for_url("**/#/compare?ids=*")
    ids = page.url.split("ids=", 1)[1].split(",")
    assert len(ids) == 2
    with dep.client(tenant_key) as api:
        methods = [api.get(f"/v1/fine_tuning/jobs/{i}").json()["method"] for i in ids]
    assert [m["type"] for m in methods] == ["sparsegrad", "lora"]
    assert methods[1]["lora"]["rank"] == 2 and {m["setting"] for m in methods} == {"peft"}
    shared.update(first=job_id, compare=ids)


def test_jobs_list_goes_queued_running_succeeded(page: Any, dashboard_deployment: Deployment, tenant_key: str,
                                                 shared: dict[str, Any]) -> None:
    dep = dashboard_deployment
    watched = [shared["first"], *shared["compare"]]
    sign_in(page, dep, tenant_key)
    seen: dict[str, list[str]] = {i: [] for i in watched}
    timeline: list[tuple[float, str, str]] = []  # for the failure message
    start = time.monotonic()
    deadline = start + 150
    shot = False
    while time.monotonic() < deadline:
        for job_id in watched:
            badge = page.query_selector(f"tr[data-job-id='{job_id}'] .status")
            text = badge.inner_text().strip() if badge else None
            if text and (not seen[job_id] or seen[job_id][-1] != text):
                seen[job_id].append(text)
                timeline.append((round(time.monotonic() - start, 1), job_id[-6:], text))
        if not shot and seen[shared["first"]][-1:] == ["running"]:
            page.wait_for_selector(f"tr[data-job-id='{shared['first']}'] td[data-label=Phase]:has-text('training')",
                                   timeout=10_000)  # the progress bar and ETA are filled in
            screenshot(page, "jobs")  # one running, the others queued behind it
            shot = True
        if all(s and s[-1] in TERMINAL for s in seen.values()):
            break
        time.sleep(0.1)
    assert all(s[-1] == "succeeded" for s in seen.values()), seen
    last = seen[shared["compare"][1]]  # two jobs ahead of it on the one worker: it waited in the queue
    assert last[0] == "queued", seen
    assert "running" in seen[shared["first"]], timeline
    print("status timeline:", timeline)
    row = page.query_selector(f"tr[data-job-id='{shared['first']}']")
    assert row is not None
    assert row.query_selector("progress").get_attribute("value") == "100"
    assert "SparseGrad 5%" in row.inner_text() and "tiny-bert" in row.inner_text()
    assert "LoRA r=2" in page.inner_text(f"tr[data-job-id='{shared['compare'][1]}']")

    page.select_option("#status-filter", "failed")
    page.wait_for_selector("text=No failed jobs.")
    page.select_option("#status-filter", "succeeded")
    page.wait_for_function("n => document.querySelectorAll('#jobs-table tbody tr').length === n", arg=3)

    # ticking jobs feeds the compare page
    page.select_option("#status-filter", "")
    for job_id in shared["compare"]:
        page.check(f"tr[data-job-id='{job_id}'] input[type=checkbox]")
    page.get_by_role("button", name="Compare selected (2)").click()
    page.wait_for_url("**/#/compare?ids=*")
    assert set(page.url.split("ids=", 1)[1].split(",")) == set(shared["compare"])

    page.set_viewport_size(PHONE)
    page.evaluate("() => { location.hash = '#/jobs'; }")
    page.wait_for_selector(f"tr[data-job-id='{shared['first']}']")
    no_horizontal_overflow(page)
    screenshot(page, "jobs_phone")


def test_jobs_list_paging(page: Any, dashboard_deployment: Deployment) -> None:
    dep = dashboard_deployment
    key = dep.create_key("dash-pager")
    with dep.client(key) as api:
        upload = api.post("/v1/files", data={"purpose": "fine-tune"},
                          files={"file": ("p.jsonl", b'{"text": "a", "label": 0}\n{"text": "b", "label": 1}\n' * 3)})
        file_id = upload.json()["id"]
        for _ in range(21):  # held back at once: queued jobs cancel immediately
            job = api.post("/v1/fine_tuning/jobs", json={"model": "tiny-bert", "training_file": file_id}).json()
            api.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel").raise_for_status()
    sign_in(page, dep, key)
    rows = "#jobs-table tbody tr"
    page.wait_for_function("() => document.querySelectorAll('#jobs-table tbody tr').length === 20")
    previous, following = page.get_by_role("button", name="← Previous"), page.get_by_role("button", name="Next →")
    assert previous.is_disabled() and following.is_enabled()
    first_page = {r.get_attribute("data-job-id") for r in page.query_selector_all(rows)}
    following.click()
    page.wait_for_function("() => document.querySelectorAll('#jobs-table tbody tr').length === 1")
    assert page.query_selector(rows).get_attribute("data-job-id") not in first_page
    assert following.is_disabled() and "Page 2" in page.inner_text(".pager")
    previous.click()
    page.wait_for_function("() => document.querySelectorAll('#jobs-table tbody tr').length === 20")


def test_compare_page_overlays_curves_and_tables_results(page: Any, dashboard_deployment: Deployment,
                                                          tenant_key: str, shared: dict[str, Any]) -> None:
    dep = dashboard_deployment
    ids = shared["compare"]
    sign_in(page, dep, tenant_key, f"#/compare?ids={','.join(ids)}")
    page.wait_for_selector("h1:has-text('Compare jobs')")
    page.wait_for_function("() => document.querySelectorAll('#chart-loss svg path.chart-line').length === 2")
    assert len(page.query_selector_all("#chart-loss svg circle")) >= 2 * 10
    page.wait_for_function("() => document.querySelectorAll('#chart-eval-loss svg path.chart-line').length === 2")
    page.wait_for_selector("text=All jobs have finished.")
    table = page.inner_text("#compare-table")
    assert "SparseGrad 5%" in table and "LoRA r=2" in table
    assert len(page.query_selector_all("#compare-table thead th")) == 1 + 2  # one column per job
    measures = {}
    for row in page.query_selector_all("#compare-table tbody tr"):
        measures[row.query_selector("th").inner_text()] = [c.inner_text().strip() for c in row.query_selector_all("td")]
    assert measures["Status"] == ["succeeded", "succeeded"], measures
    for name in ("Final accuracy", "Final loss", "Trainable parameters", "Median step time (ms)",
                 "Tokens per second (median)", "Peak memory (MiB)"):
        assert len(measures[name]) == 2 and all(v not in ("", "—") for v in measures[name]), (name, measures)
    screenshot(page, "compare")

    # the picker adds and removes jobs, and the URL follows
    page.select_option("#add-job", shared["first"])
    page.get_by_role("button", name="Add", exact=True).click()
    page.wait_for_function("() => document.querySelectorAll('#chart-loss svg path.chart-line').length === 3")
    assert shared["first"] in page.url
    page.get_by_role("button", name=f"Remove {ids[0]} from the comparison").click()
    page.wait_for_function("() => document.querySelectorAll('#compare-table thead th').length === 3")
    assert ids[0] not in page.url

    page.set_viewport_size(PHONE)
    page.reload()
    page.wait_for_function("() => document.querySelectorAll('#chart-loss svg path.chart-line').length === 2")
    no_horizontal_overflow(page)
    screenshot(page, "compare_phone")
    page.evaluate("() => { location.hash = '#/new'; }")
    page.wait_for_selector("#model option[value='tiny-bert']", state="attached")
    no_horizontal_overflow(page)
    screenshot(page, "new_job_phone")


def test_dashboard_is_served_without_a_key_and_assets_are_packaged(dashboard_deployment: Deployment) -> None:
    import httpx

    from api.dashboard import STATIC_DIR

    with httpx.Client(base_url=dashboard_deployment.url) as http:
        index = http.get("/")
        assert index.status_code == 200 and 'type="module"' in index.text
        for name in ("app.js", "api.js", "styles.css", "compare.js"):
            asset = http.get(f"/dashboard/static/{name}")
            assert asset.status_code == 200, name
        app_js = http.get("/dashboard/static/app.js")
        assert "javascript" in app_js.headers["content-type"] and app_js.headers["cache-control"] == "no-cache"
        assert http.get("/dashboard/static/app.js", headers={"If-None-Match": app_js.headers["etag"]}).status_code == 304
        assert http.get("/v1/models").status_code == 401  # the API itself still needs a key
        assert "/" not in http.get("/openapi.json").json()["paths"]
    for path in STATIC_DIR.iterdir():  # no CDN or remote asset anywhere
        if path.suffix in (".js", ".html", ".css"):
            text = path.read_text()
            assert "http://" not in text.replace("http://www.w3.org", "") and "https://" not in text, path.name
