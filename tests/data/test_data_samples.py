"""The bundled samples load with the GLUE mappings, match their README, and can be rebuilt exactly."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from sparsegrad_data import DatasetFormat, TaskType, glue_mapping, load_dataset, sample_path
from sparsegrad_data.sample_files import SAMPLE_FILES, SAMPLES_DIR

# name -> (rows, count of label 0, count of label 1)
GLUE_SAMPLES = {
    "sst2_train": (4000, 1747, 2253),
    "sst2_dev": (872, 428, 444),
    "mrpc_train": (1000, 313, 687),
    "mrpc_dev": (408, 129, 279),
    "cola_train": (1500, 425, 1075),
    "cola_dev": (1043, 322, 721),
}


@pytest.mark.parametrize("name", sorted(GLUE_SAMPLES))
def test_glue_sample_loads_with_expected_counts(name: str) -> None:
    task, mapping = glue_mapping(name.split("_")[0])
    ds = load_dataset(sample_path(name), task, mapping)
    rows, zeros, ones = GLUE_SAMPLES[name]
    assert len(ds) == rows
    assert Counter(e.label for e in ds.examples) == {0: zeros, 1: ones}
    assert ds.task is TaskType.CLASSIFICATION and ds.format is DatasetFormat.TSV
    assert ds.label_names == ["0", "1"] and ds.num_labels == 2
    assert all(e.text and e.text.strip() for e in ds.examples)
    assert (mapping.text_pair is not None) == all(e.text_pair for e in ds.examples)
    assert load_dataset(sample_path(name), None, mapping).task is TaskType.CLASSIFICATION


def test_glue_sample_details() -> None:
    assert sample_path("mrpc_train").read_bytes().startswith(b"\xef\xbb\xbfQuality\t")
    assert not sample_path("cola_dev").read_bytes().endswith(b"\n")
    mrpc = load_dataset(sample_path("mrpc_dev"), *glue_mapping("mrpc"))
    assert mrpc.examples[0].line == 2
    assert mrpc.examples[0].text_pair is not None
    cola = load_dataset(sample_path("cola_dev"), *glue_mapping("cola"))
    assert cola.examples[0].line == 1 and cola.examples[-1].line == 1043


def test_chat_sample() -> None:
    ds = load_dataset(sample_path("chat_sample.jsonl"))
    assert ds.task is TaskType.CAUSAL_LM and 50 <= len(ds) <= 80
    for example in ds.examples:
        assert example.messages is not None
        assert example.messages[-1]["role"] == "assistant"
        assert {m["role"] for m in example.messages} <= {"system", "user", "assistant"}


def test_sample_path_errors_list_the_names() -> None:
    with pytest.raises(ValueError, match="available: sst2_train, sst2_dev"):
        sample_path("imdb")
    assert sample_path("sst2_dev") == sample_path("sst2_dev.tsv") == SAMPLES_DIR / "sst2_dev.tsv"


def test_samples_are_small_and_documented() -> None:
    files = [SAMPLES_DIR / name for name in SAMPLE_FILES]
    assert sum(f.stat().st_size for f in files) < 1_000_000
    readme = (SAMPLES_DIR / "README.md").read_text(encoding="utf-8")
    for f in files:
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        row = next(line for line in readme.splitlines() if line.startswith(f"| `{f.name}`"))
        assert digest in row, f"README sha256 for {f.name} is stale"
        assert f"{f.stat().st_size:,}" in row


def _glue_dir() -> Path | None:
    candidates = [os.environ.get("GLUE_DIR", "")]
    root = Path(__file__).resolve().parents[2]
    candidates += [str(root / "shared" / "data" / "glue"), str(root.parent / "shared" / "data" / "glue")]
    return next((Path(c) for c in candidates if c and (Path(c) / "SST-2" / "train.tsv").is_file()), None)


def test_make_samples_rebuilds_the_glue_files(tmp_path: Path) -> None:
    glue_dir = _glue_dir()
    if glue_dir is None:
        pytest.skip("GLUE data not found (set GLUE_DIR)")
    script = SAMPLES_DIR / "make_samples.py"
    out = subprocess.run(
        [sys.executable, str(script), "--glue-dir", str(glue_dir), "--out-dir", str(tmp_path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert len(re.findall(r"\.tsv\t", out)) == 6
    for built in sorted(tmp_path.glob("*.tsv")):
        assert built.read_bytes() == (SAMPLES_DIR / built.name).read_bytes(), built.name
