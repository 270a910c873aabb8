"""Where a SparseGrad (dynamic) training step spends its time on CPU, and candidate speedups, measured.

    python bench/profile_sg.py --model bert-base-4l
    python bench/profile_sg.py --model minilm --skip-ab        # breakdown + concentration only

Part A — breakdown: in this process only, timing wrappers go around ``SparseGradLinear.record_gradient``,
``sparsegrad_core.selection.rotate_gradient`` (``gᵀx`` + rotation ``u_outᵀ G u_in``) and ``topk_abs_indices``,
``SparseEntryAdam.step`` / ``_positions``, ``add_rotated_delta`` and AdamW's ``step``. FLOP counts per call are
accumulated alongside: rotation ``2·out·in·(out+in)`` vs the dense ``dW = gᵀx`` ``2·T·out·in``.

Part B — candidate library changes, as copies of the library functions defined here (the library is not
edited), checked for equality with the library's result and timed A/B in the same process:
  * ``add_rotated_delta`` with the sparse ``S`` (k non-zeros) multiplied as a sparse CSR matrix instead of a
    dense ``|R|×|C|`` block: ``min(out·k + out·|C|·in, k·in + out·|R|·in)`` instead of
    ``out·|R|·|C| + out·|C|·in``;
  * ``selection.rotate_gradient`` choosing among four associations of ``u_outᵀ gᵀ x u_in`` by FLOPs
    (the library chooses between two).
End-to-end: steps alternate library / patched on the same model and batches; medians reported.

Part C — information only (would change the method): share of the true top-k energy of ``G̃`` that a
top-k restricted to the leading ``--block-frac`` of the small dimension's basis would keep, and its FLOPs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import types
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault(
    "OMP_WAIT_POLICY", "PASSIVE"
)  # as in the step.py workers; must precede the torch import

import common
import torch

# =========================================================================== candidate copies (Part B)


def add_rotated_delta_sparse(self: Any, idx: torch.Tensor, values: torch.Tensor) -> None:
    """Copy of ``SparseGradLinear.add_rotated_delta`` multiplying by the sparse S (k non-zeros) as CSR."""
    with torch.no_grad():
        if self._support is not None and idx is self._support["idx"]:
            s = self._support
            r_inv, c_inv = s["r_inv"], s["c_inv"]
            a, b = s["u_out_r"], s["u_in_c"]
        else:
            rows, r_inv = torch.unique(idx // self.in_features, return_inverse=True)
            cols, c_inv = torch.unique(idx % self.in_features, return_inverse=True)
            a, b = self.u_out.index_select(1, rows), self.u_in.index_select(1, cols)
        nr, nc = a.shape[1], b.shape[1]
        out_f, in_f, k = self.out_features, self.in_features, idx.numel()
        vals = values.to(self.weight.dtype)
        if out_f * k + out_f * nc * in_f <= k * in_f + out_f * nr * in_f:
            # (A S) Bᵀ with (A S)ᵀ = Sᵀ Aᵀ: sparse (nc × nr) @ dense (nr × out)
            st = (
                torch.sparse_coo_tensor(torch.stack([c_inv, r_inv]), vals, (nc, nr))
                .coalesce()
                .to_sparse_csr()
            )
            left_t = torch.sparse.mm(st, a.T.contiguous())  # (nc, out)
            self.weight.addmm_(left_t.T, b.T)
        else:
            sm = (
                torch.sparse_coo_tensor(torch.stack([r_inv, c_inv]), vals, (nr, nc))
                .coalesce()
                .to_sparse_csr()
            )
            right = torch.sparse.mm(sm, b.T.contiguous())  # (nr, in)
            self.weight.addmm_(a, right)


def rotate_gradient_best(
    u_out: torch.Tensor,
    u_in: torch.Tensor,
    *,
    grad: torch.Tensor | None = None,
    g: torch.Tensor | None = None,
    x: torch.Tensor | None = None,
) -> torch.Tensor:
    """Drop-in for ``sparsegrad_core.selection.rotate_gradient``: ``u_outᵀ G u_in`` choosing among all the
    associations of ``u_outᵀ gᵀ x u_in`` by multiply-adds (the library chooses between the first two)."""
    o, i = u_out.shape[0], u_in.shape[0]
    if grad is not None:
        return u_out.T @ (grad @ u_in) if o >= i else (u_out.T @ grad) @ u_in
    assert g is not None and x is not None
    t = g.shape[0]
    costs = {
        "dense_then_rotate": t * o * i + o * i * (o + i),  # uoᵀ (gᵀx) ui
        "factored": t * (o * o + i * i + o * i),  # (g uo)ᵀ (x ui)
        "gu_then_in": t * o * o + t * o * i + o * i * i,  # ((g uo)ᵀ x) ui
        "xu_then_out": t * i * i + t * o * i + o * o * i,  # uoᵀ (gᵀ (x ui))
    }
    best = min(costs, key=costs.__getitem__)
    if best == "dense_then_rotate":
        grad = g.T @ x
        return u_out.T @ (grad @ u_in) if o >= i else (u_out.T @ grad) @ u_in
    if best == "factored":
        return (g @ u_out).T @ (x @ u_in)
    if best == "gu_then_in":
        return ((g @ u_out).T @ x) @ u_in
    return u_out.T @ (g.T @ (x @ u_in))


# =========================================================================== timed copy (Part A)

TIMES: dict[str, float] = defaultdict(float)
COUNTS: dict[str, float] = defaultdict(float)


CLOCK = common.cpu_seconds  # process CPU seconds (all threads): robust to other processes on a shared machine


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


# =========================================================================== driver


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="bert-base-4l", choices=list(common.MODEL_PRESETS))
    ap.add_argument("--setting", default="paper")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--pad-frac", type=float, default=0.5)
    ap.add_argument("--density", type=float, default=0.01)
    ap.add_argument("--calib-steps", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3, help="profiled steps (Part A)")
    ap.add_argument("--ab-steps", type=int, default=3, help="steps per arm in the A/B (Part B)")
    ap.add_argument("--block-frac", type=float, default=0.3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-ab", action="store_true")
    ap.add_argument("--quiet-wait", type=float, default=60.0)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="Sparse (CSR tensor support|invariant checks)")

    from sparsegrad_core.methods import prepare_model
    from sparsegrad_core.model import sparsegrad_layers
    from sparsegrad_core.optim import SparseEntryAdam, build_optimizer

    spec = common.model_spec(args.model)
    kw = dict(vocab=common.vocab_size(spec), pad_id=common.pad_token_id(spec))
    batches = common.make_batches(4, args.batch_size, args.seq_len, args.pad_frac, seed=1, **kw)
    calib = common.make_batches(args.calib_steps, args.batch_size, args.seq_len, args.pad_frac, seed=2, **kw)
    model = common.build_model(spec)
    prepared = prepare_model(
        model, common.method_spec("sg_dynamic", args.setting, args.density, args.calib_steps), calib
    )
    model = prepared.model
    model.train()
    opt = build_optimizer(model, lr=1e-5)
    layers = [layer for _, layer in sparsegrad_layers(model)]
    sparse_opt = next(o for o in opt.optimizers if isinstance(o, SparseEntryAdam))
    dense_opts = [o for o in opt.optimizers if not isinstance(o, SparseEntryAdam)]

    def step(b: dict[str, Any], timed: bool = True) -> None:
        t0 = CLOCK()
        loss = model(**b).loss
        t1 = CLOCK()
        loss.backward()
        t2 = CLOCK()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t3 = CLOCK()
        if timed:
            TIMES["forward"] += t1 - t0
            TIMES["backward"] += t2 - t1
            TIMES["optimizer"] += t3 - t2

    step(batches[0], timed=False)  # warmup
    if args.quiet_wait > 0:
        common.wait_for_quiet(args.quiet_wait)
    import sparsegrad_core.selection as selection

    lib_rotate, lib_topk = selection.rotate_gradient, selection.topk_abs_indices

    # ---------------- Part A
    def timed_rotate(u_out: torch.Tensor, u_in: torch.Tensor, **kw: Any) -> torch.Tensor:
        rotate_flops(u_out, u_in, **kw)
        t0 = CLOCK()
        out = lib_rotate(u_out, u_in, **kw)
        TIMES["rg.rotate_gradient (gTx + rotation)"] += CLOCK() - t0
        return out

    def timed_topk(values: torch.Tensor, k: int) -> torch.Tensor:
        t0 = CLOCK()
        out = lib_topk(values, k)
        TIMES["rg.topk_abs_indices"] += CLOCK() - t0
        return out

    selection.rotate_gradient, selection.topk_abs_indices = timed_rotate, timed_topk
    for layer in layers:
        wrap_timer(layer, "record_gradient", "rg.total")
        count_delta_shapes(layer)
    wrap_timer(sparse_opt, "_positions", "opt.sg.positions")
    wrap_timer(sparse_opt, "step", "opt.sg.total")
    for o in dense_opts:
        wrap_timer(o, "step", "opt.adamw")
    TIMES.clear()
    COUNTS.clear()
    foreign = []
    for s in range(args.steps):
        with common.ForeignLoad() as fl:
            step(batches[(s + 1) % len(batches)])
        foreign.append(fl.share)
    selection.rotate_gradient, selection.topk_abs_indices = lib_rotate, lib_topk
    for layer in layers:
        layer.__dict__.pop("record_gradient", None)
        layer.__dict__.pop("add_rotated_delta", None)
    for o in (sparse_opt, *dense_opts):
        for attr in ("step", "_positions"):
            o.__dict__.pop(attr, None)

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
    order = [
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
    rows = [
        {"piece": k, "s": per_step[k], "share": per_step[k] / per_step["step"]}
        for k in order
        if k in per_step
    ]
    rows[0]["piece"] = "step (forward + backward + optimizer)"
    print(
        f"\n== Part A: SG dynamic step breakdown, {args.model} {args.setting} setting, batch "
        f"{args.batch_size}x{args.seq_len} pad {args.pad_frac:.0%}, {n} steps (foreign CPU max {max(foreign):.2f}) =="
    )
    print(common.fmt_table(rows, [("piece", "piece"), ("s", "CPU s / step"), ("share", "share of step")]))
    print("\nGFLOP per step: " + ", ".join(f"{k[6:]} {v / 1e9:.1f}" for k, v in flops.items()))
    print("shapes: " + ", ".join(f"{k} {v:.3f}" for k, v in shapes.items()))
    result: dict[str, Any] = {
        "args": vars(args),
        "hardware": common.hardware(),
        "model_spec": spec,
        "part_a": {"per_step_s": per_step, "flops_per_step": flops, "shapes": shapes, "foreign": foreign},
    }

    # ---------------- capture one (g, x) and one (idx, values) per kind, for micro A/B and Part C
    captured: dict[str, dict[str, Any]] = {}
    for layer in layers:
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
    loss = model(**batches[0]).loss
    loss.backward()
    for cap in captured.values():
        layer = cap["layer"]
        layer.__dict__.pop("record_gradient", None)
        cap["idx"], cap["vals"] = layer.selected[0].clone(), layer.selected[1].clone() * 1e-3
    opt.zero_grad(set_to_none=True)
    for q in model.parameters():
        q.grad = None

    def bench(fn: Any, reps: int = 5) -> float:
        fn()
        ts = []
        for _ in range(reps):
            t0 = CLOCK()
            fn()
            ts.append(CLOCK() - t0)
        return statistics.median(ts)

    if args.quiet_wait > 0:
        common.wait_for_quiet(args.quiet_wait)

    def micro_for(kind: str, cap: dict[str, Any]) -> dict[str, Any]:
        layer, g, x, idx, vals = cap["layer"], cap["g"], cap["x"], cap["idx"], cap["vals"]
        uo, ui = layer.u_out, layer.u_in
        w0 = layer.weight.clone()
        ref_rot = lib_rotate(uo, ui, g=g, x=x)
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
            "gTx_s": bench(lambda: g.T @ x),
            "rot_lib_s": bench(lambda: lib_rotate(uo, ui, g=g, x=x)),
            "rot_best_s": bench(lambda: rotate_gradient_best(uo, ui, g=g, x=x)),
            "rot_rel_err": rot_err,
            "topk_lib_s": bench(lambda: lib_topk(flat, layer.k)),
            "topk_torch_s": bench(lambda: torch.topk(flat.abs(), layer.k, sorted=False)),
            "R": torch.unique(idx // layer.in_features).numel(),
            "C": torch.unique(idx % layer.in_features).numel(),
            "delta_lib_s": bench(lib_delta),
            "delta_sparse_s": bench(new_delta),
            "delta_rel_err": delta_err,
        }
        layer.weight.copy_(w0)
        return row

    micro = [micro_for(kind, cap) for kind, cap in captured.items()]
    print("\n== Part B (micro, one layer per kind, (g, x) captured from a real step) ==")
    print("(CPU seconds, median of 5)")
    print(
        common.fmt_table(
            micro,
            [
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
            ],
        )
    )
    result["part_b_micro"] = micro

    # ---------------- Part C: leading-block candidate selection (method change; information only)
    conc = []
    for kind, cap in captured.items():
        layer, g, x = cap["layer"], cap["g"], cap["x"]
        rot = lib_rotate(layer.u_out, layer.u_in, g=g, x=x)
        o, i = layer.out_features, layer.in_features
        energy = rot.square()
        k = layer.k
        top_all = torch.topk(energy.flatten(), k, sorted=False).values.sum()
        t = g.shape[0]
        if i <= o:
            r = max(1, round(args.block_frac * i))
            block = energy[:, :r]
            block_flops = 2 * (t * i * r + t * o * r + o * o * r)  # uoᵀ (gᵀ (x ui[:, :r]))
        else:
            r = max(1, round(args.block_frac * o))
            block = energy[:r, :]
            block_flops = 2 * (t * o * r + t * r * i + r * i * i)  # ((g uo[:, :r])ᵀ x) ui
        top_block = torch.topk(block.flatten(), min(k, block.numel()), sorted=False).values.sum()
        conc.append(
            {
                "kind": kind,
                "block": f"leading {r} of the small dim",
                "kept_vs_true_topk": float(top_block / top_all),
                "topk_share_of_total": float(top_all / energy.sum()),
                "block_gflop": block_flops / 1e9,
                "full_gflop": 2 * (t * o * i + o * i * (o + i)) / 1e9,
            }
        )
    print("\n== Part C (information only: restricting the top-k to a leading block changes the method) ==")
    print(
        common.fmt_table(
            conc,
            [
                ("kind", "kind"),
                ("block", "candidate block"),
                ("kept_vs_true_topk", "energy kept / true top-k"),
                ("topk_share_of_total", "true top-k share of ‖G̃‖²"),
                ("block_gflop", "block GFLOP"),
                ("full_gflop", "full GFLOP"),
            ],
        )
    )
    result["part_c"] = conc

    # ---------------- Part B end-to-end A/B
    if not args.skip_ab:

        def patch(on: bool) -> None:
            selection.rotate_gradient = rotate_gradient_best if on else lib_rotate
            for layer in layers:
                if on:
                    layer.add_rotated_delta = types.MethodType(add_rotated_delta_sparse, layer)
                else:
                    layer.__dict__.pop("add_rotated_delta", None)

        arms: dict[str, list[float]] = {"library": [], "patched": []}
        arm_foreign: dict[str, list[float]] = {"library": [], "patched": []}
        if args.quiet_wait > 0:
            common.wait_for_quiet(args.quiet_wait)
        for s in range(2 * args.ab_steps):
            arm = "library" if s % 2 == 0 else "patched"
            patch(arm == "patched")
            with common.ForeignLoad() as fl:
                t0 = CLOCK()
                step(batches[s % len(batches)], timed=False)
                arms[arm].append(CLOCK() - t0)
            arm_foreign[arm].append(fl.share)
        patch(False)
        ab = {a: statistics.median(v) for a, v in arms.items()}
        print(
            f"\n== Part B end-to-end ({args.ab_steps} steps per arm, alternating; foreign CPU max "
            f"{max(max(v) for v in arm_foreign.values()):.2f}) =="
        )
        print(
            f"library {ab['library']:.3f} CPU s/step, patched (best association + CSR delta) {ab['patched']:.3f} CPU s/step, "
            f"ratio {ab['patched'] / ab['library']:.3f}"
        )
        result["part_b_end_to_end"] = {"median_s": ab, "steps": arms, "foreign": arm_foreign}

    path = common.save_json(result, f"profile_{args.model}.json", args.out)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
