"""Decide whether a dataset file is JSONL, CSV or TSV, from its name and, failing that, its first bytes."""

from __future__ import annotations

from pathlib import PurePath

from .decoding import UTF8_BOM
from .issues import fail
from .schema import DatasetFormat

_BY_SUFFIX: dict[str, DatasetFormat] = {
    ".jsonl": DatasetFormat.JSONL,
    ".json": DatasetFormat.JSONL,
    ".ndjson": DatasetFormat.JSONL,
    ".csv": DatasetFormat.CSV,
    ".tsv": DatasetFormat.TSV,
    ".txt": DatasetFormat.TSV,
}
_UNSUPPORTED_SUFFIXES = frozenset(
    {".gz", ".zip", ".bz2", ".xz", ".zst", ".tar", ".parquet", ".arrow", ".xlsx", ".xls", ".pkl", ".pt"}
)
_SUPPORTED = "JSON Lines (.jsonl), CSV (.csv) or TSV (.tsv)"


def detect_format(filename: str, head_bytes: bytes = b"") -> DatasetFormat:
    """The format of ``filename``: by extension (.jsonl/.json/.ndjson, .csv, .tsv/.txt), else by content.

    ``head_bytes`` are the first bytes of the file (a few KB is plenty); they are only looked at when
    the extension is unknown. A first non-blank line starting with ``{`` means JSONL; one containing a
    tab means TSV; one containing a comma means CSV. Raises DatasetError when neither tells.
    """
    source = PurePath(filename).name or filename
    suffix = PurePath(filename).suffix.lower()
    if suffix in _BY_SUFFIX:
        return _BY_SUFFIX[suffix]
    if suffix in _UNSUPPORTED_SUFFIXES:
        raise fail(source, f"unsupported file type '{suffix}'; upload {_SUPPORTED}")
    sniffed = _sniff(head_bytes)
    if sniffed is None:
        raise fail(source, f"cannot tell the file format from the name or the content; use {_SUPPORTED}")
    return sniffed


def _sniff(head_bytes: bytes) -> DatasetFormat | None:
    head = head_bytes.removeprefix(UTF8_BOM).decode("utf-8", errors="replace")
    for line in head.splitlines():
        if not line.strip():
            continue
        if line.lstrip().startswith(("{", "[")):
            return DatasetFormat.JSONL
        if "\t" in line:
            return DatasetFormat.TSV
        if "," in line:
            return DatasetFormat.CSV
        return None
    return None
