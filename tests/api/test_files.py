"""Files: upload validates JSONL/CSV/TSV at once (bad lines named with their field), caps the size,
sanitizes names; list/retrieve/download/delete."""

from __future__ import annotations

import hashlib
from pathlib import Path

from api_harness import CHAT_ROWS, CLASSIFICATION_ROWS, Service, TenantClient, jsonl, start_service

from api.datasets import safe_filename


def test_upload_jsonl_returns_the_file_object(acme: TenantClient, sst2_jsonl: Path) -> None:
    content = sst2_jsonl.read_bytes()
    r = acme.upload(content, "sst2.jsonl")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"].startswith("file-") and body["object"] == "file"
    assert body["bytes"] == len(content) and body["filename"] == "sst2.jsonl"
    assert body["purpose"] == "fine-tune" and body["status"] == "processed"
    assert body["num_examples"] == 120 and body["format"] == "jsonl"
    assert body["task"] == "classification" and body["label_names"] == ["0", "1"]
    assert isinstance(body["created_at"], int)
    download = acme.get(f"/v1/files/{body['id']}/content")
    assert download.content == content
    assert download.headers["x-content-sha256"] == hashlib.sha256(content).hexdigest()


def test_upload_csv_and_tsv_with_a_column_mapping(acme: TenantClient) -> None:
    csv = b"sentence,score\n" + b"".join(f"text {i},{i / 10}\n".encode() for i in range(8))
    r = acme.upload(csv, "scores.csv", text_column="sentence", label_column="score")
    assert r.status_code == 200, r.text
    assert r.json()["format"] == "csv" and r.json()["task"] == "regression" and r.json()["num_examples"] == 8

    tsv = b"".join(f"{i % 3}\tsome text {i}\n".encode() for i in range(9))  # headerless: indices
    r = acme.upload(tsv, "cola.tsv", text_column="1", label_column="0", has_header="false")
    assert r.status_code == 200, r.text
    assert r.json()["format"] == "tsv" and r.json()["label_names"] == ["0", "1", "2"]


def test_chat_jsonl_is_stored_as_causal_lm(acme: TenantClient) -> None:
    r = acme.upload(jsonl(CHAT_ROWS), "chat.jsonl")
    assert r.status_code == 200, r.text
    assert r.json()["task"] == "causal_lm" and r.json()["label_names"] is None


def test_bad_records_are_listed_with_line_and_field(acme: TenantClient) -> None:
    rows = [*CLASSIFICATION_ROWS[:3], {"text": "no label here"}, {"text": 5, "label": 1}]
    content = jsonl(rows) + b"{not json\n"
    r = acme.upload(content, "bad.jsonl")
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == "file" and error["code"] == "invalid_file"
    assert "bad.jsonl:4: field 'label'" in error["message"]
    assert "bad.jsonl:5: field 'text'" in error["message"]
    assert "bad.jsonl:6" in error["message"]
    assert {(d["line"], d["field"]) for d in error["details"]} >= {(4, "label"), (5, "text")}


def test_bad_csv_cell_and_encoding(acme: TenantClient) -> None:
    r = acme.upload(b"text,label\nfine,1\nalso fine,0\nbroken,\n", "t.csv")
    assert r.status_code == 400
    assert "t.csv:4" in r.json()["error"]["message"] and "label" in r.json()["error"]["message"]
    r = acme.upload(b'{"text": "caf\xe9", "label": 1}\n', "latin1.jsonl")
    assert r.status_code == 400 and "latin1.jsonl" in r.json()["error"]["message"]


