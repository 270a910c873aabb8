"""Basis drift: how much of a step's gradient energy the top-k keeps in the calibration-time HOSVD basis, in the
original basis, and in a basis re-calibrated during the run, over a whole training run.

    python bench/basis_drift.py --data-dir ../shared/data/glue --setting paper      # MiniLM-L6, SST-2, 1000 steps
    python bench/basis_drift.py --data-dir ../shared/data/glue --setting peft

The run trains the exact method (dynamic SparseGrad, the paper's) on the quality protocol's SST-2 pool with the
protocol's schedule, clipping and weight decay, so the trajectory measured is the one training follows
(``GradientTap``). For every target layer, every ``--every`` steps, with ``G = gᵀx`` (out, in) the step's weight
gradient, ``k`` the layer's kept entries and ``‖G‖²`` its energy:

* ``original``: energy of the top-k of ``|G|`` / ``‖G‖²`` (MeProp-like selection, no rotation);
* ``calibrated``: energy of the top-k of ``|u_outᵀ G u_in|`` / ``‖G‖²`` in the bases training uses (calibrated
  once before step 1 on ``calibration_steps`` batches);
* ``refreshed``: the same in bases re-calibrated every ``--refresh-every`` steps from the gradients of the
  ``--window`` steps before (a Gram accumulation per kind, as calibration does: ``sparsegrad_core.hosvd``).
  Training never uses them: this is what a periodic re-calibration would keep, measured on the same gradients.

With ``--recalibrate`` training itself re-calibrates every ``--refresh-every`` steps
(``SparseGradConfig.recalibrate_every``, from ``calibration_steps`` batches of the calibration stream), so
``calibrated`` is then the share in the bases training uses after its re-calibrations; ``--stop-after N`` ends the
run after step N with the schedule of the full ``--steps`` (so the first steps are the same as a full run's).

    python bench/basis_drift.py --data-dir ../shared/data/glue --setting paper --recalibrate --stop-after 400
    python bench/basis_drift.py --compare bench/results/basis_drift_minilm-l6_paper.json \
        bench/results/basis_drift_minilm-l6_paper_recalibrated.json     # side by side, same steps

The bases are orthogonal, so all three shares are of the same total. Results (per kind and step, and by fifths of
the run): ``bench/results/basis_drift_<model>_<setting>.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent / "quality"))

import reporting
from gradient_tap import GradientTap
from quality_data import glue_files, stratified_subsample

from sparsegrad_core import SparseGradConfig, SparseGradLinear
from sparsegrad_core.hosvd import GramAccumulator, KindBasis
from sparsegrad_core.loading import load_base_model
from sparsegrad_core.methods import MethodSpec
from sparsegrad_core.tokenization import tokenize_dataset
from sparsegrad_core.training import Trainer, TrainerCallback, TrainingArguments, prepare_for_training
from sparsegrad_data import glue_mapping, load_dataset

BASES = ("original", "calibrated", "refreshed")


def topk_share(m: torch.Tensor, k: int, total: torch.Tensor) -> float:
    kept = torch.topk(m.flatten().abs(), k).values.double().square().sum()
    return float(kept / total) if total > 0 else 0.0


class DriftProbe:
    """Per-layer shares of the top-k energy in the three bases (see the module docstring)."""

    def __init__(self, every: int, refresh_every: int, window: int) -> None:
        self.every, self.refresh_every, self.window = every, refresh_every, window
        self.rows: list[dict[str, Any]] = []
        self.accs: dict[tuple[int, str], GramAccumulator] = {}  # (window index, kind) -> Gram sums
        self.fresh: dict[tuple[int, str], KindBasis] = {}
        self.tap = GradientTap(self.measure, 1)  # every step: the refresh windows need each step's gradient

    def _fresh_basis(self, step: int, kind: str) -> KindBasis | None:
        """The bases re-calibrated from the latest complete window before ``step`` (None before the first)."""
        m = (step - 1) // self.refresh_every
        if m == 0:
            return None
        key = (m, kind)
        if key not in self.fresh:
            self.fresh[key] = self.accs.pop(key).finish()
            for old in [k for k in self.fresh if k[0] < m - 1]:
                del self.fresh[old]
        return self.fresh[key]

    def measure(self, layer: SparseGradLinear, step: int, g: torch.Tensor, x: torch.Tensor) -> None:
        grad = g.float().T @ x.float()  # (out, in)
        m, r = divmod(step, self.refresh_every)
        if r == 0 or r > self.refresh_every - self.window:  # inside the window that ends at the next refresh
            window_index = m if r == 0 else m + 1
            acc = self.accs.setdefault((window_index, layer.kind),
                                       GramAccumulator(grad.shape[0], grad.shape[1], grad.device))
            acc.add(grad)
        if step != 1 and step % self.every:
            return
        total = grad.double().square().sum()
        row = {"step": step, "kind": layer.kind, "k": layer.k,
               "original": topk_share(grad, layer.k, total),
               "calibrated": topk_share(layer.u_out.T @ grad @ layer.u_in, layer.k, total)}
        fresh = self._fresh_basis(step, layer.kind)
        if fresh is not None:
            assert fresh.u_out is not None
            row["refreshed"] = topk_share(fresh.u_out.T @ grad @ fresh.u_in, layer.k, total)
        self.rows.append(row)


class StopAfter(TrainerCallback):
    """Stop after ``step`` steps."""

    def __init__(self, step: int) -> None:
        self.step, self.done = step, 0

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        self.done = step

    def should_stop(self) -> bool:
        return self.done >= self.step


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per kind: the mean over layers at each measured step, then the mean of each fifth of the run."""
    out: dict[str, Any] = {}
    for kind in sorted({r["kind"] for r in rows}):
        steps = sorted({r["step"] for r in rows if r["kind"] == kind})
        by_step = {b: {s: statistics.mean(r[b] for r in rows if r["kind"] == kind and r["step"] == s and b in r)
                       for s in steps if any(b in r for r in rows if r["kind"] == kind and r["step"] == s)}
                   for b in BASES}
        fifths: dict[str, list[float | None]] = {}
        n = len(steps)
        for b in BASES:
            fifths[b] = []
            for i in range(5):
                part = [by_step[b][s] for s in steps[i * n // 5:(i + 1) * n // 5] if s in by_step[b]]
                fifths[b].append(statistics.mean(part) if part else None)
        common = [s for s in steps if all(s in by_step[b] for b in BASES)]  # like for like: after the first refresh
        out[kind] = {"by_step": by_step, "fifths": fifths,
                     "mean": {b: statistics.mean(by_step[b][s] for s in common) if common else None for b in BASES},
                     "mean_over": f"{len(common)} measured steps that have all three bases"}
    return out


def compare(once_path: Path, recalibrated_path: Path, out: str | None) -> Path:
    """Side by side: a run that keeps its calibrated bases and one that re-calibrates in training (``--recalibrate``),
    same seed and batches, over the steps after the first re-calibration that both measured. Per kind, the mean
    over layers and those steps of each basis's top-k share; the bases training used are ``calibrated`` in the
    first run and ``in use`` in the second."""
    runs = {name: json.loads(Path(p).read_text()) for name, p in (("once", once_path), ("recal", recalibrated_path))}
    first = int(runs["recal"]["args"]["refresh_every"])
    steps = {r["step"] for r in runs["recal"]["rows"]} & {r["step"] for r in runs["once"]["rows"]}
    steps = {s for s in steps if s > first}
    table = []
    for kind in sorted({r["kind"] for r in runs["recal"]["rows"]}):
        def mean(run: str, basis: str, kind: str = kind) -> float:
            return statistics.mean(r[basis] for r in runs[run]["rows"] if r["kind"] == kind and r["step"] in steps)
        table.append({"kind": kind, "original": mean("recal", "original"), "calibrated_once": mean("once", "calibrated"),
                      "recalibrated_in_training": mean("recal", "calibrated"),
                      "offline_refresh_same_run": mean("recal", "refreshed")})
    print(f"mean top-k share over steps {min(steps)}-{max(steps)} ({len(steps)} measured), per kind")
    print(reporting.fmt_table(table, [("kind", "kind"), ("original", "original (recal run)"),
                                      ("calibrated_once", "calibrated once"),
                                      ("recalibrated_in_training", "re-calibrated in training"),
                                      ("offline_refresh_same_run", "offline refresh (recal run)")]))
    return reporting.save_json({"argv": ["bench/basis_drift.py", "--compare", str(once_path), str(recalibrated_path)],
                                "steps": sorted(steps), "table": table,
                                "runs": {k: {"args": v["args"], "hardware": v["hardware"]} for k, v in runs.items()}},
                               "basis_drift_recalibration_compare.json", out)


def main(argv: list[str]) -> None:
    if argv[:1] == ["--compare"]:
        if len(argv) not in (3, 5) or (len(argv) == 5 and argv[3] != "--out"):
            sys.exit("usage: basis_drift.py --compare ONCE.json RECALIBRATED.json [--out PATH]")
        print(f"wrote {compare(Path(argv[1]), Path(argv[2]), argv[4] if len(argv) == 5 else None)}")
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minilm-l6")
    ap.add_argument("--data-dir", type=Path, default=None, help="GLUE folder (default: the bundled SST-2 sample)")
    ap.add_argument("--train-size", type=int, default=30000, help="SST-2 pool (quality protocol 3's)")
    ap.add_argument("--setting", default="paper", choices=["paper", "peft"])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--every", type=int, default=10, help="measure every N steps (and the first)")
    ap.add_argument("--refresh-every", type=int, default=100, help="re-calibrate the measured bases every N steps")
    ap.add_argument("--window", type=int, default=10, help="steps of gradients each re-calibration uses")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-seq-length", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-4, help="in both settings' grids of quality protocol 3")
    ap.add_argument("--density", type=float, default=0.01)
    ap.add_argument("--calibration-steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--recalibrate", action="store_true",
                    help="training re-calibrates its bases every --refresh-every steps (recalibrate_every)")
    ap.add_argument("--stop-after", type=int, default=None, help="stop after this step (schedule of --steps)")
    ap.add_argument("--out", help="JSON path (default bench/results/basis_drift_<model>_<setting>.json)")
    args = ap.parse_args(argv)
    if args.window > args.refresh_every:
        ap.error("--window must not exceed --refresh-every")
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()

    train_path, _, source = glue_files("sst2", args.data_dir)
    task, mapping = glue_mapping("sst2")
    ds = stratified_subsample(load_dataset(train_path, task, mapping), args.train_size, seed=0)
    print(f"SST-2 ({source}): {len(ds)} rows; {args.setting} setting, {args.steps} steps, measured every "
          f"{args.every}, bases refreshed every {args.refresh_every} from {args.window} steps", flush=True)
    torch.manual_seed(args.seed)
    model, tokenizer = load_base_model(args.model, ds.task, num_labels=ds.num_labels, label_names=ds.label_names)
    data = tokenize_dataset(ds, tokenizer, args.max_seq_length)
    cfg = SparseGradConfig(density=args.density, calibration_steps=args.calibration_steps,
                           recalibrate_every=args.refresh_every if args.recalibrate else 0)
    spec = MethodSpec(type="sparsegrad", setting=args.setting, sparsegrad=cfg)
    prepared = prepare_for_training(model, spec, data, batch_size=args.batch_size, seed=args.seed)
    probe = DriftProbe(args.every, args.refresh_every, args.window)
    targs = TrainingArguments(batch_size=args.batch_size, max_steps=args.steps, learning_rate=args.lr,
                              lr_scheduler="linear", warmup_ratio=0.06, max_grad_norm=1.0, weight_decay=0.01,
                              group_by_length=True, seed=args.seed, eval_before=False, save_final=False,
                              log_every=1)
    result = Trainer(prepared, data, None, tokenizer, targs,
                     [StopAfter(args.stop_after)] if args.stop_after else None).train()
    probe.tap.close()
    summary = summarize(probe.rows)

    print(f"\ntop-k energy share (k = {args.density:g} of each weight), {args.model} SST-2, {args.setting} setting, "
          f"mean over the layers of a kind; by fifths of {result.global_step} steps")
    table = [{"kind": kind, "basis": b, **{f"f{i + 1}": v for i, v in enumerate(s["fifths"][b])}, "mean": s["mean"][b]}
             for kind, s in summary.items() for b in BASES]
    print(reporting.fmt_table(table, [("kind", "kind"), ("basis", "basis"), ("f1", "0-20%"), ("f2", "20-40%"),
                                      ("f3", "40-60%"), ("f4", "60-80%"), ("f5", "80-100%"), ("mean", "mean*")]))
    print("* mean over the measured steps after the first refresh (all three bases on the same gradients)")
    path = reporting.save_json(
        {"argv": ["bench/basis_drift.py", *argv], "args": vars(args), "data": source, "hardware": reporting.hardware(),
         "summary": summary, "rows": probe.rows, "losses": result.losses,
         "seconds": time.perf_counter() - t0},
        f"basis_drift_{args.model}_{args.setting}{'_recalibrated' if args.recalibrate else ''}.json", args.out,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
