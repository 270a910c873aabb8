"""The block push-back ``W += S u_inᵀ`` (standard output basis): dense ``S`` against sparse (CSR) ``S``, on CPU.

    python bench/pushback.py                     # the shapes below, S 2-20% full, 2 threads
    python bench/pushback.py --fills 0.05,0.1 --repeats 21

Each case builds one block ``SparseGradLinear`` of the shape and times ``add_rotated_deltas`` (the optimizer's
push-back) both ways on the same random entries, the two alternating within every repeat, and reports the medians
and the ratio sparse / dense. ``rule`` says which way :meth:`SparseGradLinear.pushes_back_sparsely` takes at the
library's thresholds (``SPARSE_PUSHBACK_MAX_DENSITY``, ``SPARSE_PUSHBACK_MIN_MACS``): the thresholds come from
this table. The shapes are the blocks chosen for BERT-base (random init, `step_bert-base-4l_block.json`) and
MiniLM-L6 (`block_fidelity_minilm-l6.json`); ``fill`` is k over the block's entries (``density``·out·in / (out·r_in)
at the training density: 2% and 8% for BERT-base, 16% and 13% for MiniLM-L6 at 1%).
Results: bench/results/pushback_cpu.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import reporting

from sparsegrad_core import layer as layer_module
from sparsegrad_core.layer import SparseGradLinear, add_rotated_deltas

SHAPES = {  # name: (out, in, r_in), a block over every output row
    "bert-base intermediate": (3072, 768, 384),
    "bert-base output": (768, 3072, 384),
    "minilm-l6 intermediate": (1536, 384, 24),
    "minilm-l6 output": (384, 1536, 121),
}


def case(name: str, fill: float, args: argparse.Namespace) -> dict[str, Any]:
    out_f, in_f, r_in = SHAPES[name]
    gen = torch.Generator().manual_seed(0)
    u_in = torch.linalg.qr(torch.randn(in_f, r_in, generator=gen))[0].contiguous()
    n = out_f * r_in
    k = max(1, round(fill * n))
    layer = SparseGradLinear(torch.randn(out_f, in_f, generator=gen), None, None, u_in, k, selection="block")
    rule = layer.pushes_back_sparsely()
    idx = torch.randperm(n, generator=gen)[:k].unsqueeze(0)
    values = (torch.randn(1, k, generator=gen) * 1e-3)
    saved = layer_module.SPARSE_PUSHBACK_MAX_DENSITY, layer_module.SPARSE_PUSHBACK_MIN_MACS
    times: dict[str, list[float]] = {"dense": [], "sparse": []}
    try:
        layer_module.SPARSE_PUSHBACK_MAX_DENSITY, layer_module.SPARSE_PUSHBACK_MIN_MACS = 1.0, 0
        start = layer.weight.clone()
        results = {}
        for way in ("dense", "sparse"):  # the same update both ways: the same result (from W = 0, no cancellation)
            layer.weight.zero_()
            layer.sync_free = way == "dense"
            add_rotated_deltas([layer], idx, values)
            results[way] = layer.weight.clone()
        layer.weight.copy_(start)
        err = float((results["sparse"] - results["dense"]).abs().max() / results["dense"].abs().max())
        for rep in range(args.warmup + args.repeats):
            for way in (("dense", "sparse") if rep % 2 == 0 else ("sparse", "dense")):
                layer.sync_free = way == "dense"
                t0 = time.perf_counter()
                add_rotated_deltas([layer], idx, values)
                if rep >= args.warmup:
                    times[way].append(time.perf_counter() - t0)
    finally:
        layer_module.SPARSE_PUSHBACK_MAX_DENSITY, layer_module.SPARSE_PUSHBACK_MIN_MACS = saved
    dense_ms, sparse_ms = (statistics.median(times[w]) * 1e3 for w in ("dense", "sparse"))
    return {"shape": name, "out": out_f, "in": in_f, "r_in": r_in, "fill": fill, "k": k,
            "dense_macs": out_f * r_in * in_f, "dense_ms": dense_ms, "sparse_ms": sparse_ms,
            "sparse_over_dense": sparse_ms / dense_ms, "rule": "sparse" if rule else "dense", "max_rel_diff": err}


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--fills", default="0.02,0.05,0.08,0.1,0.13,0.16,0.2")
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="JSON path (default bench/results/pushback_cpu.json)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for name in (s.strip() for s in args.shapes.split(",") if s.strip()):
        if name not in SHAPES:
            raise SystemExit(f"--shapes: unknown shape {name!r}; known: {', '.join(SHAPES)}")
        for fill in (float(f) for f in args.fills.split(",")):
            rows.append(case(name, fill, args))
            r = rows[-1]
            print(f"{name:24s} fill {fill:5.2f}: dense {r['dense_ms']:7.2f} ms, sparse {r['sparse_ms']:7.2f} ms, "
                  f"sparse/dense {r['sparse_over_dense']:5.2f} (rule: {r['rule']})", flush=True)
    cols = [("shape", "shape"), ("fill", "S fill"), ("dense_ms", "dense ms"), ("sparse_ms", "sparse ms"),
            ("sparse_over_dense", "sparse / dense"), ("rule", "rule"), ("max_rel_diff", "max rel. diff")]
    print()
    print(reporting.fmt_table(rows, cols))
    reporting.save_run("bench/pushback.py", argv, args, "pushback_cpu.json", results=rows)


if __name__ == "__main__":
    main(sys.argv[1:])
