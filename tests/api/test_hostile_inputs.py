"""A corpus of malformed uploads, job specs and requests. Each must get a 4xx whose message names the
problem, never a 5xx, and leave nothing behind (no file, no job, no stored bytes)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from api_harness import CHAT_ROWS, CLASSIFICATION_ROWS, Service, TenantClient, jsonl, start_service

from migrations import upgrade

MAX_UPLOAD = 2 * 1024 * 1024
JOBS = "/v1/fine_tuning/jobs"


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # "upload" | "job" | "raw"
    fragment: str
    """A piece of the error message that names the problem (case-insensitive)."""
    content: bytes = b""
    filename: str = "train.jsonl"
    form: dict[str, str] = field(default_factory=dict)
    body: Any = None
    """Job spec fields (merged over a valid spec) or, for "raw", the request."""
    status: int = 400
    param: str | None = None
    """When set, the error's ``param`` must be exactly this field."""
    absent: bytes = b""
    """When set, the response must not contain these bytes (an upload's contents are never echoed)."""


def _rows(*rows: Any) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()


def _json_request(spec: bytes) -> dict[str, Any]:
    """A job request whose JSON (NaN, Infinity) httpx would refuse to encode: ``spec`` plus model and file."""
    body = spec[:-1] + b', "model": "minilm-l6", "training_file": "file-any"}'
    return {"method": "POST", "url": JOBS, "content": body, "headers": {"Content-Type": "application/json"}}


def _multipart_request(files: dict[str, tuple[str, bytes]], **fields: str) -> dict[str, Any]:
    """An upload written by hand, for parts httpx would not send as given (a ``filename=""``)."""
    boundary = "hostile-boundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts += [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"; filename="{name}"\r\n\r\n'.encode()
              + content + b"\r\n" for k, (name, content) in files.items()]
    return {"method": "POST", "url": "/v1/files", "content": b"".join(parts) + f"--{boundary}--\r\n".encode(),
            "headers": {"Content-Type": f"multipart/form-data; boundary={boundary}"}}


