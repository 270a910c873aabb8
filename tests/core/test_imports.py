"""sparsegrad_core is a plain PyTorch library: importing it pulls in no service code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import sparsegrad_core

FORBIDDEN = ("fastapi", "celery", "sqlalchemy", "api", "worker")
REPO = Path(__file__).resolve().parents[2]

_PROBE = """
import json, sys
import sparsegrad_core
from sparsegrad_core import *  # noqa: F403  (every public name, every submodule it needs)
forbidden = {forbidden!r}
hits = sorted(m for m in sys.modules if any(m == f or m.startswith(f + ".") for f in forbidden))
print(json.dumps({{"hits": hits, "file": sparsegrad_core.__file__}}))
"""


def test_import_pulls_in_no_service_modules():
    # from the repository root, so that `api` and `worker` WOULD be importable if referenced; -P keeps
    # the cwd off sys.path so that the sparsegrad_core under test is the one this interpreter resolves
    proc = subprocess.run(
        [sys.executable, "-P", "-c", _PROBE.format(forbidden=FORBIDDEN)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["hits"] == [], f"importing sparsegrad_core imported {result['hits']}"
    assert Path(result["file"]).resolve() == Path(sparsegrad_core.__file__).resolve()


def test_public_api_is_complete():
    for name in sparsegrad_core.__all__:
        assert getattr(sparsegrad_core, name) is not None, name
    assert isinstance(sparsegrad_core.__version__, str)
