"""Resumable checkpoints, written atomically, that let a resumed run reproduce an uninterrupted one.

Layout under ``<output_dir>/checkpoints/``::

    basis/                     written once after calibration (with ``recalibrate_every``, each checkpoint's
                               model_state also holds the bases in use: "sparsegrad_bases.<kind>.u_out|u_in")
        bases.safetensors      "<kind>.u_out|u_in|eig_out|eig_in" (no u_out: standard basis), "support.<layer>" (fixed selection)
        basis.json             layer → kind, calibration stats
    step-00000040/             one per checkpoint (the newest ``keep_checkpoints`` are kept)
        model_state.safetensors  every trainable tensor + per SparseGradLinear ``weight`` (the exact
                                 float32 dense weight), ``sg_indices``, ``sg_delta``
        optimizer.pt             CombinedOptimizer.state_dict() (AdamW + sparse moments)
        rng_state.pt             Python, NumPy, torch (and CUDA) generator states
        trainer_state.json       step, data position (epoch, step in epoch), best metric, patience
    best/                      the same, for the best evaluation (``keep_best``)

A checkpoint is first written to a hidden sibling folder and then renamed into place.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..hosvd import KindBasis, SparseGradBasis
from ..layer import SparseGradLinear
from ..model import sparsegrad_layers
from ..optim import CombinedOptimizer

CHECKPOINTS_DIR = "checkpoints"
BASIS_DIR = "basis"
BEST_DIR = "best"
STATE_FILE = "trainer_state.json"
MODEL_FILE = "model_state.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
RNG_FILE = "rng_state.pt"
_SG_BUFFERS = ("weight", "sg_indices", "sg_delta")
_BASES_PREFIX = "sparsegrad_bases."
"""Checkpoint tensors of the bases in use, per kind, when the run re-calibrates (``recalibrate_every``)."""


@dataclass
class TrainerState:
    """Where a run is: everything besides tensors that a resumed run needs."""

    global_step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    """Optimizer steps already taken in ``epoch`` (the data position)."""
    best_metric: float | None = None
    best_step: int | None = None
    best_eval: dict[str, float] | None = None
    evals_without_improvement: int = 0
    before_eval: dict[str, float] | None = None
    last_eval: dict[str, float] | None = None
    last_eval_step: int | None = None
    train_time_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainerState:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


# ---------------------------------------------------------------------------------------------- tensors
def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor training changes: trainable parameters and the SparseGrad layer state."""
    out = {n: p.detach().cpu().clone() for n, p in model.named_parameters()
           if p.requires_grad and not n.endswith("sg_anchor")}
    for name, layer in sparsegrad_layers(model):
        for buf in _SG_BUFFERS:
            out[f"{name}.{buf}"] = getattr(layer, buf).detach().cpu().clone()
    for kind, layer in _recalibrated_kinds(model).items():
        out[f"{_BASES_PREFIX}{kind}.u_out"] = layer.u_out.detach().cpu().clone()
        out[f"{_BASES_PREFIX}{kind}.u_in"] = layer.u_in.detach().cpu().clone()
    return out


def _recalibrated_kinds(model: nn.Module) -> dict[str, SparseGradLinear]:
    """One layer per kind of a model trained with re-calibration (its bases change during the run, so every
    checkpoint holds the ones in use; otherwise they are the calibrated ones under ``basis/``)."""
    kinds: dict[str, SparseGradLinear] = {}
    for _, layer in sparsegrad_layers(model):
        if layer.config is not None and layer.config.recalibrate_every:
            kinds.setdefault(layer.kind, layer)
    return kinds


