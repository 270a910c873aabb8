"""Refresh the dashboard screenshots in docs/img from a running service (Debian chromium, headless).

    python scripts/dashboard_screenshots.py --url http://127.0.0.1:8321 --key sg-... \
        --job ftjob-A --compare ftjob-A,ftjob-B

Writes docs/img/dashboard_jobs.png, dashboard_job.png, dashboard_insight.png, dashboard_compare.png and
dashboard_new_job.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from playwright.sync_api import sync_playwright

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
OUT = Path(__file__).resolve().parents[1] / "docs" / "img"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--job", required=True, help="a SparseGrad job to show")
    ap.add_argument("--compare", required=True, help="comma-separated job ids")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        page.add_init_script(f"sessionStorage.setItem('sparsegrad.apiKey', {args.key!r})")
        shots = [("jobs", "#/jobs", None), ("new_job", "#/new", None), ("job", f"#/jobs/{args.job}", None),
                 ("insight", f"#/jobs/{args.job}", "text=Method insight"),
                 ("compare", f"#/compare?ids={args.compare}", None)]
        for name, route, anchor in shots:
            page.goto(f"{args.url}/{route}")
            page.wait_for_load_state("networkidle")
            page.wait_for_timeout(2500)  # live charts and tables settle
            path = OUT / f"dashboard_{name}.png"
            if anchor:
                section = page.locator("section", has=page.locator(anchor)).first
                section.screenshot(path=str(path))
            else:
                page.screenshot(path=str(path), full_page=name != "job")
            print(f"wrote {path}")
        browser.close()


if __name__ == "__main__":
    main()
