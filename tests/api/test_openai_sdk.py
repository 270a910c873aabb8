"""The official ``openai`` SDK against the app served by uvicorn (no worker): files, job creation with
SDK fields and our ``extra_body`` fields, retrieve, list with auto-paging, pause/resume/cancel,
list_events (newest first, auto-paging) and checkpoints.list; errors map to the SDK's exceptions."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_harness import CHAT_ROWS, CLASSIFICATION_ROWS, Service, jsonl, serving
from openai import AuthenticationError, BadRequestError, NotFoundError, OpenAI

from sparsegrad_service.db import session_scope
from sparsegrad_service.enums import EventType
from sparsegrad_service.job_records import add_event
from sparsegrad_service.models import Checkpoint


@pytest.fixture()
def base_url(service: Service) -> Iterator[str]:
    with serving(service.app) as url:
        yield url


def test_openai_sdk_works_unchanged(service: Service, base_url: str, sst2_jsonl: Path, tmp_path: Path) -> None:
    client = OpenAI(base_url=base_url, api_key=service.key("sdk"), max_retries=0)

    chat_path = tmp_path / "chat.jsonl"
    chat_path.write_bytes(jsonl(CHAT_ROWS))
    with chat_path.open("rb") as f:
        chat_file = client.files.create(file=f, purpose="fine-tune")
    assert chat_file.id.startswith("file-") and chat_file.purpose == "fine-tune" and chat_file.bytes > 0
    assert client.files.retrieve(chat_file.id).filename == "chat.jsonl"
    chat_job = client.fine_tuning.jobs.create(model="smollm2-135m", training_file=chat_file.id)
    assert chat_job.status == "queued" and chat_job.method is not None and chat_job.method.type == "sparsegrad"
    assert chat_job.model_extra is not None and chat_job.model_extra["task"]["type"] == "causal_lm"
    assert client.fine_tuning.jobs.cancel(chat_job.id).status == "cancelled"

    with sst2_jsonl.open("rb") as f:
        train = client.files.create(file=f, purpose="fine-tune")
    supervised = client.fine_tuning.jobs.create(
        model="minilm-l6", training_file=train.id, suffix="sdk", seed=7, metadata={"team": "nlp"},
        method={"type": "supervised", "supervised": {"hyperparameters": {"batch_size": 8, "n_epochs": 1}}},
    )
    assert supervised.seed == 7 and supervised.metadata == {"team": "nlp"} and supervised.suffix == "sdk"
    assert supervised.hyperparameters.batch_size == 8 and supervised.hyperparameters.n_epochs == 1
    assert client.fine_tuning.jobs.pause(supervised.id).status == "paused"
    assert client.fine_tuning.jobs.resume(supervised.id).status == "queued"

    job = client.fine_tuning.jobs.create(
        model="minilm-l6", training_file=train.id,
        extra_body={"task": {"type": "classification"},
                    "method": {"type": "sparsegrad", "sparsegrad": {"density": 0.05, "calibration_steps": 2}},
                    "hyperparameters": {"batch_size": 8, "max_steps": 25, "learning_rate": 1e-3}},
    )
    assert job.method is not None and job.method.type == "sparsegrad"
    assert client.fine_tuning.jobs.retrieve(job.id).id == job.id
    ids = [j.id for j in client.fine_tuning.jobs.list(limit=1)]  # auto-paging over `after`
    assert ids == [job.id, supervised.id, chat_job.id]
    page = client.fine_tuning.jobs.list(limit=2)
    assert len(page.data) == 2 and page.has_more
    cancelled = client.fine_tuning.jobs.list(extra_query={"status": "cancelled"})
    assert [j.id for j in cancelled] == [chat_job.id]

    with session_scope(service.url) as session:
        for i in range(8):
            add_event(session, job.id, EventType.metrics, f"step {i}", data={"step": i, "loss": 1.0 / (i + 1)})
        session.add(Checkpoint(job_id=job.id, step=20, metrics={"train_loss": 0.3}, storage_key="k", bytes=1,
                               sha256="0" * 64))
    events = client.fine_tuning.jobs.list_events(job.id, limit=5)
    assert len(events.data) == 5 and events.has_more
    assert all(e.object == "fine_tuning.job.event" for e in events.data)
    assert events.data[0].message == "step 7" and events.data[0].created_at >= events.data[-1].created_at
    everything = list(client.fine_tuning.jobs.list_events(job.id, limit=3))
    assert [e.message for e in everything][-1] == "Job created" and len({e.id for e in everything}) == 9
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id)
    assert checkpoints.data[0].step_number == 20 and checkpoints.data[0].fine_tuning_job_id == job.id
    assert checkpoints.data[0].metrics.train_loss == 0.3

    with pytest.raises(BadRequestError) as bad:
        client.fine_tuning.jobs.create(model="minilm-l6", training_file=train.id,
                                       extra_body={"method": {"sparsegrad": {"density": 0}}})
    assert bad.value.param == "method.sparsegrad.density"  # type: ignore[attr-defined]
    other = OpenAI(base_url=base_url, api_key=service.key("other"), max_retries=0)
    with pytest.raises(NotFoundError):
        other.fine_tuning.jobs.retrieve(job.id)
    assert list(other.fine_tuning.jobs.list()) == []
    with pytest.raises(AuthenticationError):
        OpenAI(base_url=base_url, api_key="sg-wrong", max_retries=0).models.list()


@pytest.mark.parametrize("db", ["sqlite", "postgres"], indirect=True)
def test_jobs_list_filters_by_metadata_as_the_sdk_sends_it(service: Service, base_url: str) -> None:
    client = OpenAI(base_url=base_url, api_key=service.key("sdk"), max_retries=0)
    with io.BytesIO(jsonl(CLASSIFICATION_ROWS)) as f:
        train = client.files.create(file=("train.jsonl", f), purpose="fine-tune")

    def job(metadata: dict[str, str] | None) -> str:
        return client.fine_tuning.jobs.create(model="minilm-l6", training_file=train.id, metadata=metadata).id

    odd_key = 'a "quoted".key[0]'  # quotes, a dot and brackets: no JSON path or query syntax leaks through
    trial_a, nlp, trial_b = job({"team": "trial"}), job({"team": "nlp", "stage": "x"}), job({"team": "trial", "stage": "x"})
    empty_team, odd, bare = job({"team": ""}), job({odd_key: "v"}), job(None)
    client.fine_tuning.jobs.cancel(trial_a)

    def ids(**query: object) -> list[str]:
        return [j.id for j in client.fine_tuning.jobs.list(limit=1, **query)]  # type: ignore[arg-type]

    assert ids(metadata={"team": "trial"}) == [trial_b, trial_a]  # every page (after=) keeps the filter
    assert ids(metadata={"team": "trial", "stage": "x"}) == [trial_b]
    assert ids(metadata={"stage": "x"}) == [trial_b, nlp]
    assert ids(metadata={"team": ""}) == [empty_team]
    assert ids(metadata={odd_key: "v"}) == [odd]
    assert ids(metadata={"team": "nobody"}) == []
    assert ids(metadata={}) == [bare, odd, empty_team, trial_b, nlp, trial_a]
    assert ids(metadata={"team": "trial"}, extra_query={"status": "cancelled"}) == [trial_a]
    assert ids(extra_query={"metadata": "null"}) == [bare]
    # the SDK's own encoding, as sent
    raw = client.fine_tuning.jobs.with_raw_response.list(metadata={"team": "trial"})
    assert "metadata%5Bteam%5D=trial" in str(raw.http_request.url)

    for query, message in (({"metadata": "yes"}, "metadata"), ({"metadata": "null", "metadata[team]": "x"}, "metadata"),
                           ({"metadata[]": "x"}, "metadata[]"), ({"metadata[team": "x"}, "metadata[team")):
        with pytest.raises(BadRequestError) as bad:
            client.fine_tuning.jobs.list(extra_query=query)
        assert bad.value.param == message, query  # type: ignore[attr-defined]
    other = OpenAI(base_url=base_url, api_key=service.key("other"), max_retries=0)
    assert list(other.fine_tuning.jobs.list(metadata={"team": "trial"})) == []
