"""Dataset files at the API edge: read an upload under the size cap, make its name safe to show, build the
column mapping, and validate the bytes with ``sparsegrad_data`` (problems become a 400 listing each
``file:line`` and field)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import BinaryIO

from sparsegrad_data import ColumnMapping, Dataset, DatasetError, TaskType, parse_dataset_bytes
from sparsegrad_service.settings import Settings

from .errors import ApiError

_READ_CHUNK = 1024 * 1024
_UNSAFE = re.compile(r"[^\w .()+,=@~-]")
MAX_FILENAME = 200
"""Characters of an upload's name that are kept (``safe_filename``)."""
MAX_UPLOAD_FILENAME = 1024
"""Characters an upload's name may have: longer names are refused (4 bytes a character still fit in the
multipart parser's 4 KiB header line)."""
FILENAME_TOO_LONG = f"it is too long (the limit is {MAX_UPLOAD_FILENAME:,} characters)"
_SHOWN_FILENAME = 60


def read_capped(stream: BinaryIO, limit: int) -> bytes:
    """All of ``stream``, or 413 as soon as it is longer than ``limit`` bytes."""
    chunks, size = [], 0
    while chunk := stream.read(_READ_CHUNK):
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def too_large(limit: int) -> ApiError:
    return ApiError(413, f"The file is larger than the upload limit of {limit:,} bytes.", param="file",
                    code="file_too_large")


def filename_problem(name: str | None) -> str | None:
    """Why an uploaded file's name is refused: empty, longer than ``MAX_UPLOAD_FILENAME`` characters, a path
    (separators or a '..' component) or control characters. None when it is acceptable (other unusual
    characters are replaced by ``safe_filename``)."""
    if not name:
        return "the file part has an empty filename; send the file's name (its extension tells the format)"
    if len(name) > MAX_UPLOAD_FILENAME:
        return FILENAME_TOO_LONG
    if "/" in name or "\\" in name:
        return "it is a path; send the file's name only (no '/' or '\\')"
    if name.strip() in (".", ".."):
        return "it is a path component, not a file name"
    bad = sorted({f"U+{ord(c):04X}" for c in name if unicodedata.category(c).startswith("C")})
    if bad:
        return f"it contains control or invisible characters ({', '.join(bad[:5])})"
    return None


def invalid_filename(name: str | None, problem: str, param: str = "file") -> ApiError:
    """400 naming the file part (``file``); a long name is shown shortened."""
    shown = name if name is None or len(name) <= _SHOWN_FILENAME else name[:_SHOWN_FILENAME] + "..."
    return ApiError(400, f"Invalid filename {shown!r}: {problem}.", param=param, code="invalid_filename")


def safe_filename(name: str | None) -> str:
    """The last path component, without control or unusual characters, at most 200 characters (keeping the
    extension, which tells the format)."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = "".join(c for c in base if not unicodedata.category(c).startswith("C"))
    base = _UNSAFE.sub("_", base).strip(" .")
    if len(base) > MAX_FILENAME:
        _stem, dot, ext = base.rpartition(".")
        keep = ext if dot and len(ext) <= 10 else ""
        base = base[: MAX_FILENAME - len(keep) - 1].rstrip(" .") + ("." + keep if keep else "")
    return base or "upload"


def form_column(value: str | None) -> str | int | None:
    """A column from a form field: all digits means a 0-based index."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    return int(value) if value.isdigit() else value


