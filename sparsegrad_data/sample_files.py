"""Locate the small sample datasets bundled with the package (see samples/README.md)."""

from __future__ import annotations

from pathlib import Path

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
SAMPLE_FILES: tuple[str, ...] = (
    "sst2_train.tsv",
    "sst2_dev.tsv",
    "mrpc_train.tsv",
    "mrpc_dev.tsv",
    "cola_train.tsv",
    "cola_dev.tsv",
    "chat_sample.jsonl",
)


def sample_path(name: str) -> Path:
    """The path of a bundled sample, by file name with or without extension (``"sst2_train"``)."""
    for file_name in SAMPLE_FILES:
        if name in (file_name, file_name.rsplit(".", 1)[0]):
            path = SAMPLES_DIR / file_name
            if not path.is_file():
                raise FileNotFoundError(f"bundled sample {file_name} is missing from {SAMPLES_DIR}")
            return path
    available = ", ".join(file_name.rsplit(".", 1)[0] for file_name in SAMPLE_FILES)
    raise ValueError(f"unknown sample {name!r}; available: {available}")