GOOD = CLASSIFICATION_ROWS
UPLOADS = [
    Case("broken json line", "upload", "train.jsonl:2: invalid json", _rows(GOOD[0], '{"text": "x", "label": ', GOOD[1])),
    Case("not json at all", "upload", "train.jsonl:1: invalid json", b"hello world\nsecond line\n"),
    Case("empty file", "upload", "empty", b""),
    Case("only blank lines", "upload", "empty", b"\n\n  \n"),
    Case("utf-16 text", "upload", "utf-16", jsonl(GOOD).decode().encode("utf-16")),
    Case("invalid utf-8", "upload", "utf-8", b'{"text": "caf\xe9", "label": 0}\n' * 3),
    Case("nul bytes", "upload", "nul", b'{"text": "a\x00b", "label": 0}\n'),
    Case("huge line", "upload", "bytes per line", _rows({"text": "x" * 1_100_000, "label": 0})),
    Case("json array instead of lines", "upload", "not a json array", json.dumps(GOOD).encode() + b"\n"),
    Case("record is a list", "upload", "train.jsonl:1: expected a json object", _rows([1, 2], [3, 4])),
    Case("missing text column", "upload", "text", _rows(*({"sentence": r["text"], "label": r["label"]} for r in GOOD))),
    Case("missing label column", "upload", "label", _rows(*({"text": r["text"]} for r in GOOD))),
    Case("label is a list", "upload", "label", _rows(*GOOD[:4], {"text": "x", "label": [0, 1]})),
    Case("label is null", "upload", "label", _rows(*GOOD[:4], {"text": "x", "label": None})),
    Case("label is an object", "upload", "label", _rows(*GOOD[:4], {"text": "x", "label": {"a": 1}})),
    Case("text is empty", "upload", "text", _rows(*GOOD[:4], {"text": "", "label": 0})),
    Case("text is a list", "upload", "text", _rows(*GOOD[:4], {"text": ["a"], "label": 0})),
    Case("fractional label in a classification file", "upload", "label",
         _rows(*GOOD[:4], {"text": "x", "label": 0.5}), form={"task": "classification"}),
    Case("class id out of range", "upload", "too large", _rows(*GOOD[:4], {"text": "x", "label": 10**30})),
    Case("boolean label", "upload", "label", _rows(*GOOD[:4], {"text": "x", "label": True})),
    Case("nan label", "upload", "nan", b'{"text": "a", "label": NaN}\n{"text": "b", "label": 1}\n'),
    Case("bom then broken json", "upload", "train.jsonl:1: invalid json", b"\xef\xbb\xbf{oops\n"),
    Case("chat bad role", "upload", "role",
         _rows(*CHAT_ROWS[:3], {"messages": [{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "x"}]})),
    Case("chat messages not a list", "upload", "messages", _rows(*CHAT_ROWS[:3], {"messages": "hello"})),
    Case("chat empty messages", "upload", "messages", _rows(*CHAT_ROWS[:3], {"messages": []})),
    Case("chat content not a string", "upload", "content",
         _rows(*CHAT_ROWS[:3], {"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "x"}]})),
    Case("chat without assistant turn", "upload", "assistant",
         _rows(*CHAT_ROWS[:3], {"messages": [{"role": "user", "content": "hi"}]})),
    Case("csv missing label column", "upload", "label", b"text,other\nhello,1\nworld,0\n", "train.csv"),
    Case("csv ragged row", "upload", "train.csv:3: expected 2 columns", b"text,label\nhello,1\nworld,0,extra,cells\nok,1\n", "train.csv"),
    Case("csv only header", "upload", "no data rows", b"text,label\n", "train.csv"),
    Case("tsv wrong delimiter", "upload", "label", b"text,label\nhello,1\nworld,0\n", "train.tsv"),
    Case("binary content", "upload", "file format", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "t.png"),
    Case("compressed upload", "upload", "unsupported file type", b"\x1f\x8b\x08\x00" + bytes(200), "t.jsonl.gz"),
    Case("oversized file", "upload", "limit", b'{"text": "' + b"y" * (MAX_UPLOAD + 10) + b'", "label": 0}\n', status=413),
    Case("path traversal filename", "upload", "path", jsonl(GOOD), "../../../etc/passwd.jsonl"),
    Case("absolute path filename", "upload", "path", jsonl(GOOD), "/etc/cron.d/x.jsonl"),
    Case("control characters in filename", "upload", "control", jsonl(GOOD), "evil\x07\x1b.jsonl"),
    Case("dot-dot filename", "upload", "path", jsonl(GOOD), ".."),
    Case("wrong purpose", "upload", "purpose", jsonl(GOOD), form={"purpose": "batch"}),
    Case("unknown task", "upload", "task", jsonl(GOOD), form={"task": "translation"}),
    Case("text column index out of range", "upload", "column", b"a,b\nx,1\ny,0\n", "train.csv",
         form={"text_column": "7", "label_column": "1"}),
    Case("headerless csv with column names", "upload",
         "has_header=false needs 0-based column indices, got names: text_column='text', label_column='label'",
         b"hello,1\nworld,0\n", "train.csv", form={"has_header": "false"}, param="has_header"),
    Case("file part without a filename", "upload", "filename", b"SECRET-ROW-CONTENT\n" * 3, "", param="file",
         absent=b"SECRET-ROW-CONTENT"),
    Case("form field over the part limit", "upload", "'text_column' is larger than the limit of 1,048,576 bytes",
         jsonl(GOOD), form={"text_column": "t" * (1024 * 1024 + 1)}, param="text_column"),
    Case("5000-character filename", "upload", "too long (the limit is 1,024 characters)", jsonl(GOOD),
         "n" * 5000 + ".jsonl", param="file"),
    Case("1500-character filename", "upload", "too long (the limit is 1,024 characters)", jsonl(GOOD),
         "n" * 1500 + ".jsonl", param="file"),
]

JOB_SPECS = [
    Case("unknown model", "job", "model", body={"model": "gpt-17"}),
    Case("model with path", "job", "model", body={"model": "../../models/x"}),
    Case("density zero", "job", "density", body={"method": {"sparsegrad": {"density": 0}}}),
    Case("density above one", "job", "density", body={"method": {"sparsegrad": {"density": 1.5}}}),
    Case("density negative", "job", "density", body={"method": {"sparsegrad": {"density": -0.01}}}),
    Case("density a string", "job", "density", body={"method": {"sparsegrad": {"density": "lots"}}}),
    Case("negative learning rate", "job", "learning_rate", body={"hyperparameters": {"learning_rate": -1e-4}}),
    Case("absurd learning rate", "job", "learning_rate", body={"hyperparameters": {"learning_rate": 1e6}}),
    Case("zero batch size", "job", "batch_size", body={"hyperparameters": {"batch_size": 0}}),
    Case("absurd batch size", "job", "batch_size", body={"hyperparameters": {"batch_size": 10**9}}),
    Case("negative max steps", "job", "max_steps", body={"hyperparameters": {"max_steps": -5}}),
    Case("absurd epochs", "job", "n_epochs", body={"hyperparameters": {"n_epochs": 10**6}}),
    Case("fractional batch size", "job", "batch_size", body={"hyperparameters": {"batch_size": 2.5}}),
    Case("huge sequence length", "job", "max_seq_length", body={"hyperparameters": {"max_seq_length": 10**7}}),
    Case("unknown hyperparameter", "job", "warmup_stepz", body={"hyperparameters": {"warmup_stepz": 3}}),
    Case("unknown top-level field", "job", "colour", body={"colour": "blue"}),
    Case("unknown method", "job", "method.type", body={"method": {"type": "prefix-tuning"}}),
    Case("lora rank negative", "job", "rank", body={"method": {"type": "lora", "lora": {"rank": -4}}}),
    Case("calibration steps absurd", "job", "calibration_steps",
         body={"method": {"sparsegrad": {"calibration_steps": 10**7}}}),
    Case("missing training file", "job", "training_file", body={"training_file": None}),
    Case("unknown training file", "job", "no such file", body={"training_file": "file-doesnotexist"}),
    Case("training file of wrong type", "job", "training_file", body={"training_file": 12345}),
    Case("seed a string", "job", "seed", body={"seed": "abc"}),
    Case("suffix too long", "job", "suffix", body={"suffix": "s" * 500}),
    Case("metadata not an object", "job", "metadata", body={"metadata": ["a", "b"]}),
    Case("validation split above one", "job", "validation_split", body={"validation_split": 1.5}),
    Case("task type unknown", "job", "task.type", body={"task": {"type": "ranking"}}),
    Case("chat task on encoder", "job", "messages", body={"task": {"type": "causal_lm"}}),
    Case("learning rate multiplier nan as a string", "job", "must be a finite number (got \"NaN\")",
         body={"hyperparameters": {"learning_rate_multiplier": "NaN"}}, param="hyperparameters.learning_rate_multiplier"),
]

RAW = [
    Case("job body not json", "raw", "json", body={"method": "POST", "url": JOBS, "content": b"{nope",
                                                     "headers": {"Content-Type": "application/json"}}),
    Case("job body a list", "raw", "object", body={"method": "POST", "url": JOBS, "json": [1, 2]}),
    Case("job body empty", "raw", "missing required parameters: 'model', 'training_file'", param="model",
         body={"method": "POST", "url": JOBS, "content": b"", "headers": {"Content-Type": "application/json"}}),
    Case("job body absent", "raw", "the request body is empty", param="model", body={"method": "POST", "url": JOBS}),
    Case("learning rate nan", "raw", "'hyperparameters.learning_rate': must be a finite number (got NaN)",
         param="hyperparameters.learning_rate", body=_json_request(b'{"hyperparameters": {"learning_rate": NaN}}')),
    Case("density infinite", "raw", "'method.sparsegrad.density': must be a finite number (got Infinity)",
         param="method.sparsegrad.density", body=_json_request(b'{"method": {"sparsegrad": {"density": Infinity}}}')),
    Case("file part with an empty filename", "raw", "empty filename", param="file", absent=b"SECRET-ROW-CONTENT",
         body=_multipart_request({"file": ("", b"SECRET-ROW-CONTENT\n")}, purpose="fine-tune")),
    Case("list limit zero", "raw", "limit", body={"method": "GET", "url": f"{JOBS}?limit=0"}),
    Case("list limit huge", "raw", "limit", body={"method": "GET", "url": f"{JOBS}?limit=100000"}),
    Case("list bad cursor", "raw", "after", body={"method": "GET", "url": f"{JOBS}?after=ftjob-nope"}),
    Case("list bad status", "raw", "status", body={"method": "GET", "url": f"{JOBS}?status=exploded"}),
    Case("upload without file part", "raw", "file",
         body={"method": "POST", "url": "/v1/files", "data": {"purpose": "fine-tune"}}),
]

CORPUS = UPLOADS + JOB_SPECS + RAW


def test_a_byte_order_mark_is_not_an_error(tenant: TenantClient) -> None:
    r = tenant.upload(b"\xef\xbb\xbf" + jsonl(GOOD))
    assert r.status_code == 200, r.text
    assert r.json()["num_examples"] == len(GOOD)


def test_the_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 50
    assert len({c.name for c in CORPUS}) == len(CORPUS)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    folder = tmp_path_factory.mktemp("hostile")
    url = f"sqlite:///{folder / 'api.db'}"
    upgrade(url)
    yield from start_service(folder, url, max_upload_bytes=MAX_UPLOAD, rate_limit_per_minute=0)


@pytest.fixture(scope="module")
def tenant(hostile: Service) -> TenantClient:
    return hostile.as_tenant("acme")


@pytest.fixture(scope="module")
def training_file(tenant: TenantClient) -> str:
    return tenant.upload_id()


def _counts(service: Service, client: TenantClient) -> tuple[int, int, int]:
    files = len(client.get("/v1/files", params={"limit": 100}).json()["data"])
    jobs = len(client.get(JOBS, params={"limit": 100}).json()["data"])
    stored = sum(1 for p in service.settings.artifact_root.rglob("*") if p.is_file())
    return files, jobs, stored


def _send(case: Case, client: TenantClient, training_file: str) -> httpx.Response:
    if case.kind == "upload":
        return client.upload(case.content, case.filename, **case.form)
    if case.kind == "job":
        spec = {"model": "minilm-l6", "training_file": training_file, **case.body}
        return client.post(JOBS, json={k: v for k, v in spec.items() if v is not None})
    request = dict(case.body)
    return client.request(request.pop("method"), request.pop("url"), **request)


@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
def test_bad_input_is_a_clear_4xx_and_leaves_nothing(hostile: Service, tenant: TenantClient, training_file: str,
                                                     case: Case) -> None:
    before = _counts(hostile, tenant)
    response = _send(case, tenant, training_file)
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:500])
    if case.status != 400:
        assert response.status_code == case.status, response.text[:500]
    error = response.json()["error"]
    assert error["message"] and error["type"] == "invalid_request_error", error
    text = f"{error['message']} {error.get('param') or ''}".lower()
    assert case.fragment.lower() in text, error
    if case.param is not None:
        assert error["param"] == case.param, error
    if case.absent:
        assert case.absent not in response.content, response.text[:500]
    assert _counts(hostile, tenant) == before


@pytest.mark.parametrize("chunk", [7, 1000, 4096, 1 << 20])
def test_a_part_that_breaks_a_limit_is_named_however_the_body_arrives(tenant: TenantClient, chunk: int) -> None:
    """The multipart parser sees the body in pieces of any size: the refusal still names the part."""
    for part, fragment, param in [
        ({"file": ("n" * 5000 + ".jsonl", jsonl(GOOD))}, "too long (the limit is 1,024 characters)", "file"),
        ({"file": ("train.jsonl", jsonl(GOOD)), "label_column": ("", b"l" * (1024 * 1024 + 1))},
         "'label_column' is larger than the limit", "label_column"),
    ]:
        files = {k: v for k, v in part.items() if v[0]}
        fields = {k: v[1].decode() for k, v in part.items() if not v[0]}
        request = _multipart_request(files, purpose="fine-tune", **fields)
        body = request.pop("content")
        pieces = (body[i:i + chunk] for i in range(0, len(body), chunk))
        response = tenant.request(request.pop("method"), request.pop("url"), content=pieces, **request)
        assert response.status_code == 400, response.text[:500]
        error = response.json()["error"]
        assert fragment in error["message"] and error["param"] == param, error
