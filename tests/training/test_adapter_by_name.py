"""``load_adapter`` takes the base model by the name a run used: the bundled SmolLM2 decoder (``smollm2-135m``, a
GGUF file in its package) resolves through the bundled models the recipe loads from, and the loaded adapter
computes what the trained model computed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sparsegrad_core import SparseGradConfig, load_adapter
from sparsegrad_core.adapter import ADAPTER_WEIGHTS, read_adapter_config
from sparsegrad_core.loading import load_tokenizer
from sparsegrad_core.methods import MethodSpec
from sparsegrad_core.recipe import finetune
from sparsegrad_core.training import TrainingArguments
from sparsegrad_data import ColumnMapping, TaskType, load_dataset

MODEL = "smollm2-135m"


@pytest.mark.slow
def test_a_decoder_adapter_loads_by_the_bundled_models_name(chat_file: Path, tmp_path: Path) -> None:
    chats = load_dataset(chat_file, TaskType.CAUSAL_LM, ColumnMapping())
    # Few, cheap targets: one projection kind in every tenth block, one step.
    spec = MethodSpec(type="sparsegrad", setting="peft", sparsegrad=SparseGradConfig(
        density=0.01, calibration_steps=1, projections=["down_proj"], layer_stride=10))
    args = TrainingArguments(batch_size=4, max_steps=1, max_seq_length=32, learning_rate=1e-2, seed=3,
                             output_dir=str(tmp_path / "run"))
    run = finetune(MODEL, chats, None, spec, args, run_info={"model": MODEL})
    export = run.result.export_dir
    assert export is not None and read_adapter_config(export)["base_model"] == MODEL
    deltas = [t for name, t in load_file(str(export / ADAPTER_WEIGHTS)).items() if name.endswith("sg_delta")]
    assert deltas and any(bool(t.abs().sum() > 0) for t in deltas)  # the adapter changes the model

    loaded = load_adapter(MODEL, export).eval()
    tokenizer = load_tokenizer(MODEL)
    batch = tokenizer(["What is 2 plus 2?"], return_tensors="pt")
    with torch.no_grad():
        expected = run.prepared.model.eval()(**batch).logits
        got = loaded(**batch).logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
