"""Why SparseGrad trails LoRA in the quick PEFT-pure runs: reruns of single (task, seed) points with one
knob changed at a time (learning rate, calibration steps, density, warmup, gradient clipping, lr decay).
Writes one JSON line per run.

    python bench/quality/probe_peft.py --data-dir ../shared/data/glue --out bench/results/quality_peft_probe
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import quality_plan as qp
import quality_train


def base(task: str, seed: int, lr: float) -> qp.Run:
    opts = qp.PlanOptions(profile=qp.PROFILES["quick"], tasks=[task], methods=["sparsegrad"], settings=["peft"])
    run = qp.final_runs(opts, {(task, "sparsegrad", "peft", "minilm-l6", 0.01): lr})[0]
    return replace(run, seed=seed, lr=lr)


PROBES: list[tuple[str, qp.Run, dict[str, Any]]] = [  # (label, run, training arguments changed)
    ("sst2 seed 2, as in the table (lr 4e-4, 10 calibration steps, 1%)", base("sst2", 2, 4e-4), {}),
    ("sst2 seed 2, lr 2e-4", base("sst2", 2, 2e-4), {}),
    ("sst2 seed 2, 30 calibration steps", replace(base("sst2", 2, 4e-4), calibration_steps=30), {}),
    ("sst2 seed 2, density 2%", replace(base("sst2", 2, 4e-4), density=0.02), {}),
    ("sst2 seed 2, warmup 10%", base("sst2", 2, 4e-4), {"warmup_ratio": 0.1}),
    ("sst2 seed 2, gradient clipping at 1.0", base("sst2", 2, 4e-4), {"max_grad_norm": 1.0}),
    ("sst2 seed 2, linear lr decay", base("sst2", 2, 4e-4), {"lr_scheduler": "linear"}),
    *[(f"mrpc seed {s}, lr 4e-4 (LoRA's choice)", base("mrpc", s, 4e-4), {}) for s in (0, 1, 2)],
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--out", type=Path, default=Path("bench/results/quality_peft_probe"))
    p.add_argument("--only", default=None, help="run only the probes whose label contains this text")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "probes.jsonl"
    done = {json.loads(line)["label"] for line in log.read_text().splitlines()} if log.is_file() else set()
    for label, run, changes in PROBES:
        if label in done or (args.only and args.only not in label):
            continue
        quality_train.hyperparameters = lambda r, c=changes: {**qp.hyperparameters(r), **c}  # type: ignore[misc]
        result = quality_train.train_one(run, data_dir=args.data_dir, workdir=args.out / "data")
        score = qp.task_score(run.task, result["metrics"])
        print(f"{label}: score {score:.4f}", flush=True)
        with open(log, "a") as f:
            f.write(json.dumps({"label": label, **run.to_dict(), "changes": changes, **result}) + "\n")


if __name__ == "__main__":
    main()
