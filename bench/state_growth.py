"""SparseGrad's trained state (optimizer moments, indices, deltas) over a long run: does it grow with steps?

    python bench/state_growth.py                       # bert-small shapes, 1,000 steps, dynamic and block
    python bench/state_growth.py --steps 200 --selections dynamic,block,fixed

Exact bytes from tensors (``SparseEntryAdam.state_bytes``), recorded at steps 1, 10, 100, 1,000... of one
training run per selection mode (random-init model, random token batches cycled; the same for every mode).
Reports the ratio of the state after the last step to the state after 10 steps (target 1.00 for block).
Results: bench/results/state_growth.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import common
import reporting

from sparsegrad_core.methods import prepare_model
from sparsegrad_core.optim import SparseEntryAdam, build_optimizer


def run(selection: str, args: argparse.Namespace) -> dict[str, Any]:
    spec = common.model_spec(args.model)
    kw = dict(vocab=common.vocab_size(spec), pad_id=common.pad_token_id(spec))
    batches = common.make_batches(8, args.batch_size, args.seq_len, 0.25, seed=1, **kw)
    calib = common.make_batches(4, args.batch_size, args.seq_len, 0.25, seed=2, **kw)
    model = common.build_model(spec)
    label = {"dynamic": "sg_dynamic", "fixed": "sg_fixed", "block": "sg_block"}[selection]
    prepared = prepare_model(model, common.method_spec(label, "peft", args.density, 4), calib)
    model = prepared.model.train()
    opt = build_optimizer(model, lr=args.lr)
    sparse = next(o for o in opt.optimizers if isinstance(o, SparseEntryAdam))
    marks = {1, 10, 100, 1000, 10000, args.steps}
    record: dict[int, int] = {}
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        model(**batches[step % len(batches)]).loss.backward()
        opt.step()
        opt.zero_grad()
        if step in marks:
            record[step] = sparse.state_bytes()
            print(f"  {selection}: step {step}: {reporting.mib(record[step]):.2f} MiB", flush=True)
    k_total = sum(layer.k for layer in sparse._layers)
    return {"selection": selection, "state_bytes": record, "k_total": k_total, "seconds": time.perf_counter() - t0,
            "growth_last_vs_10": record[args.steps] / record[10] if 10 in record else None}


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="bert-small", choices=list(common.MODEL_PRESETS))
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--selections", default="dynamic,block")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=32)
    ap.add_argument("--density", type=float, default=0.01)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="JSON path (default bench/results/state_growth.json)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = [run(s.strip(), args) for s in args.selections.split(",") if s.strip()]
    rows = [{"selection": r["selection"], "k_total": r["k_total"],
             **{f"mib_{s}": reporting.mib(b) for s, b in r["state_bytes"].items()},
             "growth": r["growth_last_vs_10"]} for r in results]
    cols = [("selection", "selection"), ("k_total", "k (all layers)")]
    cols += [(f"mib_{s}", f"MiB @ {s}") for s in sorted(results[0]["state_bytes"])]
    cols += [("growth", f"state @ {args.steps} / @ 10")]
    print()
    print(reporting.fmt_table(rows, cols))
    reporting.save_run("bench/state_growth.py", argv, args, "state_growth.json", results=results)


if __name__ == "__main__":
    main(sys.argv[1:])
