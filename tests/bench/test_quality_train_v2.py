"""Protocol 2's training pieces: early stopping / best-weights restore on the selection score, and GaLore."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

QUALITY = Path(__file__).resolve().parents[2] / "bench" / "quality"
sys.path.insert(0, str(QUALITY))

import quality_plan as qp  # noqa: E402
import quality_train  # noqa: E402


def _m(acc: float, f1: float) -> dict[str, float]:
    return {"eval_loss": 1.0, "eval_accuracy": acc, "eval_f1": f1, "eval_mcc": 0.0}


def test_best_selection_stops_on_the_selection_score_and_restores_the_best_weights() -> None:
    model = nn.Linear(3, 2)
    cb = quality_train.BestSelection("mrpc", patience=2)
    cb.model = model
    with torch.no_grad():
        model.weight.fill_(1.0)
    cb.on_eval(100, _m(0.70, 0.80))  # mean 0.75
    with torch.no_grad():
        model.weight.fill_(2.0)
    cb.on_eval(200, _m(0.90, 0.70))  # mean 0.80: better on the MRPC score (accuracy alone would say 0.90 > 0.70 too)
    best_weight = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.fill_(3.0)
    cb.on_eval(300, _m(0.95, 0.60))  # mean 0.775: worse, although its accuracy is the highest
    assert not cb.should_stop()
    cb.on_eval(400, _m(float("nan"), float("nan")))  # NaN never improves
    assert cb.should_stop() and cb.best is not None and cb.best[1] == 200
    cb.restore()
    assert torch.equal(model.weight, best_weight)
    assert [s for s, _ in cb.evals] == [100, 200, 300, 400]


@pytest.fixture()
def galore_registered() -> Iterator[None]:
    """GaLore in the method registry for one test only (the registry is process-wide: a method left registered
    would show up as a method jobs can ask for)."""
    import galore_method

    from sparsegrad_core.methods import unregister_method

    galore_method.ensure_registered()
    yield
    unregister_method(galore_method.NAME)


def test_galore_trains_the_mlp_through_galore_adamw_in_the_peft_setting(galore_registered: None) -> None:
    import galore_method

    from sparsegrad_core.config import SparseGradConfig
    from sparsegrad_core.methods import MethodSpec
    from sparsegrad_core.methods.base import is_head_param
    from sparsegrad_core.training import TrainingArguments
    from sparsegrad_data import glue_mapping, load_dataset, sample_path

    task_type, mapping = glue_mapping("sst2")
    full = load_dataset(sample_path("sst2_train"), task_type, mapping)
    train = replace(full, examples=full.examples[:32])
    spec = MethodSpec(type="galore", setting="peft", sparsegrad=SparseGradConfig(density=0.01))
    args = TrainingArguments(learning_rate=1e-3, batch_size=8, max_steps=2, max_seq_length=32, eval_before=False,
                             save_final=False, max_grad_norm=1.0, weight_decay=0.01)
    seen: dict[str, torch.Tensor] = {}

    class Snapshot(quality_train.TrainerCallback):
        def on_prepared(self, prepared) -> None:
            seen.update({n: p.detach().clone() for n, p in prepared.model.named_parameters()})

    run = galore_method.finetune_galore("minilm-l6", train, None, spec, args,
                                        {"rank": 8, "update_proj_gap": 200, "scale": 0.25}, callbacks=[Snapshot()])
    model, targets = run.prepared.model, run.prepared.targets
    mlp = {f"{t}.weight" for t in targets}
    assert len(mlp) == 12  # MiniLM-L6: two MLP matrices in each of 6 layers
    params = dict(model.named_parameters())
    trainable = {n for n, p in params.items() if p.requires_grad}
    assert mlp <= trainable and all(n in mlp or is_head_param(n) for n in trainable)
    assert all(not torch.equal(params[n], seen[n]) for n in mlp), "every MLP matrix moved"
    assert all(torch.equal(params[n], seen[n]) for n in params if n not in trainable)
    assert run.result.global_step == 2
    # GaLore's own optimizer: the MLP matrices' Adam moments live in the rank-8 projection
    from galore_torch import GaLoreAdamW

    opt = run.prepared.state["optimizer"]
    assert isinstance(opt, GaLoreAdamW)
    for name in mlp:
        state = opt.state[params[name]]
        assert 8 in state["exp_avg"].shape and state["exp_avg"].numel() < params[name].numel()


def test_the_recalibrated_arm_is_the_exact_method_recalibrated_every_100_steps_in_both_paths() -> None:
    from api.job_spec import resolve_method_config
    from sparsegrad_service.schemas import MethodIn

    spec = quality_train.method_spec("sparsegrad-recal", "peft", 0.01, 10)
    assert (spec.type, spec.sparsegrad.selection, spec.sparsegrad.recalibrate_every) == ("sparsegrad", "dynamic", 100)
    assert quality_train.method_spec("sparsegrad", "peft", 0.01, 10).sparsegrad.recalibrate_every == 0
    service = resolve_method_config(MethodIn.model_validate(qp.service_method("sparsegrad-recal", "peft", 0.01, 10)))
    assert (service.selection.value, service.recalibrate_every) == ("dynamic", 100)  # type: ignore[union-attr]
    # the plain arm is the paper's method in both paths, though a service job's default re-calibrates
    plain = resolve_method_config(MethodIn.model_validate(qp.service_method("sparsegrad", "peft", 0.01, 10)))
    assert (plain.selection.value, plain.recalibrate_every) == ("dynamic", 0)  # type: ignore[union-attr]