@torch.no_grad()
def restore_trainable_state(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Inverse of :func:`trainable_state` on a model prepared the same way (names must match)."""
    params = dict(model.named_parameters())
    layers = dict(sparsegrad_layers(model))
    expected = set(trainable_state_names(model))
    if set(tensors) != expected:
        missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
        raise ValueError(
            f"checkpoint does not match the prepared model: missing {missing[:3]} ({len(missing)}), "
            f"unexpected {unexpected[:3]} ({len(unexpected)}); prepare the model with the same method and setting"
        )
    bases = {kind: (tensors[f"{_BASES_PREFIX}{kind}.u_out"].to(layer.u_in.device),
                    tensors[f"{_BASES_PREFIX}{kind}.u_in"].to(layer.u_in.device))
             for kind, layer in _recalibrated_kinds(model).items()}
    for name, t in tensors.items():
        if name in params:
            params[name].copy_(t)
            continue
        if name.startswith(_BASES_PREFIX):
            continue
        layer_name, buf = name.rsplit(".", 1)
        if buf == "weight":
            layers[layer_name].weight.copy_(t)
    for layer_name, layer in layers.items():
        if layer.kind in bases:  # shared by the kind's layers, as installed
            layer.out_basis, layer.u_in = bases[layer.kind]
        layer.set_delta(tensors[f"{layer_name}.sg_indices"], tensors[f"{layer_name}.sg_delta"])


def trainable_state_names(model: nn.Module) -> list[str]:
    names = [n for n, p in model.named_parameters() if p.requires_grad and not n.endswith("sg_anchor")]
    names += [f"{name}.{buf}" for name, _ in sparsegrad_layers(model) for buf in _SG_BUFFERS]
    names += [f"{_BASES_PREFIX}{kind}.{basis}" for kind in _recalibrated_kinds(model) for basis in ("u_out", "u_in")]
    return names


# ---------------------------------------------------------------------------------------------- basis
def save_basis(basis: SparseGradBasis, directory: Path) -> Path:
    """Write the calibrated bases once (atomically)."""
    tensors: dict[str, torch.Tensor] = {}
    for kind, kb in basis.kinds.items():
        for attr in ("u_out", "u_in", "eig_out", "eig_in"):
            if getattr(kb, attr) is not None:  # u_out: None for the standard basis
                tensors[f"{kind}.{attr}"] = getattr(kb, attr).detach().cpu().contiguous()
    for layer, support in basis.supports.items():
        tensors[f"support.{layer}"] = support.detach().cpu().contiguous()
    meta = {
        "layers": basis.layers,
        "stats": basis.stats,
        "num_gradients": {k: kb.num_gradients for k, kb in basis.kinds.items()},
        "out_features": {k: kb.ranks[0] for k, kb in basis.kinds.items() if kb.u_out is None},
    }

    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp / "bases.safetensors"))
        (tmp / "basis.json").write_text(json.dumps(meta, indent=2))

    return _write_atomically(directory, write)


def load_basis(directory: Path) -> SparseGradBasis:
    tensors = load_file(str(directory / "bases.safetensors"))
    meta = json.loads((directory / "basis.json").read_text())
    kinds = {
        kind: KindBasis(
            u_out=tensors.get(f"{kind}.u_out"), u_in=tensors[f"{kind}.u_in"],
            eig_out=tensors[f"{kind}.eig_out"], eig_in=tensors[f"{kind}.eig_in"], num_gradients=int(n),
            out_features=meta.get("out_features", {}).get(kind),
        )
        for kind, n in meta["num_gradients"].items()
    }
    supports = {k[len("support."):]: v for k, v in tensors.items() if k.startswith("support.")}
    return SparseGradBasis(kinds=kinds, layers=meta["layers"], supports=supports, stats=meta.get("stats", {}))


# ---------------------------------------------------------------------------------------------- rng
def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (and CUDA) generator states, as types ``torch.load(weights_only=True)`` reads."""
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"name": str(name), "keys": [int(k) for k in keys], "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["name"], np.asarray(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------- checkpoints
def save_checkpoint(
    directory: Path, model: nn.Module, optimizer: CombinedOptimizer, state: TrainerState
) -> Path:
    """Write a complete resumable checkpoint at ``directory`` (replacing one that is there)."""
    tensors = {k: v.contiguous() for k, v in trainable_state(model).items()}
    optim_state = optimizer.state_dict()
    rng = rng_state()
    payload = asdict(state)

    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp / MODEL_FILE))
        torch.save(optim_state, tmp / OPTIMIZER_FILE)
        torch.save(rng, tmp / RNG_FILE)
        (tmp / STATE_FILE).write_text(json.dumps(payload, indent=2, allow_nan=True))

    return _write_atomically(directory, write)


