"""Rebuild the GLUE sample files in this folder from a GLUE data directory.

Usage::

    python sparsegrad_data/samples/make_samples.py --glue-dir /path/to/glue [--out-dir DIR]

``--glue-dir`` holds ``SST-2/``, ``MRPC/`` and ``CoLA/`` with the GLUE ``train.tsv`` and ``dev.tsv``
files. Train samples are drawn with ``random.Random(0)`` (a fresh generator per file), keep the
header line (and MRPC's UTF-8 byte order mark) and keep the rows in their original order. Dev files
are copied byte for byte. The script prints each output's row count and sha256 for README.md.
It is a maintenance script: the package never imports it.
"""

from __future__ import annotations

import argparse
import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

SEED = 0


@dataclass(frozen=True)
class SampleSpec:
    source: str
    target: str
    has_header: bool
    rows: int | None  # None: copy the whole file unchanged


SPECS = (
    SampleSpec("SST-2/train.tsv", "sst2_train.tsv", has_header=True, rows=4000),
    SampleSpec("SST-2/dev.tsv", "sst2_dev.tsv", has_header=True, rows=None),
    SampleSpec("MRPC/train.tsv", "mrpc_train.tsv", has_header=True, rows=1000),
    SampleSpec("MRPC/dev.tsv", "mrpc_dev.tsv", has_header=True, rows=None),
    SampleSpec("CoLA/train.tsv", "cola_train.tsv", has_header=False, rows=1500),
    SampleSpec("CoLA/dev.tsv", "cola_dev.tsv", has_header=False, rows=None),
)


def sample_bytes(data: bytes, has_header: bool, rows: int | None) -> bytes:
    """``rows`` data rows drawn with ``random.Random(SEED)``, in file order, after the header if any."""
    if rows is None:
        return data
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    header, body = (lines[:1], lines[1:]) if has_header else ([], lines)
    if rows > len(body):
        raise ValueError(f"asked for {rows} rows but the file has {len(body)}")
    chosen = sorted(random.Random(SEED).sample(range(len(body)), rows))
    return b"\n".join(header + [body[i] for i in chosen]) + b"\n"


def count_rows(data: bytes, has_header: bool) -> int:
    lines = [line for line in data.split(b"\n") if line.strip()]
    return len(lines) - (1 if has_header else 0)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--glue-dir", type=Path, required=True, help="folder with SST-2/, MRPC/ and CoLA/")
    parser.add_argument(
        "--out-dir", type=Path, default=Path(__file__).resolve().parent, help="where to write"
    )
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for spec in SPECS:
        data = sample_bytes((args.glue_dir / spec.source).read_bytes(), spec.has_header, spec.rows)
        (args.out_dir / spec.target).write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        print(f"{spec.target}\t{count_rows(data, spec.has_header)} rows\t{len(data)} bytes\t{digest}")


if __name__ == "__main__":
    main()
