"""The web dashboard: static ES modules, HTML and CSS served by the API itself (same origin, no CDN, no build
step). ``GET /`` is the single page; ``/dashboard/static/...`` its assets. Neither needs an API key: the
page's JavaScript signs in with one and talks only to the public ``/v1`` API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_PREFIX = "/dashboard/static"
NO_CACHE = {"Cache-Control": "no-cache"}

router = APIRouter(include_in_schema=False)


class RevalidatedStaticFiles(StaticFiles):
    """Static files that browsers revalidate on every load (cheap with the ETag), so that an upgraded
    service never runs a stale mix of old and new modules."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers.update(NO_CACHE)
        return response


@router.get("/")
def index() -> FileResponse:
    """The dashboard's page (its hash router shows sign-in, jobs, new job, job and compare views)."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=NO_CACHE)


def mount_dashboard(app: FastAPI) -> None:
    """Serve the dashboard at ``/`` and its assets under ``/dashboard/static``."""
    app.include_router(router)
    app.mount(STATIC_PREFIX, RevalidatedStaticFiles(directory=STATIC_DIR), name="dashboard-static")


__all__ = ["STATIC_DIR", "STATIC_PREFIX", "mount_dashboard", "router"]