def test_bad_purpose_and_missing_file(acme: TenantClient) -> None:
    r = acme.upload(jsonl(CLASSIFICATION_ROWS), purpose="assistants")
    assert r.status_code == 400 and r.json()["error"]["param"] == "purpose"
    assert "fine-tune" in r.json()["error"]["message"]
    r = acme.post("/v1/files", data={"purpose": "fine-tune"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "file"
    assert r.json()["error"]["code"] == "missing_required_parameter"


def test_task_and_mapping_errors_name_the_parameter(acme: TenantClient) -> None:
    r = acme.upload(jsonl(CLASSIFICATION_ROWS), task="translation")
    assert r.status_code == 400 and r.json()["error"]["param"] == "task"
    r = acme.upload(jsonl(CLASSIFICATION_ROWS), text_column="x", label_column="x")
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_column_mapping"


def test_upload_over_the_cap_is_413_with_the_limit(tmp_path: Path, db: str) -> None:
    for service in start_service(tmp_path, db, max_upload_bytes=1000):
        client = service.as_tenant("acme")
        r = client.upload(jsonl(CLASSIFICATION_ROWS * 5))
        assert r.status_code == 413, r.text
        assert r.json()["error"]["code"] == "file_too_large" and "1,000 bytes" in r.json()["error"]["message"]
        # a body far over the cap is refused from its Content-Length, before it is read
        r = client.upload(b"x" * (2 * 1024 * 1024))
        assert r.status_code == 413 and r.json()["error"]["param"] == "file"
        # a chunked body (no Content-Length) is cut off once it passes the cap
        chunks = iter([b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jsonl\"\r\n\r\n",
                       *([b"x" * 65536] * 40)])
        r = client.post("/v1/files", content=chunks, headers={"Content-Type": "multipart/form-data; boundary=b"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "file_too_large"
        assert client.upload(jsonl(CLASSIFICATION_ROWS[:8])).status_code == 200


def test_filenames_are_sanitized(acme: TenantClient) -> None:
    r = acme.upload(jsonl(CLASSIFICATION_ROWS), "evil name<>.jsonl")
    assert r.status_code == 200, r.text
    assert r.json()["filename"] == "evil name__.jsonl"
    for name, fragment in (("../../etc/evil.jsonl", "is a path"),
                           ("a\x1b[31m.jsonl", "U+001B")):
        r = acme.upload(jsonl(CLASSIFICATION_ROWS), name)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_filename", (name, r.text)
        assert fragment in r.json()["error"]["message"] and r.json()["error"]["param"] == "file"
    assert acme.get("/v1/files").json()["data"][0]["filename"] == "evil name__.jsonl"  # nothing else stored
    assert safe_filename("C:\\temp\\a\x00b\x1b[31m.csv") == "ab_31m.csv"
    assert safe_filename("") == "upload" and safe_filename("...") == "upload"
    long = safe_filename("x" * 500 + ".jsonl")
    assert len(long) == 200 and long.endswith(".jsonl")


def test_list_retrieve_and_delete(service: Service, acme: TenantClient) -> None:
    ids = [acme.upload_id() for _ in range(3)]
    listing = acme.get("/v1/files").json()
    assert listing["object"] == "list" and [f["id"] for f in listing["data"]] == ids[::-1]
    page = acme.get("/v1/files", params={"limit": 2}).json()
    assert [f["id"] for f in page["data"]] == ids[:0:-1] and page["has_more"]
    rest = acme.get("/v1/files", params={"limit": 2, "after": page["data"][-1]["id"]}).json()
    assert [f["id"] for f in rest["data"]] == ids[:1] and not rest["has_more"]
    assert [f["id"] for f in acme.get("/v1/files", params={"order": "asc"}).json()["data"]] == ids

    assert acme.get(f"/v1/files/{ids[0]}").json()["id"] == ids[0]
    r = acme.delete(f"/v1/files/{ids[0]}")
    assert r.status_code == 200 and r.json() == {"id": ids[0], "object": "file", "deleted": True}
    assert acme.get(f"/v1/files/{ids[0]}").status_code == 404
    assert acme.delete(f"/v1/files/{ids[0]}").status_code == 404
    assert ids[0] not in [f["id"] for f in acme.get("/v1/files").json()["data"]]
    missing = acme.get("/v1/files/file-doesnotexist")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_a_file_is_deleted_with_its_bytes_once_no_unfinished_job_uses_it(service: Service, acme: TenantClient) -> None:
    from sparsegrad_service.store import file_key

    file_id = acme.upload_id()
    job = acme.create_job(training_file=file_id)
    r = acme.delete(f"/v1/files/{file_id}")  # the queued job will read it
    assert r.status_code == 409 and r.json()["error"]["code"] == "file_in_use" and job["id"] in r.text
    assert (service.settings.artifact_root / file_key(file_id)).is_file()
    assert acme.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel").status_code == 200
    assert acme.delete(f"/v1/files/{file_id}").status_code == 200
    assert not (service.settings.artifact_root / file_key(file_id)).exists()
