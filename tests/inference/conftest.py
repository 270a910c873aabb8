"""Fixtures of the inference server tests: tiny models registered as base models (``tiny-llama``, a LLaMA decoder
with the MiniLM tokenizer, no chat template; ``tiny-bert``), real adapters trained on them with the recipe and
stored in an artifact store as a job's archives are, and the server's app on a TestClient with the worker token."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from inference_harness import TOKEN, Trained, server_settings, store_folder
from support.tiny import CHATS, save_model_folder, tiny_llama

from sparsegrad_core import SparseGradConfig
from sparsegrad_core.loading import load_tokenizer
from sparsegrad_core.methods import MethodSpec, lora_export_dir
from sparsegrad_core.recipe import finetune
from sparsegrad_core.training import TrainingArguments
from sparsegrad_data import ColumnMapping, TaskType, glue_mapping, load_dataset, sample_path
from sparsegrad_service.schemas.inference import ServedModel
from sparsegrad_service.settings import Settings
from sparsegrad_service.store import LocalArtifactStore


@pytest.fixture(scope="session")
def inference_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("inference")


@pytest.fixture(scope="session")
def tiny_llama_dir(inference_root: Path) -> Path:
    tokenizer = load_tokenizer("minilm-l6")
    return save_model_folder(inference_root / "tiny-llama", tiny_llama(tokenizer, layers=2), tokenizer)


@pytest.fixture(scope="session")
def artifact_store(inference_root: Path) -> LocalArtifactStore:
    return LocalArtifactStore(inference_root / "data" / "artifacts")


@pytest.fixture(scope="session")
def chat_adapter(inference_root: Path, tiny_llama_dir: Path, artifact_store: LocalArtifactStore) -> Trained:
    """A block SparseGrad adapter of ``tiny-llama`` trained hard on three chats (so it answers differently)."""
    path = inference_root / "chats.jsonl"
    path.write_text("".join(json.dumps({"messages": CHATS[i % len(CHATS)]}) + "\n" for i in range(12)))
    chats = load_dataset(path, TaskType.CAUSAL_LM, ColumnMapping())
    spec = MethodSpec(type="sparsegrad", setting="peft", sparsegrad=SparseGradConfig(
        density=0.2, calibration_steps=1, selection="block"))
    args = TrainingArguments(batch_size=4, max_steps=12, max_seq_length=48, learning_rate=5e-2, seed=0,
                             output_dir=str(inference_root / "chat-run"))
    run = finetune(str(tiny_llama_dir), chats, None, spec, args, run_info={"model": "tiny-llama"})
    export = run.result.export_dir
    assert export is not None and lora_export_dir(export).is_dir()
    served = ServedModel(
        name="ft:tiny-llama:org-test::ftjob-chat", base="tiny-llama", task="causal_lm",
        chain=[store_folder(artifact_store, export, "jobs/ftjob-chat/artifacts/ftjob-chat-adapter.tar.gz")])
    return Trained(served, export, str(tiny_llama_dir))


@pytest.fixture(scope="session")
def classifier_adapter(inference_root: Path, tiny_model_dir: Path, artifact_store: LocalArtifactStore) -> Trained:
    """A SparseGrad adapter of ``tiny-bert`` trained on SST-2 sentences (two named classes)."""
    task, mapping = glue_mapping("sst2")
    train = load_dataset(sample_path("sst2_train"), task, mapping)
    train = replace(train, examples=train.examples[:64])
    spec = MethodSpec(type="sparsegrad", setting="peft", sparsegrad=SparseGradConfig(density=0.1, calibration_steps=1))
    args = TrainingArguments(batch_size=8, max_steps=6, max_seq_length=32, learning_rate=1e-2, seed=0,
                             output_dir=str(inference_root / "cls-run"))
    run = finetune(str(tiny_model_dir), train, None, spec, args, run_info={"model": "tiny-bert"})
    export = run.result.export_dir
    assert export is not None
    served = ServedModel(
        name="ft:tiny-bert:org-test::ftjob-cls", base="tiny-bert", task="classification",
        chain=[store_folder(artifact_store, export, "jobs/ftjob-cls/artifacts/ftjob-cls-adapter.tar.gz")])
    return Trained(served, export, str(tiny_model_dir))


@pytest.fixture(scope="session")
def settings(inference_root: Path, tiny_llama_dir: Path, tiny_model_dir: Path) -> Settings:
    return server_settings(inference_root, tiny_llama_dir, tiny_model_dir)


@pytest.fixture(scope="session")
def server(settings: Settings) -> Iterator[TestClient]:
    """The inference server (transformers engine) as the API reaches it: with the worker token."""
    from inference.app import create_app

    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client
