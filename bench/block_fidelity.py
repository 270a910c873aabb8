"""How much of the exact top-k gradient energy block selection keeps, on real models and data, over a run.

    python bench/block_fidelity.py --model minilm-l6                 # SST-2 (bundled sample or --data), 200 steps
    python bench/block_fidelity.py --model smollm2-135m --every 5 --batch-size 4   # chat SFT (Chit Chat
                                                   # conversations if `chitchat-dataset` is installed, else the bundled sample)

1. Calibrate twice on the same calibration batches: once with ``selection="block"`` (the default rule picks
   ``r_out × r_in`` per projection kind) and once with the exact method (full HOSVD bases).
2. Train with the exact method (dynamic SparseGrad, the paper's) for ``--steps`` optimizer steps.
3. Every ``--every`` steps, for every target layer: from the step's ``(g, x)`` form ``G̃ = u_outᵀ gᵀx u_in`` in
   the full bases; ``exact`` = energy of its top-k, ``block`` = energy of the top-k of its leading block of
   the chosen size (a block over every output row: of ``gᵀx u_in[:, :r_in]``, the standard output basis,
   as block selection computes it; its share can exceed 1). Report ``block / exact`` per kind and step,
   averaged over the layers of the kind.

The run trains the exact method so that the measured trajectory is the reference one. Results:
bench/results/block_fidelity_<model>.json (per step and per kind, and the chosen block sizes).

**In pieces** (``--work-dir DIR``): the training checkpoints every ``--checkpoint-every`` steps and every measured
row is appended to ``DIR/rows.jsonl`` as it is taken; the same command, run again, resumes from the newest
checkpoint (exactly: the trainer restores the model, the optimizer, the RNG and the data position, and the bases
are the run's own) and keeps the rows up to it. A different set of options refuses to resume.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import reporting
from gradient_tap import GradientTap

from sparsegrad_core import SparseGradConfig, SparseGradLinear, calibrate
from sparsegrad_core.block import block_step_cost, choose_block
from sparsegrad_core.loading import load_base_model
from sparsegrad_core.methods import MethodSpec
from sparsegrad_core.tokenization import tokenize_dataset
from sparsegrad_core.training import Trainer, TrainingArguments, find_checkpoint, prepare_for_training
from sparsegrad_core.training.preparation import calibration_batches
from sparsegrad_data import glue_mapping, load_dataset, sample_path
from sparsegrad_data.schema import ColumnMapping, TaskType


def load_data(model: str, data: str | None) -> Any:
    if model.startswith("smollm2"):
        if data is None:  # the quality benchmark's decoder data: Chit Chat conversations if installed
            sys.path.insert(0, str(Path(__file__).resolve().parent / "quality"))
            from quality_data import chat_files

            path, _, source = chat_files(None, 2000, 200, Path(tempfile.mkdtemp()))
            print(f"chat data: {source} ({path.name})", flush=True)
            data = str(path)
        return load_dataset(Path(data), TaskType.CAUSAL_LM, ColumnMapping(messages="messages"))
    task, mapping = glue_mapping("sst2")
    return load_dataset(Path(data) if data else sample_path("sst2_train"), task, mapping)


class Probe:
    """Measures, through a :class:`GradientTap`, each rule's block share of the exact top-k energy (every rule
    on the same gradients)."""

    def __init__(self, rules: dict[str, dict[str, tuple[int, int]]], every: int, *, start: int = 0,
                 rows: list[dict[str, Any]] | None = None, sink: Path | None = None) -> None:
        self.rules = rules
        self.rows: list[dict[str, Any]] = list(rows or [])
        self.sink = sink
        self.tap = GradientTap(self.measure, every, start)

    @torch.no_grad()
    def measure(self, layer: SparseGradLinear, step: int, g: torch.Tensor, x: torch.Tensor) -> None:
        g_in = (g.float().T @ x.float()) @ layer.u_in
        rot = layer.u_out.T @ g_in
        exact = torch.topk(rot.flatten().abs(), layer.k).values.double().square().sum()
        total = rot.double().square().sum()
        for rule, blocks in self.rules.items():
            r_out, r_in = blocks[layer.kind]
            # a block over every output row is in the standard output basis (sparsegrad_core.block)
            inside = g_in[:, :r_in] if r_out == layer.out_features else rot[:r_out, :r_in]
            block = torch.topk(inside.flatten().abs(), layer.k).values.double().square().sum()
            row = {"rule": rule, "step": step, "kind": layer.kind,
                   "share": float(block / exact) if exact > 0 else 1.0,
                   "exact_topk_of_total": float(exact / total) if total > 0 else 0.0,
                   "block_topk_of_total": float(block / total) if total > 0 else 0.0}
            self.rows.append(row)
            if self.sink is not None:
                with self.sink.open("a") as f:
                    f.write(json.dumps(row) + "\n")


class WorkDir:
    """A resumable run's folder: ``options.json`` (the options that must not change), the trainer's checkpoints,
    ``rows.jsonl`` (the measured rows) and ``seconds.json`` (time spent by earlier pieces)."""

    IGNORED = frozenset({"out", "work_dir", "threads", "checkpoint_every"})
    """Options a resumed piece may change."""

    def __init__(self, path: Path, args: argparse.Namespace) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        options = {k: v for k, v in vars(args).items() if k not in self.IGNORED}
        saved = path / "options.json"
        if saved.is_file() and json.loads(saved.read_text()) != options:
            raise SystemExit(f"--work-dir {path} holds a run with other options ({saved}); "
                             "use another folder or the same options")
        saved.write_text(json.dumps(options, indent=1))
        try:
            self.resume_step = int(find_checkpoint(path).name.removeprefix("step-"))
        except FileNotFoundError:
            self.resume_step = 0
        self.rows_path = path / "rows.jsonl"
        old = [json.loads(line) for line in self.rows_path.read_text().splitlines()] if self.rows_path.is_file() else []
        self.rows = [r for r in old if self.resume_step and r["step"] <= self.resume_step]
        self.rows_path.write_text("".join(json.dumps(r) + "\n" for r in self.rows))
        seconds = path / "seconds.json"
        self.earlier_seconds = json.loads(seconds.read_text())["seconds"] if self.resume_step and seconds.is_file() else 0.0
        self._seconds = seconds

    def record_seconds(self, seconds: float) -> None:
        self._seconds.write_text(json.dumps({"seconds": self.earlier_seconds + seconds}))


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    kinds = sorted({r["kind"] for r in rows})
    steps = sorted({r["step"] for r in rows})
    per_kind: dict[str, Any] = {}
    for kind in kinds:
        by_step = [statistics.mean(r["share"] for r in rows if r["kind"] == kind and r["step"] == s) for s in steps]
        n = max(1, len(by_step) // 5)
        per_kind[kind] = {
            "mean": statistics.mean(by_step), "min": min(by_step),
            "first_fifth": statistics.mean(by_step[:n]), "last_fifth": statistics.mean(by_step[-n:]),
            "exact_topk_of_total": statistics.mean(r["exact_topk_of_total"] for r in rows if r["kind"] == kind),
            "block_topk_of_total": statistics.mean(r["block_topk_of_total"] for r in rows if r["kind"] == kind),
            "by_step": dict(zip(steps, by_step, strict=True)),
        }
    overall = statistics.mean(r["share"] for r in rows)
    return {"kinds": per_kind, "mean_share": overall, "steps_measured": len(steps)}


def alternative_rules(block_stats: dict[str, Any], targets: list[float], budgets: list[float]) -> dict[str, Any]:
    """The blocks other (share target, cost budget) rules pick from the same calibration grid."""
    out = {}
    for target in targets:
        for budget in budgets:
            blocks = {}
            for kind, info in block_stats["kinds"].items():
                grid = info["grid"]
                shape = (grid["r_out"][-1], grid["r_in"][-1])
                choice = choose_block(torch.tensor(grid["shares"]), grid["r_out"], grid["r_in"], shape, grid["k"],
                                      target, tokens=grid["tokens"], max_cost=budget)
                cost = block_step_cost(shape, choice.r_out, choice.r_in, grid["tokens"])
                blocks[kind] = {"r_out": choice.r_out, "r_in": choice.r_in, "calibration_share": choice.kept_share,
                                "cost_x_dense": cost / (grid["tokens"] * shape[0] * shape[1])}
            out[f"share {target}, cost <= {budget}x"] = blocks
    return out


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minilm-l6", choices=["minilm-l6", "smollm2-135m"])
    ap.add_argument("--data", help="training file (default: the bundled SST-2 or chat sample)")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--every", type=int, default=1, help="measure every N steps (and the first)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-seq-length", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--density", type=float, default=0.01)
    ap.add_argument("--calibration-steps", type=int, default=10)
    ap.add_argument("--setting", default="paper", choices=["paper", "peft"])
    ap.add_argument("--share", type=float, help="block_energy_share (default: the library's)")
    ap.add_argument("--max-cost", type=float, help="block_max_cost (default: the library's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="JSON path (default bench/results/block_fidelity_<model>.json)")
    ap.add_argument("--work-dir", help="run in pieces: checkpoints and measured rows go here; the same command "
                                       "again resumes (see above)")
    ap.add_argument("--checkpoint-every", type=int, default=20, help="with --work-dir: steps between checkpoints")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()

    ds = load_data(args.model, args.data)
    torch.manual_seed(args.seed)
    model, tokenizer = load_base_model(args.model, ds.task, num_labels=ds.num_labels, label_names=ds.label_names)
    data = tokenize_dataset(ds, tokenizer, args.max_seq_length)
    rule = {k: v for k, v in (("block_energy_share", args.share), ("block_max_cost", args.max_cost)) if v is not None}
    block_cfg = SparseGradConfig(density=args.density, calibration_steps=args.calibration_steps, selection="block", **rule)
    batches = list(calibration_batches(data, args.calibration_steps, args.batch_size, args.seed, torch.device("cpu")))
    print(f"calibrating the block rule ({block_cfg.block_energy_share} share, cost <= {block_cfg.block_max_cost}x dense) "
          f"on {len(batches)} batches of {args.batch_size}", flush=True)
    block_basis = calibrate(model, batches, block_cfg)
    default_rule = f"share {block_cfg.block_energy_share}, cost <= {block_cfg.block_max_cost}x (default)"
    alternatives = alternative_rules(block_basis.stats["block"], [0.95, 0.97], [0.5, 1.0, 2.0, 100.0])
    rules = {default_rule: {kind: kb.ranks for kind, kb in block_basis.kinds.items()}}
    rules.update({name: {kind: (b["r_out"], b["r_in"]) for kind, b in blocks.items()}
                  for name, blocks in alternatives.items()})
    for name, blocks in alternatives.items():
        print(f"  rule {name}: " + "; ".join(
            f"{kind} {b['r_out']}x{b['r_in']} (calibration share {b['calibration_share']:.3f}, "
            f"cost {b['cost_x_dense']:.2f}x dense)" for kind, b in blocks.items()), flush=True)
    print(f"  default rule ({default_rule}): " + "; ".join(
        f"{kind} {c['r_out']}x{c['r_in']} (calibration share {c['kept_share']:.3f})"
        for kind, c in block_basis.stats["block"]["kinds"].items()), flush=True)

    work = WorkDir(Path(args.work_dir), args) if args.work_dir else None
    resume = work is not None and work.resume_step > 0
    if resume:
        assert work is not None
        print(f"resuming {work.path} at step {work.resume_step} of {args.steps} ({len(work.rows)} rows kept)", flush=True)
    probe = Probe(rules, args.every, start=work.resume_step if work else 0, rows=work.rows if work else None,
                  sink=work.rows_path if work else None)
    exact_cfg = SparseGradConfig(density=args.density, calibration_steps=args.calibration_steps)
    spec = MethodSpec(type="sparsegrad", setting=args.setting, sparsegrad=exact_cfg)
    prepared = prepare_for_training(model, spec, data, batch_size=args.batch_size, seed=args.seed,
                                    output_dir=work.path if work else None,
                                    resume_from=work.path if resume and work else None)
    targs = TrainingArguments(batch_size=args.batch_size, max_steps=args.steps, learning_rate=args.lr,
                              seed=args.seed, eval_before=False, save_final=False, log_every=max(1, args.steps // 10),
                              output_dir=work.path if work else None,
                              checkpoint_every=args.checkpoint_every if work else None)
    Trainer(prepared, data, None, tokenizer, targs).train(resume_from=work.path if resume and work else None)
    probe.tap.close()
    seconds = time.perf_counter() - t0
    if work is not None:
        work.record_seconds(seconds)
        seconds += work.earlier_seconds
    summaries = {rule: summarize([r for r in probe.rows if r["rule"] == rule]) for rule in rules}
    summary = summaries[default_rule]
    print(f"\nblock share of the exact top-k energy, {args.model}, {summary['steps_measured']} measured steps of "
          f"{args.steps} (exact SparseGrad training, {args.setting} setting)")
    table = [{"rule": rule, "kind": kind, "block": "{}x{}".format(*rules[rule][kind]),
              **{k: v for k, v in s.items() if k != "by_step"}}
             for rule, summ in summaries.items() for kind, s in summ["kinds"].items()]
    print(reporting.fmt_table(table, [("rule", "rule"), ("kind", "kind"), ("block", "r_out x r_in"), ("mean", "mean"),
                                      ("min", "min"), ("first_fifth", "first 20%"), ("last_fifth", "last 20%"),
                                      ("exact_topk_of_total", "exact top-k / total"),
                                      ("block_topk_of_total", "block top-k / total")]))
    for rule, summ in summaries.items():
        print(f"mean over kinds and steps, {rule}: {summ['mean_share']:.3f}")
    print(f"default rule: {summary['mean_share']:.3f} (target >= 0.95)")
    path = reporting.save_json(
        {"argv": ["bench/block_fidelity.py", *argv], "args": vars(args), "hardware": reporting.hardware(),
         "default_rule": default_rule, "calibration": block_basis.stats["block"], "alternatives": alternatives,
         "blocks": {rule: {k: list(v) for k, v in b.items()} for rule, b in rules.items()},
         "summary": summary, "summaries": summaries, "rows": probe.rows, "seconds": seconds},
        f"block_fidelity_{args.model}.json", args.out,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
