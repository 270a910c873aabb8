"""Turn the raw bytes of a dataset file into text lines, rejecting anything that is not clean UTF-8."""

from __future__ import annotations

from .issues import IssueLog, fail

MAX_LINE_BYTES = 1_048_576
"""The longest line accepted (1 MiB); a longer line is almost always a broken or binary file."""

UTF8_BOM = b"\xef\xbb\xbf"
_FOREIGN_BOMS: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)
_SNIFF_BYTES = 4096


def decode_lines(data: bytes, source: str, *, max_bytes: int | None = None) -> list[str]:
    """Split ``data`` into lines without their line endings, after all file-level checks.

    A leading UTF-8 byte order mark is stripped. Raises DatasetError for: a file over ``max_bytes``,
    an empty file, UTF-16/UTF-32 text, NUL bytes, lines over ``MAX_LINE_BYTES``, invalid UTF-8
    (naming each bad line and the byte offset in the file) and stray byte order marks at line starts.
    """
    if max_bytes is not None and len(data) > max_bytes:
        raise fail(source, f"file is {len(data):,} bytes, over the limit of {max_bytes:,} bytes")
    for bom, encoding in _FOREIGN_BOMS:
        if data.startswith(bom):
            raise fail(
                source,
                f"file is {encoding} (it starts with a {encoding} byte order mark); re-save it as UTF-8",
            )
    offset = 0
    if data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM) :]
        offset = len(UTF8_BOM)
    if not data.strip():
        raise fail(source, "file is empty")
    head = data[:_SNIFF_BYTES]
    if head.count(b"\x00") * 4 >= len(head):
        raise fail(source, "file looks like UTF-16 (it is full of NUL bytes); re-save it as UTF-8")

    raw_lines = data.split(b"\n")
    if raw_lines[-1] == b"":
        raw_lines.pop()
    log = IssueLog(source)
    _check_bytes(raw_lines, offset, log)
    log.raise_if_any()
    try:
        text_lines = data.decode("utf-8").split("\n")
    except UnicodeDecodeError:
        _report_invalid_utf8(raw_lines, offset, log)
        log.raise_if_any()
        raise  # unreachable: a decode error always lands in some line
    if text_lines[-1] == "":
        text_lines.pop()
    lines = [line[:-1] if line.endswith("\r") else line for line in text_lines]
    for number, line in enumerate(lines, start=1):
        if line.startswith("\ufeff"):
            log.add(
                number,
                None,
                "line starts with a byte order mark (U+FEFF), as if several files were joined together; remove it",
            )
    log.raise_if_any()
    return lines


def _check_bytes(raw_lines: list[bytes], offset: int, log: IssueLog) -> None:
    """Report over-long lines and NUL bytes, with their line numbers."""
    start = offset
    for number, raw in enumerate(raw_lines, start=1):
        if len(raw) > MAX_LINE_BYTES:
            log.add(
                number,
                None,
                f"line is {len(raw):,} bytes long, over the limit of {MAX_LINE_BYTES:,} bytes per line",
            )
        nul = raw.find(b"\x00")
        if nul >= 0:
            log.add(
                number,
                None,
                f"NUL byte at byte offset {start + nul} of the file; the file looks binary or corrupted",
            )
        start += len(raw) + 1


def _report_invalid_utf8(raw_lines: list[bytes], offset: int, log: IssueLog) -> None:
    """Report every line that is not valid UTF-8, with the byte offset of its first bad byte."""
    start = offset
    for number, raw in enumerate(raw_lines, start=1):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad = raw[exc.start]
            log.add(
                number,
                None,
                f"invalid UTF-8: byte 0x{bad:02x} at byte offset {start + exc.start} of the file "
                f"(byte {exc.start + 1} of the line); re-save the file as UTF-8",
            )
        start += len(raw) + 1
