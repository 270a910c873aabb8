"""Importing sparsegrad_data must not pull in torch or other heavy libraries (the web API imports it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "numpy", "pandas", "sparsegrad_core")


def test_import_does_not_load_torch() -> None:
    code = (
        "import json, sys\n"
        "import sparsegrad_data\n"
        "from sparsegrad_data import load_dataset, sample_path, glue_mapping\n"
        "load_dataset(sample_path('sst2_dev'), *glue_mapping('sst2'))\n"
        f"print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=REPO_ROOT
    )
    assert json.loads(result.stdout) == []


def test_public_api() -> None:
    import sparsegrad_data

    assert set(sparsegrad_data.__all__) == {
        "TaskType",
        "ColumnMapping",
        "DatasetFormat",
        "Example",
        "Dataset",
        "HoldOut",
        "DatasetIssue",
        "DatasetError",
        "load_dataset",
        "parse_dataset_bytes",
        "detect_format",
        "glue_mapping",
        "sample_path",
        "infer_task_type",
        "hold_out",
    }
