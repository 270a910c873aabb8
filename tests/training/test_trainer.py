"""Trainer: exact gradient accumulation, bit-identical checkpoint/resume, cancellation, export and merge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from support.sparse_update import merged_with_moved_mlps
from support.tiny import tiny_bert, tiny_llama

from sparsegrad_core.config import SparseGradConfig
from sparsegrad_core.methods import LoraOptions, MethodSpec
from sparsegrad_core.model import sparsegrad_layers
from sparsegrad_core.tokenization import tokenize_dataset
from sparsegrad_core.training import (
    SUMMARY_FILE,
    CalibrationProgress,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    TrainResult,
    find_checkpoint,
    merge_exported,
    prepare_for_training,
)
from sparsegrad_core.training.checkpoint import load_basis, trainable_state
from sparsegrad_data import load_dataset

SG = SparseGradConfig(density=0.05, calibration_steps=2)


class StopAfter(TrainerCallback):
    def __init__(self, steps: int) -> None:
        self.steps, self.seen = steps, 0
        self.phases: list[str] = []
        self.checkpoints: list[tuple[int, Path]] = []

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        self.seen = step

    def on_phase(self, name: str) -> None:
        self.phases.append(name)

    def on_checkpoint(self, step: int, path: Path) -> None:
        self.checkpoints.append((step, path))

    def should_stop(self) -> bool:
        return self.seen >= self.steps


def run(tokenizer, data, dev, spec, args, *, resume=None, callbacks=(), build=tiny_bert, dropout=0.1):
    model = build(tokenizer) if build is tiny_llama else build(tokenizer, dropout=dropout)
    prepared = prepare_for_training(model, spec, data, batch_size=args.batch_size, seed=args.seed,
                                    output_dir=args.output_dir, resume_from=resume)
    trainer = Trainer(prepared, data, dev, tokenizer, args, list(callbacks))
    return trainer, trainer.train(resume_from=resume)


@pytest.mark.parametrize("method", ["sparsegrad", "full"])
def test_accumulating_2x4_equals_one_batch_of_8(tokenizer, sst2_small, method):
    data = tokenize_dataset(sst2_small[0], tokenizer, 64)
    spec = MethodSpec(type=method, sparsegrad=SG)
    grads = []
    for bs, accum in ((4, 2), (8, 1)):
        args = TrainingArguments(batch_size=bs, gradient_accumulation_steps=accum, max_steps=1, eval_before=False,
                                 group_by_length=False)  # the same 8 rows in both runs
        model = tiny_bert(tokenizer, dropout=0.0)
        prepared = prepare_for_training(model, spec, data, batch_size=8, seed=args.seed)
        trainer = Trainer(prepared, data, None, tokenizer, args)
        result = trainer.train()
        grads.append((trainer.optimizer.state_dict(), trainable_state(model), result.losses[0]))
    (opt_a, w_a, loss_a), (opt_b, w_b, loss_b) = grads
    assert loss_a == pytest.approx(loss_b, rel=1e-6)
    # First Adam moments are (1 - β1)·gradient: the accumulated gradient equals the big batch's.
    for sa, sb in zip(opt_a["optimizers"], opt_b["optimizers"], strict=True):
        for key in sa["state"]:
            torch.testing.assert_close(sa["state"][key]["exp_avg"], sb["state"][key]["exp_avg"], rtol=1e-4, atol=1e-9)
    if method == "sparsegrad":  # the same top-k entries were selected from the summed rotated gradient
        for name in w_a:
            if name.endswith("sg_delta"):
                assert torch.equal(w_a[name].ne(0), w_b[name].ne(0))
    for name in w_a:
        torch.testing.assert_close(w_a[name], w_b[name], rtol=1e-5, atol=1e-6)


def _args(out: Path, **kw) -> TrainingArguments:
    base = dict(batch_size=8, gradient_accumulation_steps=2, max_steps=10, learning_rate=1e-3,
                lr_scheduler="linear", warmup_steps=2, max_grad_norm=1.0, eval_every=4, keep_best=True,
                output_dir=out, seed=7, original_share_every=3)
    base.update(kw)
    return TrainingArguments(**base)


VARIANTS = {"sparsegrad-block": {"selection": "block"}, "sparsegrad-recalibrated": {"recalibrate_every": 3}}


@pytest.mark.parametrize("method", ["sparsegrad", "sparsegrad-block", "sparsegrad-recalibrated", "lora"])
def test_resume_reproduces_an_uninterrupted_run_bit_for_bit(tokenizer, sst2_small, tmp_path, method):
    """(Re-calibrated every 3 steps, the run stops at 5 between two re-calibrations and the best checkpoint,
    restored at the end, was written with other bases than the last ones.)"""
    data = tokenize_dataset(sst2_small[0], tokenizer, 64)  # 96 rows: 6 steps of 2×8 per epoch
    dev = sst2_small[1]
    sg = SparseGradConfig(**{**SG.to_dict(), **VARIANTS.get(method, {})})
    kind = method.split("-")[0]
    spec = MethodSpec(type=kind, sparsegrad=sg, options=LoraOptions(rank=2) if kind == "lora" else None)

    straight_trainer, straight = run(tokenizer, data, dev, spec, _args(tmp_path / "straight"))
    assert not straight.stopped and straight.global_step == 10

    stopper = StopAfter(5)
    _, first = run(tokenizer, data, dev, spec, _args(tmp_path / "split"), callbacks=[stopper])
    assert first.stopped and first.global_step == 5 and first.checkpoint is not None
    assert not (tmp_path / "split" / SUMMARY_FILE).exists()

    # Fresh objects: a new model (same init seed), preparation from the stored bases, a new trainer.
    resumed_trainer, second = run(tokenizer, data, dev, spec, _args(tmp_path / "split"), resume=tmp_path / "split")
    assert second.global_step == 10 and not second.stopped
    assert first.losses + second.losses == straight.losses  # exact float equality
    a, b = trainable_state(straight_trainer.model), trainable_state(resumed_trainer.model)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert second.final_eval == straight.final_eval
    assert second.best_step == straight.best_step
    lines = [json.loads(x) for x in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    straight_lines = [json.loads(x) for x in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert [(x["type"], x["step"]) for x in lines] == [(x["type"], x["step"]) for x in straight_lines]


class Recalibrations(TrainerCallback):
    def __init__(self) -> None:
        self.seen: list[tuple[int, dict]] = []

    def on_recalibrated(self, step: int, stats: dict) -> None:
        self.seen.append((step, stats))


def test_recalibration_replaces_the_bases_keeps_the_delta_and_exports_it(tokenizer, sst2_small, tmp_path):
    data = tokenize_dataset(sst2_small[0], tokenizer, 64)
    spec = MethodSpec(type="sparsegrad", sparsegrad=SparseGradConfig(**{**SG.to_dict(), "recalibrate_every": 2}))
    calls = Recalibrations()
    args = _args(tmp_path, max_steps=5, gradient_accumulation_steps=1, eval_every=None, keep_best=False)
    trainer, _ = run(tokenizer, data, None, spec, args, callbacks=[calls], dropout=0.0)
    assert [step for step, _ in calls.seen] == [2, 4]  # not after the last step
    for _, stats in calls.seen:
        assert stats["steps"] == SG.calibration_steps and set(stats["kinds"]) == {"intermediate.dense", "output.dense"}
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if x["type"] == "recalibration"] == [2, 4]
    calibrated = load_basis(tmp_path / "checkpoints" / "basis")
    layers = dict(sparsegrad_layers(trainer.model))
    for kind in ("intermediate.dense", "output.dense"):
        in_use = next(layer for layer in layers.values() if layer.kind == kind)
        assert all(layer.u_in is in_use.u_in for layer in layers.values() if layer.kind == kind)  # still shared
        assert not torch.allclose(in_use.u_in, calibrated.kinds[kind].u_in, atol=1e-3)
    # the delta in the last bases is the change of the weight since the base; the adapter reproduces the model
    base = dict(sparsegrad_layers(prepare_for_training(tiny_bert(tokenizer, dropout=0.0), MethodSpec(
        type="sparsegrad", sparsegrad=SG), data, batch_size=8, seed=args.seed).model))
    for name, layer in layers.items():
        torch.testing.assert_close(layer.delta_weight(), layer.weight - base[name].weight, rtol=1e-4, atol=1e-6)
    batch = data.collate(list(range(8)))
    batch.pop("labels")
    trainer.model.eval()
    with torch.no_grad():
        expected = trainer.model(**batch).logits
    merged = merged_with_moved_mlps(tiny_bert(tokenizer, dropout=0.0), tmp_path / "adapter")
    merged.eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(**batch).logits, expected, rtol=1e-4, atol=1e-5)


def test_should_stop_checkpoints_and_returns(tokenizer, sst2_small, tmp_path):
    data = tokenize_dataset(sst2_small[0], tokenizer, 64)
    stopper = StopAfter(3)
    _, result = run(tokenizer, data, None, MethodSpec(type="sparsegrad", sparsegrad=SG),
                    _args(tmp_path, eval_every=None, keep_best=False, gradient_accumulation_steps=1),
                    callbacks=[stopper])
    assert isinstance(result, TrainResult)
    assert result.stopped and result.global_step == 3
    ckpt = find_checkpoint(tmp_path)
    assert ckpt == result.checkpoint and ckpt.name == "step-00000003"
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["global_step"] == 3 and state["step_in_epoch"] == 3 and state["epoch"] == 0
    assert stopper.checkpoints == [(3, ckpt)]
    assert (tmp_path / "checkpoints" / "basis" / "bases.safetensors").is_file()
    assert "saving" in stopper.phases and not (tmp_path / "adapter").exists()


class Recorder(TrainerCallback):
    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = []
        self.evals: list[int] = []
        self.calibration: list[int] = []
        self.spectra: dict = {}

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        self.steps.append(metrics)

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        self.evals.append(step)

    def on_calibration_step(self, progress: CalibrationProgress) -> None:
        self.calibration.append(progress.step)

    def on_calibration_done(self, spectra) -> None:
        self.spectra = spectra


def test_sparsegrad_run_reports_metrics_exports_and_merges(tokenizer, sst2_small, tmp_path):
    data = tokenize_dataset(sst2_small[0], tokenizer, 64)
    rec = Recorder()
    model = tiny_bert(tokenizer)
    spec = MethodSpec(type="sparsegrad", sparsegrad=SG)
    args = _args(tmp_path, max_steps=6, gradient_accumulation_steps=1)
    prepared = prepare_for_training(model, spec, data, batch_size=8, callbacks=[rec], output_dir=tmp_path)
    result = Trainer(prepared, data, sst2_small[1], tokenizer, args, [rec]).train()
    assert rec.calibration == [1, 2]
    assert set(rec.spectra) == {"intermediate.dense", "output.dense"}
    assert len(rec.spectra["intermediate.dense"]["out"]) == 64
    assert rec.evals == [0, 4, 6]
    first = rec.steps[0]
    for key in ("loss", "lr", "step_time_s", "tokens_per_s", "peak_memory_mb", "topk_energy_share", "grad_norm"):
        assert key in first and first[key] >= 0
    assert "original_basis_topk_energy_share" in first and "original_basis_topk_energy_share" not in rec.steps[1]
    assert "original_basis_topk_energy_share" in rec.steps[3]
    assert 0 < first["topk_energy_share"] <= 1

    summary = json.loads((tmp_path / SUMMARY_FILE).read_text())
    assert summary["method"] == "sparsegrad" and summary["steps"] == 6
    assert set(summary["before"]) >= {"eval_loss", "eval_accuracy", "eval_f1", "eval_mcc"}
    assert summary["after"] == result.final_eval and summary["trainable_params"] == prepared.trainable_params
    assert "resident" in summary["peak_memory_definition"]

    # The exported adapter merged onto a fresh base computes what the trained model computes.
    batch = data.collate(list(range(8)))
    batch.pop("labels")
    model.eval()
    with torch.no_grad():
        expected = model(**batch).logits
    # ... with a non-empty sparse delta that moved every MLP weight (not just the densely trained head)
    merged = merged_with_moved_mlps(tiny_bert(tokenizer), tmp_path / "adapter")
    merged.eval()
    assert not list(sparsegrad_layers(merged))
    with torch.no_grad():
        torch.testing.assert_close(merged(**batch).logits, expected, rtol=1e-4, atol=1e-5)


def test_lora_export_is_a_peft_adapter_that_merges(tokenizer, sst2_small, tmp_path):
    from peft import PeftModel

    data = tokenize_dataset(sst2_small[0], tokenizer, 64)
    spec = MethodSpec(type="lora", setting="peft", options=LoraOptions(rank=2))
    trainer, _ = run(tokenizer, data, None, spec, _args(tmp_path, max_steps=3, eval_every=None, keep_best=False),
                     dropout=0.0)
    batch = data.collate(list(range(8)))
    batch.pop("labels")
    trainer.model.eval()
    with torch.no_grad():
        expected = trainer.model(**batch).logits
    adapter = tmp_path / "adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["peft_type"] == "LORA"
    peft_model = PeftModel.from_pretrained(tiny_bert(tokenizer, dropout=0.0), str(adapter))
    assert any("lora_A" in n for n, _ in peft_model.named_parameters())
    merged = merge_exported(tiny_bert(tokenizer, dropout=0.0), adapter)
    merged.eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(**batch).logits, expected, rtol=1e-4, atol=1e-5)


def test_causal_lm_sft_trains_with_sparsegrad(tokenizer, chat_file, tmp_path):
    ds = load_dataset(chat_file, "causal_lm")
    data = tokenize_dataset(ds, tokenizer, 64)
    spec = MethodSpec(type="sparsegrad", sparsegrad=SG)
    args = TrainingArguments(batch_size=4, max_steps=12, learning_rate=3e-3, output_dir=tmp_path, eval_every=6,
                             early_stopping_patience=5, metric_for_best="loss")
    _, result = run(tokenizer, data, data, spec, args, build=tiny_llama)
    assert result.final_eval["eval_loss"] < result.before_eval["eval_loss"]
    assert result.best_step in (6, 12)
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()


def test_stop_during_calibration_leaves_the_weights_alone(tokenizer, sst2_small):
    from sparsegrad_core.training import TrainingCancelled

    data = tokenize_dataset(sst2_small[0], tokenizer, 64)
    model = tiny_bert(tokenizer)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(TrainingCancelled, match="calibration"):
        prepare_for_training(model, MethodSpec(type="sparsegrad", sparsegrad=SG), data, batch_size=8,
                             callbacks=[StopAfter(0)])
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n


class CalibrationRecorder(TrainerCallback):
    def __init__(self) -> None:
        self.seen: list[CalibrationProgress] = []

    def on_calibration_step(self, progress: CalibrationProgress) -> None:
        self.seen.append(progress)


@pytest.mark.parametrize(("selection", "passes"), [("dynamic", 3), ("fixed", 6), ("block", 6)])
def test_calibration_reports_every_backward_pass_with_the_time_left(tokenizer, sst2_small, selection, passes):
    """Every backward pass is reported, the second pass of fixed and block selection too (block calibration once
    sat at 'pass 3 of 3' for half its time), with the elapsed time and an ETA at the mean pace."""
    data = tokenize_dataset(sst2_small[0], tokenizer, 64)
    rec = CalibrationRecorder()
    sg = SparseGradConfig(density=0.05, calibration_steps=3, selection=selection)
    prepare_for_training(tiny_bert(tokenizer), MethodSpec(type="sparsegrad", sparsegrad=sg), data, batch_size=8,
                         callbacks=[rec])
    assert [(p.step, p.total) for p in rec.seen] == [(i, passes) for i in range(1, passes + 1)]
    elapsed = [p.elapsed_s for p in rec.seen]
    assert elapsed == sorted(elapsed) and elapsed[0] > 0
    for p in rec.seen:
        assert p.loss > 0 and p.eta_s == pytest.approx(p.elapsed_s / p.step * (passes - p.step))
    assert rec.seen[-1].eta_s == 0


def test_early_stopping_and_best_checkpoint(tokenizer, sst2_small, tmp_path):
    data = tokenize_dataset(sst2_small[0], tokenizer, 64)
    args = TrainingArguments(batch_size=8, max_steps=40, learning_rate=0.5, eval_every=1, early_stopping_patience=2,
                             metric_for_best="loss", keep_best=True, load_best_at_end=True, output_dir=tmp_path)
    trainer, result = run(tokenizer, data, sst2_small[1], MethodSpec(type="full"), args)
    assert result.early_stopped and result.global_step < 40
    assert result.global_step == result.best_step + 2  # two evaluations without improvement
    assert result.final_eval is not None and result.final_eval["eval_loss"] == result.best_metric
    from sparsegrad_core.training import evaluate

    restored = evaluate(trainer.model, trainer.eval_data, 16)  # the weights are the best step's again
    assert restored["eval_loss"] == pytest.approx(result.best_metric, rel=1e-6)
    assert (tmp_path / "checkpoints" / "best" / "trainer_state.json").is_file()
    assert (tmp_path / "model" / "config.json").is_file()  # full fine-tuning exports the whole model


@pytest.mark.parametrize("method", ["meprop", "frozen_mlp"])
def test_dense_baselines_train_and_export_a_plain_model(tokenizer, sst2_small, tmp_path, method):
    from transformers import AutoModelForSequenceClassification

    data = tokenize_dataset(sst2_small[0], tokenizer, 64)
    spec = MethodSpec(type=method, sparsegrad=SG)
    trainer, result = run(tokenizer, data, sst2_small[1], spec, _args(tmp_path, max_steps=2, eval_every=None,
                                                                    keep_best=False, original_share_every=None))
    assert result.global_step == 2 and result.final_eval is not None
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model")
    name = "bert.encoder.layer.0.intermediate.dense.weight"
    torch.testing.assert_close(dict(reloaded.named_parameters())[name], dict(trainer.model.named_parameters())[name])
