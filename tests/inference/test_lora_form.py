"""What the vLLM engine serves as a LoRA adapter, checked on the CPU: the LoRA form of a stored block SparseGrad
adapter is the LoRA export the job made (same tensors) and computes the fine-tuned model's logits under plain
PEFT, also padded to one rank; adapters without a LoRA form say why; and without vLLM the engine refuses to start
with the install line."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from inference_harness import Trained
from safetensors.torch import load_file

from inference.lora import NoLoraForm, lora_form, lora_rank, with_uniform_rank
from inference.vllm_backend import INSTALL_HINT, VllmBackend, VllmMissing, served_lora_rank
from sparsegrad_core import SparseGradConfig
from sparsegrad_core.methods import MethodSpec, lora_export_dir
from sparsegrad_core.recipe import finetune, load_base_for, merge
from sparsegrad_core.training import TrainingArguments
from sparsegrad_data import ColumnMapping, TaskType, load_dataset
from sparsegrad_service.settings import Settings


def test_the_lora_form_of_a_block_adapter_is_the_jobs_lora_export(chat_adapter: Trained, tmp_path: Path) -> None:
    base, _ = load_base_for(chat_adapter.source, chat_adapter.export_dir)
    folder = lora_form(chat_adapter.export_dir, base, tmp_path / "lora", max_rank=512)
    expected = load_file(str(lora_export_dir(chat_adapter.export_dir) / "adapter_model.safetensors"))
    got = load_file(str(folder / "adapter_model.safetensors"))
    assert set(got) == set(expected) and got
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor)
    assert lora_rank(folder) == lora_rank(lora_export_dir(chat_adapter.export_dir))

    from peft import PeftModel

    merged, tokenizer = merge(chat_adapter.source, chat_adapter.export_dir)
    batch = tokenizer(["what is two plus two?"], return_tensors="pt")
    with torch.no_grad():
        expected_logits = merged.eval()(**batch).logits
    ranks = {t.shape[0] for n, t in got.items() if n.endswith("lora_A.weight")}
    uniform = with_uniform_rank(shutil.copytree(folder, tmp_path / "uniform"))
    padded = load_file(str(uniform / "adapter_model.safetensors"))
    assert len(ranks) > 1 and {t.shape[0] for n, t in padded.items() if n.endswith("lora_A.weight")} == {max(ranks)}
    for lora_dir in (folder, uniform):  # both compute the fine-tuned model under plain PEFT
        fresh, _ = load_base_for(chat_adapter.source, chat_adapter.export_dir)
        peft_model = PeftModel.from_pretrained(fresh, str(lora_dir)).eval()
        with torch.no_grad():
            torch.testing.assert_close(peft_model(**batch).logits, expected_logits, atol=1e-4, rtol=1e-4)

    with pytest.raises(NoLoraForm, match="above the served maximum"):
        lora_form(chat_adapter.export_dir, load_base_for(chat_adapter.source, chat_adapter.export_dir)[0],
                  tmp_path / "small", max_rank=1)
    assert served_lora_rank(lora_rank(folder)) >= lora_rank(folder) and served_lora_rank(9) == 16


def test_a_dynamic_selection_adapter_has_no_lora_form(inference_root: Path, tiny_llama_dir: Path,
                                                      tmp_path: Path, chat_adapter: Trained) -> None:
    chats = load_dataset(inference_root / "chats.jsonl", TaskType.CAUSAL_LM, ColumnMapping())
    spec = MethodSpec(type="sparsegrad", setting="peft", sparsegrad=SparseGradConfig(
        density=0.05, calibration_steps=1, selection="dynamic"))
    args = TrainingArguments(batch_size=4, max_steps=1, max_seq_length=48, seed=0, output_dir=str(tmp_path / "run"))
    export = finetune(str(tiny_llama_dir), chats, None, spec, args).result.export_dir
    assert export is not None
    with pytest.raises(NoLoraForm, match="not low-rank"):
        lora_form(export, load_base_for(str(tiny_llama_dir), export)[0], tmp_path / "lora", max_rank=512)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_without_vllm_the_engine_refuses_to_start_saying_how_to_install_it(settings: Settings) -> None:
    with pytest.raises(VllmMissing) as missing:
        VllmBackend(settings)
    assert str(missing.value) == INSTALL_HINT and "pip install vllm" in INSTALL_HINT


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_the_gpu_check_says_in_one_line_how_to_install_vllm() -> None:
    script = Path(__file__).resolve().parents[2] / "scripts" / "gpu_vllm_check.py"
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr == ""
    assert done.stdout.count("\n") == 1 and done.stdout.startswith("FAIL: vLLM is not installed")
    assert "pip install vllm" in done.stdout
