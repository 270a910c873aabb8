"""Browser tests of the dashboard: Debian's Chromium driven by Playwright (never a downloaded browser)
against a real deployment (PostgreSQL, Redis, the API under uvicorn, one Celery worker).

Screenshots of the main pages go to ``test-artifacts/screenshots/`` (git-ignored).
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from service.conftest import Deployment, deployment_env
from support.endpoints import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"


@pytest.fixture(scope="module")
def dashboard_deployment(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Deployment]:
    """One deployment per test module (API + one worker), on a fresh PostgreSQL database."""
    from sqlalchemy import text
    from support.endpoints import PG_SERVER, REDIS_SESSION_SERVER, admin_engine

    from migrations import upgrade

    name = f"sg_dash_{secrets.token_hex(6)}"
    admin = admin_engine()
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = f"{PG_SERVER}/{name}"
    root = tmp_path_factory.mktemp("dashboard")
    redis_url = REDIS_SESSION_SERVER  # not the database the function-scoped fixture flushes
    dep = Deployment(root, deployment_env(root, url, redis_url, {"tiny-bert": str(tiny_model_dir)}),
                     f"http://127.0.0.1:{free_port()}")
    try:
        upgrade(url)
        dep.start_api()
        dep.start_worker()
        yield dep
    except BaseException:
        print(dep.log_tail())
        raise
    finally:
        dep.stop()
        from sparsegrad_service.db import dispose_engines

        dispose_engines()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture()
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 860}, accept_downloads=True)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def screenshot(page: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def copy_screenshot_to_docs(name: str) -> None:  # used by hand when refreshing README images
    shutil.copy(SCREENSHOTS / f"{name}.png", REPO / "docs" / "img" / f"dashboard_{name}.png")
