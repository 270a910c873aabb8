"""The check that a SparseGrad run trained its sparse entries at all. Loss and accuracy bars cannot tell: where the
non-MLP parameters train densely (the paper setting) a run whose sparse update does nothing still learns."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from sparsegrad_core.adapter import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from sparsegrad_core.targets import linear_weight
from sparsegrad_core.training import merge_exported


def merged_with_moved_mlps(base: nn.Module, adapter_dir: Path) -> nn.Module:
    """``base`` with the SparseGrad adapter at ``adapter_dir`` merged in, after asserting that every target's sparse
    delta has non-zero entries and that the merge changed every target (MLP) weight of ``base``."""
    config = json.loads((adapter_dir / ADAPTER_CONFIG).read_text())
    targets = list(config["target_modules"])
    assert targets, f"{adapter_dir}: an adapter without targets"
    tensors = load_file(str(adapter_dir / ADAPTER_WEIGHTS))
    empty = [n for n in targets if int(tensors[f"{n}.sg_delta"].count_nonzero()) == 0]
    assert not empty, f"the sparse delta is all zero in {len(empty)} of {len(targets)} targets: {empty[:3]}"
    before = {n: linear_weight(base.get_submodule(n)).detach().clone() for n in targets}
    merged = merge_exported(base, adapter_dir)
    same = [n for n in targets if torch.equal(linear_weight(merged.get_submodule(n)).detach(), before[n])]
    assert not same, f"merging the adapter left {len(same)} of {len(targets)} MLP weights as they were: {same[:3]}"
    return merged
