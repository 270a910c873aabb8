"""Training steps captured in CUDA graphs (``TrainingArguments.cuda_graphs``): what the CPU can check (refusals, the
fixed-width batches, the optimizer's in-place learning rate and step counts), and on CUDA that a graphed run lands
where the same run trained eagerly does."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from support.tiny import tiny_bert

from sparsegrad_core.config import SparseGradConfig
from sparsegrad_core.methods import MethodSpec
from sparsegrad_core.tokenization import TokenizedDataset, tokenize_dataset
from sparsegrad_core.training import Trainer, TrainingArguments, prepare_for_training
from sparsegrad_core.training.checkpoint import trainable_state
from sparsegrad_core.training.cuda_graphs import WARMUP_STEPS
from sparsegrad_data import glue_mapping, load_dataset, sample_path

SG = SparseGradConfig(density=0.05, calibration_steps=2)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
WIDTH = 12


def _full_width_rows(tokenizer, n: int = 96) -> TokenizedDataset:
    """``n`` SST-2 rows of at least ``WIDTH`` tokens, truncated to it: every batch has the same width whether it is
    padded to its longest row (eager) or to ``max_seq_length`` (graphed), so both runs compute the same numbers."""
    task, mapping = glue_mapping("sst2")
    data = tokenize_dataset(load_dataset(sample_path("sst2_train"), task, mapping), tokenizer, WIDTH)
    keep = [i for i, length in enumerate(data.lengths()) if length == WIDTH][:n]
    assert len(keep) == n
    return replace(data, rows=[data.rows[i] for i in keep], labels=[data.labels[i] for i in keep])


def test_cuda_graphs_refuse_gradient_checkpointing_naming_both():
    with pytest.raises(ValueError, match="cuda_graphs cannot be combined with gradient_checkpointing"):
        TrainingArguments(max_steps=1, cuda_graphs=True, gradient_checkpointing=True)


def test_a_trainer_with_cuda_graphs_on_the_cpu_says_it_needs_cuda(tokenizer, sst2_small):
    data = tokenize_dataset(sst2_small[0], tokenizer, 32)
    prepared = prepare_for_training(tiny_bert(tokenizer), MethodSpec(type="full"), data, batch_size=8, seed=0)
    with pytest.raises(ValueError, match="cuda_graphs needs a CUDA device; the model is on cpu"):
        Trainer(prepared, data, None, tokenizer, TrainingArguments(max_steps=1, cuda_graphs=True))


def test_collate_pads_to_a_fixed_width_and_refuses_a_narrower_one(tokenizer, sst2_small):
    data = tokenize_dataset(sst2_small[0], tokenizer, 32)
    rows = list(range(4))
    longest = max(data.lengths()[i] for i in rows)
    batch = data.collate(rows, width=32)
    assert batch["input_ids"].shape == (4, 32) and batch["attention_mask"].shape == (4, 32)
    assert int(batch["attention_mask"].sum()) == sum(data.lengths()[i] for i in rows)
    dynamic = data.collate(rows)
    assert dynamic["input_ids"].shape == (4, longest)
    assert torch.equal(batch["input_ids"][:, :longest], dynamic["input_ids"])
    assert bool((batch["input_ids"][:, longest:] == data.pad_token_id).all())
    with pytest.raises(ValueError, match=f"cannot pad rows of {longest} tokens to a width of {longest - 1}"):
        data.collate(rows, width=longest - 1)


@cuda
@pytest.mark.parametrize("method", ["full", "sparsegrad", "sparsegrad-block", "sparsegrad-recalibrated"])
def test_a_graphed_run_lands_where_the_eager_run_does(tokenizer, tmp_path, method):
    """Rows truncated to 12 tokens (every batch the same width in both runs), 2 micro-batches per step, a linear
    schedule with warmup, clipping, steps that measure the original basis (eager between replays), an epoch whose
    last step is short (eager), re-calibration (the graph is captured again): the losses and weights of the graphed
    run are those of the eager run, and the graph was replayed."""
    data = _full_width_rows(tokenizer)  # 96 rows: 5 steps of 2×10 per epoch, the last one 10 + 6 rows
    variants = {"sparsegrad-block": {"selection": "block"}, "sparsegrad-recalibrated": {"recalibrate_every": 7}}
    sg = SparseGradConfig(**{**SG.to_dict(), **variants.get(method, {})})
    spec = MethodSpec(type=method.split("-")[0], sparsegrad=sg)
    results = {}
    for graphs in (False, True):
        args = TrainingArguments(batch_size=10, gradient_accumulation_steps=2, max_steps=14, learning_rate=1e-3,
                                 lr_scheduler="linear", warmup_steps=2, max_grad_norm=1.0, seed=3,
                                 original_share_every=6, max_seq_length=WIDTH, eval_before=False,
                                 group_by_length=False, cuda_graphs=graphs, output_dir=tmp_path / str(graphs))
        model = tiny_bert(tokenizer, dropout=0.0).cuda()
        prepared = prepare_for_training(model, spec, data, batch_size=args.batch_size, seed=args.seed)
        trainer = Trainer(prepared, data, None, tokenizer, args)
        results[graphs] = (trainer, trainer.train())
    (eager, eager_result), (graphed, graphed_result) = results[False], results[True]
    # Steps 5 and 10 are short and run eagerly, and so do the 3 warm-up steps after the start and after the
    # re-calibration at step 7; with SparseGrad layers steps 1, 7 and 13 measure the original basis (eager too).
    recalibrated = method == "sparsegrad-recalibrated"
    replays = {"full": 9, "sparsegrad": 6, "sparsegrad-block": 6, "sparsegrad-recalibrated": 4}[method]
    assert graphed.step_graph is not None and WARMUP_STEPS == 3
    assert graphed_result.summary["cuda_graphs"] == {"captures": 2 if recalibrated else 1, "replays": replays,
                                                     "failed": None}
    assert eager_result.summary["cuda_graphs"] is None
    torch.testing.assert_close(torch.tensor(graphed_result.losses), torch.tensor(eager_result.losses),
                               rtol=1e-4, atol=1e-6)
    a, b = trainable_state(eager.model), trainable_state(graphed.model)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-6, msg=name)


@cuda
def test_a_graphed_run_resumes_from_its_checkpoint_where_it_would_have_gone(tokenizer, tmp_path):
    """A checkpoint written after replays holds the device's step counts: the resumed run (eager again for its first
    steps, then captured anew) ends where the uninterrupted graphed run does."""
    from .test_trainer import StopAfter

    data = _full_width_rows(tokenizer)  # 12 steps of 8 rows per epoch
    spec = MethodSpec(type="sparsegrad", sparsegrad=SG)

    def train(out, callbacks=(), resume=None):
        args = TrainingArguments(batch_size=8, max_steps=12, learning_rate=1e-3, lr_scheduler="linear",
                                 max_grad_norm=1.0, seed=5, max_seq_length=WIDTH, eval_before=False,
                                 original_share_every=None, cuda_graphs=True, output_dir=out, checkpoint_every=4)
        model = tiny_bert(tokenizer, dropout=0.0).cuda()
        prepared = prepare_for_training(model, spec, data, batch_size=8, seed=5, output_dir=out, resume_from=resume)
        trainer = Trainer(prepared, data, None, tokenizer, args, list(callbacks))
        return trainer, trainer.train(resume_from=resume)

    straight, straight_result = train(tmp_path / "straight")
    _, first = train(tmp_path / "split", callbacks=[StopAfter(8)])
    assert first.stopped and first.global_step == 8
    resumed, second = train(tmp_path / "split", resume=tmp_path / "split")
    torch.testing.assert_close(torch.tensor(first.losses + second.losses), torch.tensor(straight_result.losses),
                               rtol=1e-4, atol=1e-6)
    a, b = trainable_state(straight.model), trainable_state(resumed.model)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-6, msg=name)


@cuda
def test_a_step_that_cannot_be_captured_trains_eagerly_and_says_why():
    """A step that reads a value back cannot be captured: the capture fails, what it left behind is cleared, the
    step and every later one run eagerly, and ``failed`` names the error."""
    from sparsegrad_core.training.cuda_graphs import StepGraph

    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 4).cuda()
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)

    def work(batches, weights):
        loss = lin(batches[0]["x"]).square().mean() * weights[0]
        loss.backward()
        if float(loss) >= 0:  # a host read: not allowed while capturing
            opt.step()
        return {"loss": loss.detach()}, []

    cleared = []
    graph = StepGraph(work, torch.device("cuda"), lambda: (opt.zero_grad(set_to_none=True), cleared.append(True)))
    before = lin.weight.detach().clone()
    for _ in range(WARMUP_STEPS + 3):
        out, _ = graph([{"x": torch.randn(2, 4, device="cuda")}], [1.0])
        assert out["loss"].isfinite()
        opt.zero_grad(set_to_none=True)
    assert graph.failed is not None and graph.captures == 0 and graph.replays == 0 and cleared == [True]
    assert not torch.equal(lin.weight, before)  # every step trained
