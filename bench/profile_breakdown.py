"""Part A of ``profile_sg.py``: where a SparseGrad (dynamic) training step spends its CPU time.

Timing wrappers go around ``SparseGradLinear.record_gradient``, ``sparsegrad_core.selection.rotate_gradient``
(``gᵀx`` + rotation ``u_outᵀ G u_in``) and ``topk_abs_indices``, ``SparseEntryAdam.step`` / ``_positions``,
``add_rotated_delta`` and AdamW's ``step``, for a few steps only; FLOP counts per call are accumulated
alongside: rotation ``2·out·in·(out+in)`` vs the dense ``dW = gᵀx`` ``2·T·out·in``. The wrappers are removed
afterwards. Also the profiled model itself (``ProfiledModel``), whose ``step`` the other parts reuse.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import meters
import reporting
import torch

import sparsegrad_core.selection as selection

TIMES: dict[str, float] = defaultdict(float)
COUNTS: dict[str, float] = defaultdict(float)


CLOCK = meters.cpu_seconds  # process CPU seconds (all threads): robust to other processes on a shared machine


@dataclass
class ProfiledModel:
    """A model prepared for SparseGrad (dynamic), its optimizer and the pieces the wrappers go around."""

    model: torch.nn.Module
    opt: Any  # build_optimizer's combination of SparseEntryAdam and AdamW
    layers: list[Any]  # the SparseGradLinear layers
    sparse_opt: Any  # the SparseEntryAdam
    dense_opts: list[Any]
    batches: list[dict[str, torch.Tensor]]

    def step(self, b: dict[str, Any], timed: bool = True) -> None:
        """One training step; with ``timed``, its forward, backward and optimizer CPU seconds go to TIMES."""
        t0 = CLOCK()
        loss = self.model(**b).loss
        t1 = CLOCK()
        loss.backward()
        t2 = CLOCK()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        t3 = CLOCK()
        if timed:
            TIMES["forward"] += t1 - t0
            TIMES["backward"] += t2 - t1
            TIMES["optimizer"] += t3 - t2


def rotate_flops(
    u_out: torch.Tensor, u_in: torch.Tensor, *, grad: Any = None, g: Any = None, x: Any = None
) -> None:
    o, i = u_out.shape[0], u_in.shape[0]
    COUNTS["rotate.calls"] += 1
    COUNTS["flops.rotation_uoT_G_ui"] += 2 * o * i * (o + i)
    if g is not None:
        t = g.shape[0]
        COUNTS["rows_kept"] += t
        COUNTS["flops.dW_gTx_kept_rows"] += 2 * t * o * i
        COUNTS["flops.factored_(g_uo)T(x_ui)"] += 2 * t * (o * o + i * i + o * i)


def wrap_timer(obj: Any, attr: str, key: str) -> None:
    fn = getattr(obj, attr)

    def wrapped(*a: Any, **kw: Any) -> Any:
        t0 = CLOCK()
        try:
            return fn(*a, **kw)
        finally:
            TIMES[key] += CLOCK() - t0

    setattr(obj, attr, wrapped)


def count_delta_shapes(layer: Any) -> None:
    fn = layer.add_rotated_delta

    def wrapped(idx: torch.Tensor, values: torch.Tensor) -> None:
        nr = torch.unique(idx // layer.in_features).numel()
        nc = torch.unique(idx % layer.in_features).numel()
        o, i = layer.out_features, layer.in_features
        COUNTS["delta.calls"] += 1
        COUNTS["delta.rows_frac"] += nr / o
        COUNTS["delta.cols_frac"] += nc / i
        COUNTS["flops.delta_library"] += 2 * min(o * nr * nc + o * nc * i, nr * nc * i + o * nr * i)
        k = idx.numel()
        COUNTS["flops.delta_sparse"] += 2 * min(o * k + o * nc * i, k * i + o * nr * i)
        t0 = CLOCK()
        fn(idx, values)
        TIMES["opt.sg.add_rotated_delta"] += CLOCK() - t0

    layer.add_rotated_delta = wrapped


def _install_timers(pm: ProfiledModel) -> None:
    lib_rotate, lib_topk = selection.rotate_gradient, selection.topk_abs_indices

    def timed_rotate(u_out: torch.Tensor, u_in: torch.Tensor, **kw: Any) -> torch.Tensor:
        rotate_flops(u_out, u_in, **kw)
        t0 = CLOCK()
        out = lib_rotate(u_out, u_in, **kw)
        TIMES["rg.rotate_gradient (gTx + rotation)"] += CLOCK() - t0
        return out

    def timed_topk(values: torch.Tensor, k: int, **kw: Any) -> torch.Tensor:
        t0 = CLOCK()
        out = lib_topk(values, k, **kw)
        TIMES["rg.topk_abs_indices"] += CLOCK() - t0
        return out

    selection.rotate_gradient, selection.topk_abs_indices = timed_rotate, timed_topk
    for layer in pm.layers:
        wrap_timer(layer, "record_gradient", "rg.total")
        count_delta_shapes(layer)
    if hasattr(pm.sparse_opt, "_positions"):  # older SparseEntryAdam: the support lookup was its own method
        wrap_timer(pm.sparse_opt, "_positions", "opt.sg.positions")
    wrap_timer(pm.sparse_opt, "step", "opt.sg.total")
    for o in pm.dense_opts:
        wrap_timer(o, "step", "opt.adamw")


def _remove_timers(pm: ProfiledModel, lib_rotate: Any, lib_topk: Any) -> None:
    selection.rotate_gradient, selection.topk_abs_indices = lib_rotate, lib_topk
    for layer in pm.layers:
        layer.__dict__.pop("record_gradient", None)
        layer.__dict__.pop("add_rotated_delta", None)
    for o in (pm.sparse_opt, *pm.dense_opts):
        for attr in ("step", "_positions"):
            o.__dict__.pop(attr, None)


ORDER = [
    "step",
    "forward",
    "backward",
    "rg.total",
    "rg.rotate_gradient (gTx + rotation)",
    "rg.topk_abs_indices",
    "rg.other (row filter, select bookkeeping)",
    "backward excluding record_gradient",
    "optimizer",
    "opt.adamw",
    "opt.sg.total",
    "opt.sg.positions",
    "opt.sg.add_rotated_delta",
    "opt.sg.moments etc",
]


def step_breakdown(pm: ProfiledModel, args: argparse.Namespace) -> dict[str, Any]:
    """``args.steps`` steps with the timers on; prints the per-piece table, FLOPs and shapes and returns them
    (``per_step_s``, ``flops_per_step``, ``shapes``, ``foreign``)."""
    lib_rotate, lib_topk = selection.rotate_gradient, selection.topk_abs_indices
    _install_timers(pm)
    TIMES.clear()
    COUNTS.clear()
    foreign = []
    for s in range(args.steps):
        with meters.ForeignLoad() as fl:
            pm.step(pm.batches[(s + 1) % len(pm.batches)])
        foreign.append(fl.share)
    _remove_timers(pm, lib_rotate, lib_topk)

    n = args.steps
    per_step = {k: v / n for k, v in TIMES.items()}
    per_step["step"] = per_step["forward"] + per_step["backward"] + per_step["optimizer"]
    per_step["rg.other (row filter, select bookkeeping)"] = (
        per_step["rg.total"]
        - per_step.get("rg.rotate_gradient (gTx + rotation)", 0)
        - per_step.get("rg.topk_abs_indices", 0)
    )
    per_step["backward excluding record_gradient"] = per_step["backward"] - per_step["rg.total"]
    per_step["opt.sg.moments etc"] = (
        per_step.get("opt.sg.total", 0)
        - per_step.get("opt.sg.add_rotated_delta", 0)
        - per_step.get("opt.sg.positions", 0)
    )
    flops = {k: v / n for k, v in COUNTS.items() if k.startswith("flops.")}
    calls = max(1.0, COUNTS["delta.calls"])
    shapes = {
        "rotations_per_step": COUNTS["rotate.calls"] / n,
        "kept_rows_per_rotation": COUNTS["rows_kept"] / max(1, COUNTS["rotate.calls"]),
        "delta_rows_frac": COUNTS["delta.rows_frac"] / calls,
        "delta_cols_frac": COUNTS["delta.cols_frac"] / calls,
    }
    rows = [
        {"piece": k, "s": per_step[k], "share": per_step[k] / per_step["step"]}
        for k in ORDER
        if k in per_step
    ]
    rows[0]["piece"] = "step (forward + backward + optimizer)"
    print(
        f"\n== Part A: SG dynamic step breakdown, {args.model} {args.setting} setting, batch "
        f"{args.batch_size}x{args.seq_len} pad {args.pad_frac:.0%}, {n} steps (foreign CPU max {max(foreign):.2f}) =="
    )
    print(reporting.fmt_table(rows, [("piece", "piece"), ("s", "CPU s / step"), ("share", "share of step")]))
    print("\nGFLOP per step: " + ", ".join(f"{k[6:]} {v / 1e9:.1f}" for k, v in flops.items()))
    print("shapes: " + ", ".join(f"{k} {v:.3f}" for k, v in shapes.items()))
    return {"per_step_s": per_step, "flops_per_step": flops, "shapes": shapes, "foreign": foreign}