def column_mapping(
    *, text: str | int | None = None, text_pair: str | int | None = None, label: str | int | None = None,
    messages: str | None = None, prompt: str | None = None, completion: str | None = None,
    has_header: bool | None = None, param_prefix: str = "", fallback_param: str | None = None,
) -> ColumnMapping:
    """A ``ColumnMapping`` with defaults for what is None; a bad combination is a 400."""
    defaults = ColumnMapping()
    try:
        return ColumnMapping(
            text=defaults.text if text is None else text, text_pair=text_pair,
            label=defaults.label if label is None else label,
            messages=defaults.messages if messages is None else messages,
            prompt=defaults.prompt if prompt is None else prompt,
            completion=defaults.completion if completion is None else completion,
            has_header=defaults.has_header if has_header is None else has_header,
        )
    except (TypeError, ValueError) as exc:
        message = str(exc)
        param = next((f"{param_prefix}{name}_column" for name in ("text_pair", "text", "label", "messages",
                                                                   "completion", "prompt")
                      if f"ColumnMapping.{name}" in message), None)
        if param is None:
            param = f"{param_prefix}has_header" if "has_header" in message else fallback_param
        raise ApiError(400, f"Invalid column mapping: {_in_request_names(message, param_prefix)}.", param=param,
                       code="invalid_column_mapping") from exc


_MAPPING_FIELD = {"text": "text_column", "text_pair": "text_pair_column", "label": "label_column",
                  "messages": "messages_column", "prompt": "prompt_column", "completion": "completion_column",
                  "has_header": "has_header"}
"""The request's name (upload form field, job ``task`` field) of each ``ColumnMapping`` field."""
_LIBRARY_NAME = re.compile(r"ColumnMapping\((\w+)=(\w+)\)|ColumnMapping\.(\w+)|\b(\w+)(?==)")


def _in_request_names(message: str, prefix: str) -> str:
    """``ColumnMapping``'s message in the request's names: ``ColumnMapping(has_header=False) needs ...
    text='x'`` → ``has_header=false needs ... text_column='x'`` (``task.``-prefixed for a job)."""

    def rename(match: re.Match[str]) -> str:
        field = match[1] or match[3] or match[4]
        if field not in _MAPPING_FIELD:
            return match[0].removeprefix("ColumnMapping.")
        name = prefix + _MAPPING_FIELD[field]
        return f"{name}={match[2].lower()}" if match[1] else name

    return _LIBRARY_NAME.sub(rename, message).replace("ColumnMapping ", "the mapping ")


def mapping_to_dict(mapping: ColumnMapping) -> dict[str, object]:
    return {"text": mapping.text, "text_pair": mapping.text_pair, "label": mapping.label,
            "messages": mapping.messages, "prompt": mapping.prompt, "completion": mapping.completion,
            "has_header": mapping.has_header}


def mapping_from_dict(stored: dict[str, object] | None) -> ColumnMapping:
    stored = stored or {}
    return ColumnMapping(**{k: v for k, v in stored.items()  # type: ignore[arg-type]
                            if k in ("text", "text_pair", "label", "messages", "prompt", "completion", "has_header")})


def dataset_error(exc: DatasetError, param: str) -> ApiError:
    """400 whose message is the full report (``file:line: field 'x': ...``) and whose details list each issue."""
    details: list[dict[str, object]] = [
        {"line": issue.line, "field": issue.field, "message": issue.message} for issue in exc.issues]
    return ApiError(400, str(exc), param=param, code="invalid_file", details=details)


def validate_dataset(
    data: bytes, filename: str, settings: Settings, *, task: TaskType | str | None, mapping: ColumnMapping,
    param: str, task_param: str = "task", num_labels: int | None = None,
    label_names: Sequence[str] | None = None, min_classes: int = 1,
) -> Dataset:
    """Parse and validate ``data`` under the deployment's limits, or raise the matching 400/413. One class
    is enough by default (an evaluation file may have one); training needs ``min_classes=2``."""
    try:
        return parse_dataset_bytes(
            data, filename, task, mapping, num_labels=num_labels, label_names=label_names,
            min_classes=min_classes, max_bytes=settings.max_upload_bytes, max_examples=settings.max_upload_examples,
        )
    except DatasetError as exc:
        raise dataset_error(exc, param) from exc
    except (TypeError, ValueError) as exc:
        raise ApiError(400, f"Invalid task for {filename}: {exc}.", param=task_param, code="invalid_task") from exc
