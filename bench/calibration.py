"""Streaming Gram HOSVD (the library's calibration path) vs a naive stacked HOSVD, BERT-base shapes (CPU).

    python bench/calibration.py                      # 12 layers x 4 steps = 48 gradients per kind
    python bench/calibration.py --layers 12 --steps 11

Gradients are synthetic (the method's cost does not depend on their values): for gradient ``s`` of a kind
``(out, in)``, ``G_s = U0 · diag(σ) · R_s · V0ᵀ + ε·N_s`` with fixed orthonormal ``U0 (out×64)``,
``V0 (in×64)``, ``σ_i = 0.93^i`` (well-separated leading directions), a fresh Gaussian ``R_s`` (64×64) and
Gaussian noise ``N_s`` with ``ε = 0.002`` — low rank plus noise, generated deterministically from ``s``.

* ``streaming``: ``sparsegrad_core.hosvd.GramAccumulator`` — ``add(G)`` per gradient (``C_out += G Gᵀ``,
  ``C_in += Gᵀ G`` in float64), then ``finish()`` (two ``eigh``). Holds one gradient at a time.
* ``naive``: stack all gradients of the kind into ``[N, out, in]``, unfold on each mode
  (``[out, N·in]`` and ``[in, N·out]``) and take ``torch.linalg.svd(·, full_matrices=False)`` left factors —
  the paper's reference did this on the stacked tensor (≈1.25 GB per kind for BERT-base). ``full_matrices``
  is off, which is kinder to the naive variant than torch's default.

Each (variant, kind) runs in a fresh subprocess. Time = the decomposition work (generation of the synthetic
gradients is excluded for both), as wall and as process CPU seconds (the ratio uses CPU seconds, which other
processes on a shared machine disturb much less). Peak memory = peak RSS (VmHWM, reset at the start) − RSS before the first
gradient exists; it includes the stacked tensor for ``naive``, since holding it is the method.
Agreement: projector distance ``‖P_a − P_b‖₂`` (sine of the largest principal angle) between the two
variants' leading 32 directions of each mode.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import meters
import reporting
import worker_process

SCRIPT = Path(__file__).resolve()
KINDS = {"intermediate.dense": (3072, 768), "output.dense": (768, 3072)}
RANK, DECAY, NOISE = 64, 0.93, 0.002
LEADING = 32


def gradient_source(out_f: int, in_f: int, seed: int = 0) -> Any:
    import torch

    g = torch.Generator().manual_seed(seed)
    u0 = torch.linalg.qr(torch.randn(out_f, RANK, generator=g))[0]
    v0 = torch.linalg.qr(torch.randn(in_f, RANK, generator=g))[0]
    sigma = DECAY ** torch.arange(RANK, dtype=torch.float32)
    left = u0 * sigma  # (out, r)

    def make(s: int, out: torch.Tensor | None = None) -> torch.Tensor:
        gs = torch.Generator().manual_seed(1000 + s)
        r = torch.randn(RANK, RANK, generator=gs)
        res = out if out is not None else torch.empty(out_f, in_f)
        torch.randn(out_f, in_f, generator=gs, out=res)
        res.mul_(NOISE)
        res.addmm_(left @ r, v0.T)
        return res

    return make


def worker(p: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(p["threads"])
    from sparsegrad_core.hosvd import GramAccumulator

    out_f, in_f = KINDS[p["kind"]]
    n = p["n"]
    make = gradient_source(out_f, in_f)
    meters.touch_kernels()
    make(0)  # warm the generator path
    meters.malloc_trim()
    baseline = meters.rss_bytes()
    gen_s = work_s = work_cpu = 0.0
    cpu0 = meters.cpu_seconds()
    with meters.ForeignLoad() as fl, meters.PeakRSS() as peak:
        if p["variant"] == "streaming":
            acc = GramAccumulator(out_f, in_f, torch.device("cpu"))
            for s in range(n):
                t = time.perf_counter()
                g = make(s)
                gen_s += time.perf_counter() - t
                t, c = time.perf_counter(), meters.cpu_seconds()
                acc.add(g)
                work_s += time.perf_counter() - t
                work_cpu += meters.cpu_seconds() - c
                del g
            t, c = time.perf_counter(), meters.cpu_seconds()
            kb = acc.finish()
            finish_s = time.perf_counter() - t
            work_s += finish_s
            work_cpu += meters.cpu_seconds() - c
            u_out, u_in = kb.u_out, kb.u_in
            top_out, top_in = kb.eig_out[:8].tolist(), kb.eig_in[:8].tolist()
            extra = {"finish_s": finish_s}
        else:
            t = time.perf_counter()
            stacked = torch.empty(n, out_f, in_f)
            for s in range(n):
                make(s, out=stacked[s])
            gen_s = time.perf_counter() - t
            t, c = time.perf_counter(), meters.cpu_seconds()
            unf = stacked.permute(1, 0, 2).reshape(out_f, n * in_f)
            u_out, s_out, _ = torch.linalg.svd(unf, full_matrices=False)
            del unf
            t_mid = time.perf_counter()
            unf = stacked.permute(2, 0, 1).reshape(in_f, n * out_f)
            u_in, s_in, _ = torch.linalg.svd(unf, full_matrices=False)
            del unf
            work_s = time.perf_counter() - t
            work_cpu = meters.cpu_seconds() - c
            top_out, top_in = s_out[:8].double().square().tolist(), s_in[:8].double().square().tolist()
            extra = {
                "svd_out_s": t_mid - t,
                "svd_in_s": time.perf_counter() - t_mid,
                "stacked_bytes": stacked.numel() * 4,
            }
    cpu_total = meters.cpu_seconds() - cpu0
    torch.save(
        {"u_out": u_out[:, :LEADING].contiguous(), "u_in": u_in[:, :LEADING].contiguous()}, p["bases_path"]
    )
    return {
        "variant": p["variant"],
        "kind": p["kind"],
        "n": n,
        "work_s": work_s,
        "work_cpu_s": work_cpu,
        "generate_s": gen_s,
        "peak_bytes": peak.peak - baseline,
        "peak_method": peak.method,
        "cpu_s_incl_generation": cpu_total,
        "foreign_load": fl.share,
        "top_eig_out": top_out,
        "top_eig_in": top_in,
        **extra,
    }


def projector_distance(a: Any, b: Any) -> float:
    import torch

    pa, pb = a.double() @ a.double().T, b.double() @ b.double().T
    return float(torch.linalg.matrix_norm(pa - pb, ord=2))


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument(
        "--steps", type=int, default=4, help="calibration steps; N = layers x steps gradients per kind"
    )
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quiet-wait", type=float, default=60.0)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    import torch

    n = args.layers * args.steps
    kinds = [k for k in args.kinds.split(",") if k]
    print(f"N = {args.layers} layers x {args.steps} steps = {n} gradients per kind; threads {args.threads}")
    rows, raw = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            res = {}
            for variant in ("streaming", "naive"):
                if args.quiet_wait > 0:
                    meters.wait_for_quiet(args.quiet_wait)
                path = str(Path(tmp) / f"{variant}_{kind}.pt")
                r = worker_process.run_worker(
                    SCRIPT,
                    {"variant": variant, "kind": kind, "n": n, "threads": args.threads, "bases_path": path},
                )
                if "error" in r:
                    raise SystemExit(f"{variant} {kind}: {r['error']}")
                r["bases"] = torch.load(path)
                res[variant] = r
                print(
                    f"  {kind} {variant}: {r['work_s']:.2f} s wall, {r['work_cpu_s']:.2f} CPU s (foreign CPU "
                    f"{r['foreign_load']:.2f}), peak "
                    f"{reporting.mib(r['peak_bytes']):.0f} MiB",
                    flush=True,
                )
            st, nv = res["streaming"], res["naive"]
            d_out = projector_distance(st["bases"]["u_out"], nv["bases"]["u_out"])
            d_in = projector_distance(st["bases"]["u_in"], nv["bases"]["u_in"])
            eig_rel = max(
                abs(a - b) / b
                for a, b in zip(
                    st["top_eig_out"] + st["top_eig_in"], nv["top_eig_out"] + nv["top_eig_in"], strict=True
                )
            )
            rows.append(
                {
                    "kind": kind,
                    "shape": f"{KINDS[kind][0]}x{KINDS[kind][1]}",
                    "n": n,
                    "stream_s": st["work_s"],
                    "naive_s": nv["work_s"],
                    "time_ratio_wall": nv["work_s"] / st["work_s"],
                    "stream_cpu": st["work_cpu_s"],
                    "naive_cpu": nv["work_cpu_s"],
                    "time_ratio": nv["work_cpu_s"] / st["work_cpu_s"],
                    "stream_finish_s": st["finish_s"],
                    "stream_mib": reporting.mib(st["peak_bytes"]),
                    "naive_mib": reporting.mib(nv["peak_bytes"]),
                    "mem_ratio": nv["peak_bytes"] / st["peak_bytes"],
                    "dist_out": d_out,
                    "dist_in": d_in,
                    "eig_rel_err": eig_rel,
                }
            )
            for r in (st, nv):
                r.pop("bases")
            raw[kind] = res
    print()
    print(
        reporting.fmt_table(
            rows,
            [
                ("kind", "kind"),
                ("shape", "out x in"),
                ("n", "N"),
                ("stream_s", "stream wall s"),
                ("stream_finish_s", "of which eigh s"),
                ("naive_s", "naive wall s"),
                ("time_ratio_wall", "wall ratio"),
                ("stream_cpu", "stream CPU s"),
                ("naive_cpu", "naive CPU s"),
                ("time_ratio", "CPU ratio"),
                ("stream_mib", "stream MiB"),
                ("naive_mib", "naive MiB"),
                ("mem_ratio", "mem ratio"),
                ("dist_out", f"‖ΔP‖ out (top {LEADING})"),
                ("dist_in", f"‖ΔP‖ in (top {LEADING})"),
                ("eig_rel_err", "top-8 eig rel err"),
            ],
        )
    )
    checks = []
    for r in rows:
        checks.append(
            {
                "check": f"{r['kind']}: naive/streaming CPU time ≥ 10×",
                "value": r["time_ratio"],
                "verdict": "PASS" if r["time_ratio"] >= 10 else "MISS",
            }
        )
        checks.append(
            {
                "check": f"{r['kind']}: naive/streaming peak memory ≥ 20×",
                "value": r["mem_ratio"],
                "verdict": "PASS" if r["mem_ratio"] >= 20 else "MISS",
            }
        )
        checks.append(
            {
                "check": f"{r['kind']}: subspaces agree (‖ΔP‖₂ < 1e-3)",
                "value": max(r["dist_out"], r["dist_in"]),
                "verdict": "PASS" if max(r["dist_out"], r["dist_in"]) < 1e-3 else "MISS",
            }
        )
    print()
    print(reporting.fmt_table(checks, [("check", "target"), ("value", "measured"), ("verdict", "")]))
    path = reporting.save_json(
        {
            "argv": ["bench/calibration.py", *argv],
            "args": vars(args),
            "hardware": reporting.hardware(),
            "synthetic": {"rank": RANK, "decay": DECAY, "noise": NOISE},
            "rows": rows,
            "checks": checks,
            "raw": raw,
        },
        "calibration.json",
        args.out,
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_worker":
        payload = json.loads(sys.argv[2])
        worker_process.write_result(worker(payload), payload["result_path"])
    else:
        main(sys.argv[1:])
