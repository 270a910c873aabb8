"""Creating jobs: defaults filled in, the full spec, OpenAI SDK shapes, refusals that name the field,
task inference and re-validation, model checks, and the queue message."""

from __future__ import annotations

from typing import Any

import pytest
from api_harness import CHAT_ROWS, CLASSIFICATION_ROWS, Service, TenantClient, jsonl

from sparsegrad_service.db import session_scope
from sparsegrad_service.models import Job

JOBS = "/v1/fine_tuning/jobs"


def job_spec(service: Service, job_id: str) -> dict[str, Any]:
    with session_scope(service.url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return dict(job.spec)


@pytest.mark.parametrize("db", ["sqlite", "postgres"], indirect=True)
def test_defaults_are_filled_in_and_the_job_is_queued(service: Service, acme: TenantClient) -> None:
    file_id = acme.upload_id()
    job = acme.create_job(training_file=file_id)
    assert job["id"].startswith("ftjob-") and job["object"] == "fine_tuning.job"
    assert job["status"] == "queued" and job["queue_position"] == 1 and job["progress"] == 0.0
    assert job["model"] == "minilm-l6" and job["training_file"] == file_id and job["validation_file"] is None
    assert job["method"] == {"type": "sparsegrad", "setting": "peft",
                             "sparsegrad": {"density": 0.01, "calibration_steps": 10, "selection": "dynamic",
                                            "block_energy_share": 0.97, "block_max_cost": 1.0,
                                            "recalibrate_every": 100}}  # dynamic selection re-calibrates
    assert job["hyperparameters"]["n_epochs"] == 3 and job["hyperparameters"]["batch_size"] == 16
    assert job["hyperparameters"]["learning_rate"] == 3e-4  # the PEFT-pure setting's default
    assert job["hyperparameters"]["learning_rate_multiplier"] == pytest.approx(1.0)  # of the setting's default
    assert job["hyperparameters"]["group_by_length"] is True and job["hyperparameters"]["gradient_checkpointing"] is False
    assert job["hyperparameters"]["checkpoint_every"] == service.settings.checkpoint_every
    assert job["task"] == {"type": "classification", "text_column": "text", "text_pair_column": None,
                           "label_column": "label", "messages_column": "messages", "prompt_column": "prompt",
                           "completion_column": "completion", "has_header": True,
                           "num_labels": 2, "label_names": ["0", "1"]}
    assert job["seed"] == 42 and job["integrations"] == [] and job["result_files"] == []
    assert job["error"] is None and job["started_at"] is None and isinstance(job["created_at"], int)
    for key in ("finished_at", "trained_tokens", "fine_tuned_model", "estimated_finish", "metadata", "suffix",
                "phase", "organization_id", "attempts", "step", "total_steps", "summary"):
        assert key in job
    spec = job_spec(service, job["id"])
    assert set(spec) == {"version", "task", "method", "hyperparameters", "validation_split", "merge_model", "integrations",
                         "requested", "lineage"}
    assert spec["lineage"] is None and job["lineage"] == [{"model": "minilm-l6", "fine_tuning_job_id": None, "step": None}]
    assert spec["version"] == 2 and spec["validation_split"] == 0.1
    assert spec["method"] == {"type": "sparsegrad", "setting": "peft", **job["method"]["sparsegrad"]}
    assert spec["hyperparameters"] | {"learning_rate_multiplier": pytest.approx(1.0)} == job["hyperparameters"]
    assert spec["task"] == job["task"]
    assert job["requested"] == spec["requested"] == {"method": None, "hyperparameters": None}
    # the message reached the (filesystem) broker
    messages = list((service.settings.broker_dir / "queue").glob("*.msg"))
    assert len(messages) == 1 and job["id"] in messages[0].read_text()
    assert acme.create_job(training_file=file_id)["queue_position"] == 2
    events = acme.get(f"{JOBS}/{job['id']}/events").json()["data"]
    assert [e["message"] for e in events] == ["Job created"]


def test_full_spec(service: Service, acme: TenantClient) -> None:
    train, valid = acme.upload_id(), acme.upload_id(jsonl(CLASSIFICATION_ROWS[:4]), "dev.jsonl")
    body = {
        "training_file": train, "validation_file": valid,
        "task": {"type": "classification", "text_column": "text", "label_column": "label", "num_labels": 2},
        "method": {"type": "lora", "setting": "peft", "lora": {"rank": 8, "alpha": 16, "dropout": 0.1},
                   "sparsegrad": {"density": 0.05, "calibration_steps": 3, "selection": "fixed"}},
        "hyperparameters": {"n_epochs": 2, "batch_size": 8, "learning_rate": 3e-4, "max_seq_length": 64,
                            "max_steps": 100, "lr_scheduler": "cosine", "warmup_ratio": 0.1,
                            "checkpoint_every": 7, "original_share_every": 0, "group_by_length": False,
                            "gradient_checkpointing": True},
        "seed": 7, "suffix": "mine", "metadata": {"team": "nlp"}, "validation_split": 0.2, "merge_model": True,
    }
    job = acme.create_job(body)
    assert job["validation_file"] == valid and job["seed"] == 7 and job["suffix"] == "mine"
    assert job["metadata"] == {"team": "nlp"}
    # density: SparseGrad's, which a LoRA job names for its equal-parameter default rank
    assert job["method"] == {"type": "lora", "lora": {"rank": 8, "alpha": 16.0, "dropout": 0.1, "density": 0.05},
                             "setting": "peft"}
    hp = job["hyperparameters"]
    assert (hp["n_epochs"], hp["batch_size"], hp["learning_rate"], hp["max_seq_length"]) == (2, 8, 3e-4, 64)
    assert (hp["max_steps"], hp["lr_scheduler"], hp["checkpoint_every"]) == (100, "cosine", 7)
    assert hp["original_share_every"] is None and hp["group_by_length"] is False
    assert hp["gradient_checkpointing"] is True
    spec = job_spec(service, job["id"])
    assert spec["hyperparameters"] | {"learning_rate_multiplier": hp["learning_rate_multiplier"]} == hp
    assert hp["learning_rate_multiplier"] == pytest.approx(1.0)  # 3e-4 is LoRA's PEFT-pure default
    assert spec["merge_model"] is True and spec["validation_split"] == 0.2
    assert spec["method"] == {"type": "lora", "setting": "peft", **job["method"]["lora"]}


def test_openai_sdk_shapes(acme: TenantClient) -> None:
    job = acme.create_job(
        method={"type": "supervised", "supervised": {"hyperparameters": {
            "batch_size": 8, "n_epochs": 5, "learning_rate_multiplier": 2}}},
        hyperparameters={"n_epochs": 5, "warmup_ratio": "auto"}, integrations=None, seed=None, suffix=None,
    )
    assert job["method"]["type"] == "sparsegrad"
    hp = job["hyperparameters"]
    # the multiplier scales the default of the job's method and setting (the PEFT-pure one's 3e-4)
    assert hp["batch_size"] == 8 and hp["n_epochs"] == 5 and hp["learning_rate"] == pytest.approx(6e-4)
    assert hp["warmup_ratio"] == 0.0 and hp["learning_rate_multiplier"] == pytest.approx(2)
    # what was asked, as asked: OpenAI's method type and "auto" (null) next to what it resolved to
    assert job["requested"]["method"] == {"type": "supervised", "supervised": {"hyperparameters": {
        "batch_size": 8, "n_epochs": 5, "learning_rate_multiplier": 2.0}}}
    assert job["requested"]["hyperparameters"] == {"n_epochs": 5, "warmup_ratio": None}
    # the same hyperparameter given twice with different values is refused, naming both places
    for top, inner in ((5, 3), ("auto", 3), (5, "auto")):
        r = acme.post(JOBS, json={"model": "minilm-l6", "training_file": acme.upload_id(),
                                  "hyperparameters": {"n_epochs": top},
                                  "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": inner}}}})
        assert r.status_code == 400 and r.json()["error"]["code"] == "conflicting_values", r.text
        assert r.json()["error"]["param"] == "method.supervised.hyperparameters.n_epochs"
        assert "hyperparameters.n_epochs" in r.json()["error"]["message"]
    # JSON true is not the number 1
    r = acme.post(JOBS, json={"model": "minilm-l6", "training_file": acme.upload_id(), "hyperparameters": {"n_epochs": True}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "hyperparameters.n_epochs", r.text
    assert acme.create_job(integrations=[])["status"] == "queued"
    r = acme.post(JOBS, json={"model": "minilm-l6", "training_file": acme.upload_id(),
                              "integrations": [{"type": "wandb", "wandb": {"project": "x"}}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "integrations"
    for method in ("dpo", "reinforcement"):
        r = acme.post(JOBS, json={"model": "minilm-l6", "training_file": acme.upload_id(),
                                  "method": {"type": method, method: {"hyperparameters": {"beta": 0.1}}}})
        assert r.status_code == 400 and r.json()["error"]["param"] == "method.type", r.text
        assert r.json()["error"]["code"] == "unsupported_method"


@pytest.mark.parametrize(("given", "stored"), [
    ({}, 100), ({"selection": "dynamic"}, 100), ({"recalibrate_every": 0}, 0), ({"recalibrate_every": 7}, 7),
    ({"selection": "block"}, 0), ({"selection": "fixed"}, 0), ({"selection": "fixed", "recalibrate_every": None}, 0),
])
def test_recalibration_defaults_to_every_100_steps_with_dynamic_selection_only(
        service: Service, acme: TenantClient, given: dict[str, object], stored: int) -> None:
    """The contract's JOB_RECALIBRATE_EVERY for the exact method; block and fixed selection (which cannot
    re-calibrate) default to never instead of being refused; an explicit value, 0 included, is kept."""
    job = acme.create_job(training_file=acme.upload_id(), method={"type": "sparsegrad", "sparsegrad": given})
    assert job["method"]["sparsegrad"]["recalibrate_every"] == stored
    assert job_spec(service, job["id"])["method"]["recalibrate_every"] == stored


def test_a_stored_spec_without_recalibrate_every_never_recalibrated() -> None:
    """Specs stored before the option existed ran without re-calibration; reading them back must not pick up
    the new jobs' default."""
    from sparsegrad_service.job_spec import JobSpec

    stored = JobSpec.from_stored({"version": 2, "method": {"type": "sparsegrad", "setting": "peft", "selection": "dynamic"}})
    assert stored.method.recalibrate_every == 0  # type: ignore[union-attr]


def test_block_selection_and_its_rule_are_stored(service: Service, acme: TenantClient) -> None:
    sg = {"selection": "block", "block_energy_share": 0.9, "block_max_cost": 2.0}
    job = acme.create_job(training_file=acme.upload_id(), method={"type": "sparsegrad", "sparsegrad": sg})
    assert job["method"]["sparsegrad"] == {"density": 0.01, "calibration_steps": 10, "recalibrate_every": 0, **sg}
    assert job_spec(service, job["id"])["method"] == {"type": "sparsegrad", "setting": "peft", **job["method"]["sparsegrad"]}


@pytest.mark.parametrize(("body", "param", "fragment"), [
    ({"foo": 1}, "foo", "Unrecognized request argument supplied: 'foo'"),
    ({"method": {"type": "sparsegrad", "sparsegrad": {"densty": 0.1}}}, "method.sparsegrad.densty", "Unrecognized"),
    ({"method": {"sparsegrad": {"density": 0}}}, "method.sparsegrad.density", "(got 0)"),
    ({"method": {"sparsegrad": {"density": 2}}}, "method.sparsegrad.density", "(got 2)"),
    ({"method": {"sparsegrad": {"calibration_steps": 0}}}, "method.sparsegrad.calibration_steps", "(got 0)"),
    ({"method": {"type": "adam"}}, "method.type", '"adam"'),
    ({"method": {"sparsegrad": {"selection": "blocks"}}}, "method.sparsegrad.selection", '"blocks"'),
    ({"method": {"sparsegrad": {"selection": "block", "block_energy_share": 1.5}}},
     "method.sparsegrad.block_energy_share", "(got 1.5)"),
    ({"method": {"sparsegrad": {"selection": "block", "block_max_cost": 0}}},
     "method.sparsegrad.block_max_cost", "(got 0)"),
    ({"method": {"sparsegrad": {"selection": "dynamic", "recalibrate_every": -1}}},
     "method.sparsegrad.recalibrate_every", "(got -1)"),
    ({"method": {"sparsegrad": {"selection": "block", "recalibrate_every": 100}}},
     "method.sparsegrad.recalibrate_every", "needs selection 'dynamic' (got 'block')"),
    ({"method": {"lora": {"rank": 2000}}}, "method.lora.rank", "(got 2000)"),
    ({"hyperparameters": {"n_epochs": 0}}, "hyperparameters.n_epochs", "(got 0)"),
    ({"hyperparameters": {"batch_size": 4096}}, "hyperparameters.batch_size", "(got 4096)"),
    ({"hyperparameters": {"learning_rate": 0}}, "hyperparameters.learning_rate", "(got 0)"),
    ({"hyperparameters": {"max_seq_length": 4}}, "hyperparameters.max_seq_length", "(got 4)"),
    ({"hyperparameters": {"max_steps": 0}}, "hyperparameters.max_steps", "(got 0)"),
    ({"hyperparameters": {"gradient_checkpointing": "maybe"}}, "hyperparameters.gradient_checkpointing", "boolean"),
    ({"hyperparameters": {"learning_rate": 1e-4, "learning_rate_multiplier": 2}},
     "hyperparameters.learning_rate_multiplier", "either"),
    ({"task": {"type": "summarization"}}, "task.type", '"summarization"'),
    ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata", "at most 16"),
    ({"metadata": {"k": 1}}, "metadata.k", "string"),
    ({"seed": -1}, "seed", "(got -1)"),
    ({"validation_split": 0.9}, "validation_split", "(got 0.9)"),
    ({"model": "gpt-4o"}, "model", "minilm-l6, smollm2-135m"),
    ({"training_file": "file-nope"}, "training_file", "no such file"),
    ({"validation_file": "file-nope"}, "validation_file", "no such file"),
])
def test_invalid_requests_name_the_field(acme: TenantClient, body: dict[str, Any], param: str, fragment: str) -> None:
    payload = {"model": "minilm-l6", "training_file": acme.upload_id(), **body}
    r = acme.post(JOBS, json=payload)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert fragment in error["message"] and (param in error["message"] or param in ("model", "training_file",
                                                                                     "validation_file"))


def test_missing_fields_and_bad_json(acme: TenantClient) -> None:
    r = acme.post(JOBS, json={"model": "minilm-l6"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "training_file"
    assert r.json()["error"]["code"] == "missing_required_parameter"
    r = acme.post(JOBS, content=b"{nope", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = acme.post(JOBS, json=["not", "an", "object"])
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("db", ["sqlite", "postgres"], indirect=True)
def test_chat_file_infers_causal_lm_on_a_decoder_and_is_refused_on_an_encoder(acme: TenantClient) -> None:
    chat = acme.upload_id(jsonl(CHAT_ROWS), "chat.jsonl")
    job = acme.create_job(model="smollm2-135m", training_file=chat)
    assert job["task"]["type"] == "causal_lm" and job["task"]["num_labels"] is None
    r = acme.post(JOBS, json={"model": "minilm-l6", "training_file": chat})
    assert r.status_code == 400 and r.json()["error"]["param"] == "task.type"
    assert "decoder" in r.json()["error"]["message"]


def test_an_explicit_task_revalidates_the_files(acme: TenantClient) -> None:
    file_id = acme.upload_id(jsonl([{"sentence": f"s {i}", "y": i % 3} for i in range(9)]), "t.jsonl",
                             text_column="sentence", label_column="y")
    job = acme.create_job(training_file=file_id)  # the upload's mapping is kept
    assert (job["task"]["text_column"], job["task"]["label_column"], job["task"]["num_labels"]) == ("sentence", "y", 3)
    r = acme.post(JOBS, json={"model": "minilm-l6", "training_file": file_id, "task": {"type": "classification"}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "training_file"
    assert "t.jsonl:1: field 'text'" in r.json()["error"]["message"]
    assert r.json()["error"]["details"][0]["line"] == 1
    job = acme.create_job(training_file=file_id, task={"type": "regression", "text_column": "sentence",
                                                       "label_column": "y"})
    assert job["task"]["type"] == "regression" and job["task"]["label_names"] is None
    r = acme.post(JOBS, json={"model": "minilm-l6", "training_file": file_id,
                              "task": {"text_column": "sentence", "label_column": "sentence"}})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_column_mapping"
    assert r.json()["error"]["param"] == "task" and "same column twice" in r.json()["error"]["message"]
    one_class = acme.upload_id(jsonl([{"text": f"t{i}", "label": "pos"} for i in range(4)]))
    r = acme.post(JOBS, json={"model": "minilm-l6", "training_file": one_class})
    assert r.status_code == 400 and r.json()["error"]["code"] == "too_few_classes"


def test_the_validation_file_must_match_the_training_labels(acme: TenantClient) -> None:
    train = acme.upload_id(jsonl([{"text": f"t{i}", "label": ["pos", "neg"][i % 2]} for i in range(8)]))
    good = acme.upload_id(jsonl([{"text": "a", "label": "pos"}]), "dev.jsonl")
    bad = acme.upload_id(jsonl([{"text": "a", "label": "pos"}, {"text": "b", "label": "meh"},
                                {"text": "c", "label": "neg"}]), "dev2.jsonl")
    assert acme.create_job(training_file=train, validation_file=good)["task"]["label_names"] == ["neg", "pos"]
    r = acme.post(JOBS, json={"model": "minilm-l6", "training_file": train, "validation_file": bad})
    assert r.status_code == 400 and r.json()["error"]["param"] == "validation_file"
    assert "dev2.jsonl:2: field 'label'" in r.json()["error"]["message"]


def test_a_broker_outage_keeps_the_job_queued_with_a_warning(service: Service, acme: TenantClient) -> None:
    class DownQueue:
        def enqueue(self, job_id: str) -> str:
            raise ConnectionError("broker down")

    service.app.state.queue = DownQueue()
    job = acme.create_job()
    assert job["status"] == "queued"
    events = acme.get(f"{JOBS}/{job['id']}/events", params={"order": "asc"}).json()["data"]
    assert [e["level"] for e in events] == ["info", "warn"] and "unreachable" in events[1]["message"]


def test_the_default_selection_is_the_librarys_job_selection() -> None:
    """The API cannot import the library (torch); its job default and the CLIs' must still be one value."""
    from sparsegrad_core.config import JOB_SELECTION
    from sparsegrad_service.schemas.job_create import SparseGradParams

    assert SparseGradParams().selection == JOB_SELECTION == "dynamic"


def test_the_defaults_endpoint_answers_what_a_bare_request_resolves_to(service: Service, acme: TenantClient) -> None:
    defaults = acme.get("/v1/fine_tuning/defaults").json()
    job = acme.create_job(training_file=acme.upload_id())
    kind = defaults["methods"][0]
    assert kind == job["method"]["type"] and set(defaults["methods"]) == {"sparsegrad", "lora", "meprop", "full"}
    assert {"type": kind, **job["method"][kind], "setting": job["method"]["setting"]} == defaults["method"][kind]
    assert defaults["hyperparameters"] == job["hyperparameters"]
    assert defaults["seed"] == job["seed"] and defaults["validation_split"] == job["validation_split"]
    assert set(defaults["selections"]) == {"dynamic", "fixed", "block"}
    for method in defaults["methods"]:  # each method's defaults are what a request naming only it gets
        body = {"method": {"type": method}}
        got = acme.create_job(training_file=acme.upload_id(), **body)["method"]
        assert {"type": method, **got.get(method, {}), "setting": got["setting"]} == defaults["method"][method]
    # the learning rate a request without one gets, per method and setting: larger where only the method trains
    assert defaults["learning_rates"]["full"] == {"paper": 1e-4, "peft": 1e-4}
    for method in ("sparsegrad", "lora", "meprop"):
        assert defaults["learning_rates"][method] == {"paper": 1e-4, "peft": 3e-4}
        for setting in ("paper", "peft"):
            job = acme.create_job(training_file=acme.upload_id(), method={"type": method, "setting": setting})
            assert job["hyperparameters"]["learning_rate"] == defaults["learning_rates"][method][setting]
    full = acme.create_job(training_file=acme.upload_id(), method={"type": "full"})
    assert full["hyperparameters"]["learning_rate"] == 1e-4
    # OpenAI's multiplier scales the job's own default, and reads back as that ratio
    for method, setting, expected in (("sparsegrad", "peft", 1.5e-4), ("sparsegrad", "paper", 5e-5), ("full", "paper", 5e-5)):
        hp = acme.create_job(training_file=acme.upload_id(), method={"type": method, "setting": setting},
                             hyperparameters={"learning_rate_multiplier": 0.5})["hyperparameters"]
        assert hp["learning_rate"] == pytest.approx(expected) and hp["learning_rate_multiplier"] == pytest.approx(0.5)