def load_checkpoint(
    directory: Path, model: nn.Module, optimizer: CombinedOptimizer | None = None, *, restore_rng: bool = True
) -> TrainerState:
    """Restore the model's trained tensors (and optimizer, RNG) from ``directory``; return its state."""
    restore_trainable_state(model, load_file(str(directory / MODEL_FILE)))
    if optimizer is not None:
        optimizer.load_state_dict(torch.load(directory / OPTIMIZER_FILE, weights_only=True))
    if restore_rng:
        restore_rng_state(torch.load(directory / RNG_FILE, weights_only=True))
    return TrainerState.from_dict(json.loads((directory / STATE_FILE).read_text()))


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def find_checkpoint(path: str | Path) -> Path:
    """The checkpoint at ``path``: a checkpoint folder, a ``checkpoints`` folder or a run's output folder
    (then the newest ``step-*`` checkpoint)."""
    path = Path(path)
    if (path / STATE_FILE).is_file():
        return path
    for root in (path / CHECKPOINTS_DIR, path):
        steps = sorted(p for p in root.glob("step-*") if (p / STATE_FILE).is_file())
        if steps:
            return steps[-1]
    raise FileNotFoundError(f"no checkpoint found at {path} (expected {STATE_FILE} or {CHECKPOINTS_DIR}/step-*)")


def basis_dir_for(checkpoint: Path) -> Path:
    """The bases a checkpoint was trained with (stored once, next to the step folders)."""
    return checkpoint.parent / BASIS_DIR


def is_best_checkpoint(path: Path) -> bool:
    """Whether ``path`` is the copy of the best evaluation's state (not a step to resume from)."""
    return Path(path).name == BEST_DIR


def bundle_checkpoint(checkpoint: Path, dest: Path) -> Path:
    """Lay out under ``dest`` everything resuming from ``checkpoint`` needs (its step folder and, for SparseGrad,
    the calibrated bases), as hard links (copies across filesystems) at their paths relative to the run folder.
    Unpacked into a fresh run folder, :func:`bundled_checkpoint` finds the step folder to resume from."""
    _link_tree(checkpoint, dest / CHECKPOINTS_DIR / checkpoint.name)
    if basis_dir_for(checkpoint).is_dir():
        _link_tree(basis_dir_for(checkpoint), dest / CHECKPOINTS_DIR / BASIS_DIR)
    return dest


def bundled_checkpoint(run_dir: Path, step: int) -> Path:
    """The checkpoint of ``step`` in a run folder a :func:`bundle_checkpoint` bundle was unpacked into.
    Raises FileNotFoundError if the bundle held no such checkpoint."""
    step_dir = run_dir / CHECKPOINTS_DIR / step_dir_name(step)
    if not (step_dir / STATE_FILE).is_file():
        raise FileNotFoundError(f"no checkpoint of step {step} ({CHECKPOINTS_DIR}/{step_dir.name}/{STATE_FILE})")
    return step_dir


def _link_tree(src: Path, dest: Path) -> None:
    """Hard-link (or copy, across filesystems) every file of ``src`` under ``dest``."""
    for path in src.rglob("*"):
        target = dest / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)


def prune_checkpoints(checkpoints_dir: Path, keep: int) -> None:
    steps = sorted(p for p in checkpoints_dir.glob("step-*") if p.is_dir())
    for old in steps[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def _write_atomically(directory: Path, write: Any) -> Path:
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.parent / f".tmp-{directory.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        write(tmp)
        trash = None
        if directory.exists():
            trash = directory.parent / f".old-{directory.name}-{os.getpid()}"
            shutil.rmtree(trash, ignore_errors=True)
            directory.rename(trash)
        tmp.rename(directory)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory
