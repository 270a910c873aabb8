"""The stored job spec (any version) becomes the core library's method spec and training arguments."""

from __future__ import annotations

from pathlib import Path

import pytest
from worker_helpers import job_spec

from sparsegrad_core.methods import LoraOptions
from sparsegrad_data import TaskType
from sparsegrad_service.job_spec import JobSpec
from worker import jobspec


def method_spec(stored):  # type: ignore[no-untyped-def]
    return jobspec.method_spec(JobSpec.from_stored(stored))


def task_spec(stored):  # type: ignore[no-untyped-def]
    return jobspec.task_spec(JobSpec.from_stored(stored))


def training_arguments(stored, **kw):  # type: ignore[no-untyped-def]
    return jobspec.training_arguments(JobSpec.from_stored(stored), **kw)


def test_sparsegrad_spec_and_arguments(tmp_path: Path) -> None:
    spec = job_spec(method={"type": "supervised"})
    method = method_spec(spec)
    assert method.type == "sparsegrad" and method.sparsegrad.density == 0.05 and method.sparsegrad.calibration_steps == 3
    args = training_arguments(spec, seed=3, output_dir=tmp_path, default_checkpoint_every=50, bf16=False)
    assert (args.max_steps, args.batch_size, args.max_seq_length, args.seed) == (20, 8, 32, 3)
    assert (args.checkpoint_every, args.keep_checkpoints, args.log_every, args.original_share_every) == (8, 2, 1, 5)
    assert args.n_epochs is None and args.output_dir == tmp_path and not args.bf16
    assert args.group_by_length and not args.gradient_checkpointing


def test_gradient_checkpointing_reaches_the_training_arguments(tmp_path: Path) -> None:
    def arguments(hyperparameters: dict[str, object]) -> bool:
        spec = job_spec(hyperparameters=hyperparameters)
        args = training_arguments(spec, seed=0, output_dir=tmp_path, default_checkpoint_every=50, bf16=False)
        return args.gradient_checkpointing

    assert arguments({"gradient_checkpointing": True}) is True
    assert arguments({"gradient_checkpointing": False}) is False
    assert arguments({"gradient_checkpointing": "auto"}) is False  # OpenAI's "auto": the default
    spec = job_spec()
    del spec["hyperparameters"]["gradient_checkpointing"]  # a spec stored before the field existed
    assert training_arguments(spec, seed=0, output_dir=tmp_path, default_checkpoint_every=50,
                              bf16=False).gradient_checkpointing is False


def test_a_worker_that_captures_cuda_graphs_does_so_except_for_jobs_that_recompute_activations(tmp_path: Path) -> None:
    def graphs(worker_captures: bool, hyperparameters: dict[str, object]) -> bool:
        spec = job_spec(hyperparameters=hyperparameters)
        return training_arguments(spec, seed=0, output_dir=tmp_path, default_checkpoint_every=50, bf16=False,
                                  cuda_graphs=worker_captures).cuda_graphs

    assert graphs(True, {"gradient_checkpointing": False}) is True
    assert graphs(True, {"gradient_checkpointing": True}) is False  # the two cannot be combined: the job still runs
    assert graphs(False, {"gradient_checkpointing": False}) is False


def test_a_cpu_worker_never_captures_cuda_graphs(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from worker.device import select_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the CPU rule, on any machine
    assert select_device(cuda_graphs=True).cuda_graphs is False


def test_block_selection_rule_reaches_the_core_config() -> None:
    from sparsegrad_core.config import SparseGradConfig

    given = method_spec(job_spec(method={"sparsegrad": {"density": 0.05, "calibration_steps": 3, "selection": "block",
                                                        "block_energy_share": 0.9, "block_max_cost": 2.0}}))
    assert given.sparsegrad.selection == "block"
    assert (given.sparsegrad.block_energy_share, given.sparsegrad.block_max_cost) == (0.9, 2.0)
    default = method_spec(job_spec(method={"sparsegrad": {"selection": "block"}})).sparsegrad
    library = SparseGradConfig()
    assert (default.block_energy_share, default.block_max_cost) == (library.block_energy_share, library.block_max_cost)


def test_recalibration_reaches_the_core_config() -> None:
    given = method_spec(job_spec(method={"sparsegrad": {"selection": "dynamic", "recalibrate_every": 100}}))
    assert (given.sparsegrad.selection, given.sparsegrad.recalibrate_every) == ("dynamic", 100)
    assert method_spec(job_spec()).sparsegrad.recalibrate_every == 0


def test_other_methods_and_defaults(tmp_path: Path) -> None:
    meprop = method_spec(job_spec(method={"type": "meprop", "meprop": {"density": 0.2}}))
    assert meprop.type == "meprop" and meprop.sparsegrad.density == 0.2
    lora = method_spec(job_spec(method={"type": "lora", "lora": {"rank": 4, "alpha": 8.0, "dropout": 0.1}}))
    assert lora.options == LoraOptions(rank=4, alpha=8.0, dropout=0.1)
    spec = job_spec(method={"type": "full"}, hyperparameters={"max_steps": None, "n_epochs": "auto",
                                                              "checkpoint_every": None})
    args = training_arguments(spec, seed=0, output_dir=tmp_path, default_checkpoint_every=50, bf16=True)
    assert (args.n_epochs, args.max_steps, args.checkpoint_every, args.original_share_every) == (3, None, 50, None)
    assert args.bf16
    with pytest.raises(ValueError, match="batch_size"):
        training_arguments(job_spec(hyperparameters={"batch_size": 0}), seed=0, output_dir=tmp_path,
                           default_checkpoint_every=50, bf16=False)


def test_task_spec_mapping() -> None:
    spec = job_spec(task={"type": "regression", "text_column": 0, "label_column": 2, "has_header": False,
                          "num_labels": None, "label_names": None})
    task = task_spec(spec)
    assert task.task == TaskType.REGRESSION and task.num_labels is None
    assert (task.mapping.text, task.mapping.label, task.mapping.has_header) == (0, 2, False)
    assert task_spec(job_spec()).label_names == ["0", "1"]


def test_a_version_1_spec_and_its_version_2_form_run_the_same(tmp_path: Path) -> None:
    """Specs stored before the typed contract (version 1, worker_helpers.BASE_SPEC) keep running, and their upgraded
    form stores and reads back unchanged."""
    for v1 in (job_spec(), job_spec(method={"type": "lora"}), job_spec(method={"type": "meprop"}),
               job_spec(method={"type": "full"}, hyperparameters={"max_steps": None, "n_epochs": "auto"})):
        typed = JobSpec.from_stored(v1)
        assert typed.version == 2 and JobSpec.from_stored(typed.stored()) == typed
        kw = {"seed": 1, "output_dir": tmp_path, "default_checkpoint_every": 50, "bf16": False}
        assert jobspec.method_spec(typed).to_dict() == method_spec(typed.stored()).to_dict()
        assert jobspec.training_arguments(typed, **kw) == training_arguments(v1, **kw)
    # a version-1 SparseGrad section without a selection predates selections: the exact method it ran
    old = job_spec()
    del old["method"]["sparsegrad"]["selection"]
    assert method_spec(old).sparsegrad.selection == "dynamic"
    assert JobSpec().method.selection == "dynamic"  # what a new job gets
    # a version-1 method without a setting ran the paper setting, the default then; a new job gets the PEFT-pure one
    old = job_spec()
    del old["method"]["setting"]
    assert method_spec(old).setting == "paper" and JobSpec.from_stored(old).method.setting == "paper"
    assert JobSpec().method.setting == "peft"


def test_an_invalid_stored_spec_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"method\.lora\.rnk"):
        JobSpec.from_stored({"version": 2, "method": {"type": "lora", "rnk": 3}})
    with pytest.raises(ValueError, match="batch_size"):
        JobSpec.from_stored(job_spec(hyperparameters={"batch_size": "eight"}))
