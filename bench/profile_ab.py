"""Part B of ``profile_sg.py``: the candidate library changes (``profile_candidates.py``) against the library.

* micro: one layer per kind, with the ``(g, x)`` and the selected ``(idx, values)`` captured from a real step;
  each candidate is checked for equality with the library's result (relative error) and timed (CPU seconds,
  median of 5);
* end to end: steps alternate library / patched on the same model and batches; medians reported.
"""

from __future__ import annotations

import statistics
import types
from collections.abc import Callable
from typing import Any

import meters
import reporting
import torch
from profile_breakdown import CLOCK, ProfiledModel
from profile_candidates import add_rotated_delta_sparse, rotate_gradient_best

import sparsegrad_core.selection as selection

# The library's functions, kept before anything patches them.
LIB_ROTATE = selection.rotate_gradient
LIB_TOPK = selection.topk_abs_indices

MICRO_COLUMNS = [
    ("kind", "kind"),
    ("shape", "out x in"),
    ("T", "T kept"),
    ("gTx_s", "gᵀx s"),
    ("rot_lib_s", "rotate lib s"),
    ("rot_best_s", "rotate best-assoc s"),
    ("rot_rel_err", "rel err"),
    ("topk_lib_s", "topk lib s"),
    ("topk_torch_s", "torch.topk s"),
    ("R", "|R|"),
    ("C", "|C|"),
    ("delta_lib_s", "delta lib s"),
    ("delta_sparse_s", "delta CSR s"),
    ("delta_rel_err", "rel err"),
]


def capture_layer_inputs(pm: ProfiledModel) -> dict[str, dict[str, Any]]:
    """One backward pass on the first batch; for the first layer of each kind: ``g`` and ``x`` (the rows with
    a non-zero output gradient, float32), the selected ``idx`` and ``vals`` (values scaled by 1e-3, a
    plausible update) and the ``layer``. Gradients are dropped afterwards; the weights are not stepped."""
    captured: dict[str, dict[str, Any]] = {}
    for layer in pm.layers:
        if layer.kind in captured:
            continue
        cap: dict[str, Any] = {"layer": layer}
        captured[layer.kind] = cap
        orig_rg = layer.record_gradient

        def rg(g: torch.Tensor, x: torch.Tensor, cap: dict[str, Any] = cap, orig: Any = orig_rg) -> None:
            nz = g.ne(0).any(dim=1)
            cap["g"], cap["x"] = g[nz].float().clone(), x[nz].float().clone()
            orig(g, x)

        layer.record_gradient = rg
    loss = pm.model(**pm.batches[0]).loss
    loss.backward()
    for cap in captured.values():
        layer = cap["layer"]
        layer.__dict__.pop("record_gradient", None)
        cap["idx"], cap["vals"] = layer.selected[0].clone(), layer.selected[1].clone() * 1e-3
    pm.opt.zero_grad(set_to_none=True)
    for q in pm.model.parameters():
        q.grad = None
    return captured


def _median_cpu_s(fn: Callable[[], Any], reps: int = 5) -> float:
    fn()
    ts = []
    for _ in range(reps):
        t0 = CLOCK()
        fn()
        ts.append(CLOCK() - t0)
    return statistics.median(ts)


def _micro_row(kind: str, cap: dict[str, Any]) -> dict[str, Any]:
    layer, g, x, idx, vals = cap["layer"], cap["g"], cap["x"], cap["idx"], cap["vals"]
    uo, ui = layer.u_out, layer.u_in
    w0 = layer.weight.clone()
    ref_rot = LIB_ROTATE(uo, ui, g=g, x=x)
    new_rot = rotate_gradient_best(uo, ui, g=g, x=x)
    rot_err = float((new_rot - ref_rot).norm() / ref_rot.norm())
    layer.weight.zero_()  # compare the deltas themselves, not W + Δ (float32 cancellation)
    layer.add_rotated_delta(idx, vals)
    d_ref = layer.weight.clone()
    layer.weight.zero_()
    add_rotated_delta_sparse(layer, idx, vals)
    d_new = layer.weight.clone()
    layer.weight.copy_(w0)
    delta_err = float((d_new - d_ref).norm() / d_ref.norm())
    flat = ref_rot.reshape(-1)

    def lib_delta() -> None:
        layer.add_rotated_delta(idx, vals)

    def new_delta() -> None:
        add_rotated_delta_sparse(layer, idx, vals)

    row = {
        "kind": kind,
        "T": g.shape[0],
        "shape": f"{layer.out_features}x{layer.in_features}",
        "gTx_s": _median_cpu_s(lambda: g.T @ x),
        "rot_lib_s": _median_cpu_s(lambda: LIB_ROTATE(uo, ui, g=g, x=x)),
        "rot_best_s": _median_cpu_s(lambda: rotate_gradient_best(uo, ui, g=g, x=x)),
        "rot_rel_err": rot_err,
        "topk_lib_s": _median_cpu_s(lambda: LIB_TOPK(flat, layer.k)),
        "topk_torch_s": _median_cpu_s(lambda: torch.topk(flat.abs(), layer.k, sorted=False)),
        "R": torch.unique(idx // layer.in_features).numel(),
        "C": torch.unique(idx % layer.in_features).numel(),
        "delta_lib_s": _median_cpu_s(lib_delta),
        "delta_sparse_s": _median_cpu_s(new_delta),
        "delta_rel_err": delta_err,
    }
    layer.weight.copy_(w0)
    return row


def micro_ab(captured: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The micro table (printed and returned); each layer's weight is restored after its row."""
    micro = [_micro_row(kind, cap) for kind, cap in captured.items()]
    print("\n== Part B (micro, one layer per kind, (g, x) captured from a real step) ==")
    print("(CPU seconds, median of 5)")
    print(reporting.fmt_table(micro, MICRO_COLUMNS))
    return micro


def _patch(pm: ProfiledModel, on: bool) -> None:
    selection.rotate_gradient = rotate_gradient_best if on else LIB_ROTATE
    for layer in pm.layers:
        if on:
            layer.add_rotated_delta = types.MethodType(add_rotated_delta_sparse, layer)
        else:
            layer.__dict__.pop("add_rotated_delta", None)


def end_to_end_ab(pm: ProfiledModel, ab_steps: int) -> dict[str, Any]:
    """``ab_steps`` steps per arm, alternating library / patched (best association + CSR delta); prints the
    medians and their ratio, and leaves the library in place."""
    arms: dict[str, list[float]] = {"library": [], "patched": []}
    arm_foreign: dict[str, list[float]] = {"library": [], "patched": []}
    for s in range(2 * ab_steps):
        arm = "library" if s % 2 == 0 else "patched"
        _patch(pm, arm == "patched")
        with meters.ForeignLoad() as fl:
            t0 = CLOCK()
            pm.step(pm.batches[s % len(pm.batches)], timed=False)
            arms[arm].append(CLOCK() - t0)
        arm_foreign[arm].append(fl.share)
    _patch(pm, False)
    ab = {a: statistics.median(v) for a, v in arms.items()}
    print(
        f"\n== Part B end-to-end ({ab_steps} steps per arm, alternating; foreign CPU max "
        f"{max(max(v) for v in arm_foreign.values()):.2f}) =="
    )
    print(
        f"library {ab['library']:.3f} CPU s/step, patched (best association + CSR delta) {ab['patched']:.3f} CPU s/step, "
        f"ratio {ab['patched'] / ab['library']:.3f}"
    )
    return {"median_s": ab, "steps": arms, "foreign": arm_foreign}
