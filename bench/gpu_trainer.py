"""Training jobs' steps with and without CUDA graphs: the :class:`~sparsegrad_core.training.Trainer` as a job runs
it (collation, schedule, clipping, metrics), eager against ``TrainingArguments.cuda_graphs``, per method.

``bench/gpu_step.py --cuda-graphs`` times a bare captured step on fixed batches. A job differs: batches vary in
length (eager pads each batch to its longest row, a graph pads every batch to ``max_seq_length``), and the loop does
host work per step. Rows here have random lengths, uniform between a quarter of ``--seq-len`` and all of it, batched
by length as jobs do (``group_by_length``). Every (method, graphs) case runs in its own process, cases interleaved
over ``--repeats`` repetitions, the same rows in all; a case's time is the median ``step_time_s`` of its steps after
``--skip`` (warm-up and capture), and the table gives each case's steps/s and its ratios to the same method eager
and to full FT with the same graphs setting, as medians over the repeats.

    python bench/gpu_trainer.py --out bench/results/gpu_trainer.json        # on a CUDA machine, ~3 minutes
    python bench/gpu_trainer.py --device cpu --graphs off --model bert-small --steps 4 --skip 1   # smoke test
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import reporting
import worker_process

METHODS = ("full", "lora", "sg_block", "sg_dynamic")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="bert-base", help="a random-init preset of bench/common.py")
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(common.ALL_METHODS)}")
    ap.add_argument("--setting", default="paper", choices=("paper", "peft"))
    ap.add_argument("--graphs", default="both", choices=("both", "on", "off"))
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128, help="max_seq_length: the longest row, the graphs' width")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--skip", type=int, default=10, help="steps left out of the median (warm-up, capture)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--density", type=float, default=0.01)
    ap.add_argument("--calib-steps", type=int, default=4)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--timeout", type=float, default=300, help="seconds one case may take")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    unknown = [m for m in args.methods.split(",") if m not in common.ALL_METHODS]
    if unknown:
        ap.error(f"--methods: unknown {', '.join(unknown)}")
    if args.graphs != "off" and not args.device.startswith("cuda"):
        ap.error("--graphs on/both needs a CUDA --device (use --graphs off on the CPU)")
    if not 0 <= args.skip < args.steps:
        ap.error("--skip must be in [0, --steps)")
    return args


def _rows(args: argparse.Namespace, vocab: int, pad_id: int, n: int) -> Any:
    """``n`` rows of random tokens, lengths uniform in [seq_len/4, seq_len], binary labels (the same in every case)."""
    import torch

    from sparsegrad_core.tokenization import TokenizedDataset
    from sparsegrad_data import TaskType

    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(max(2, args.seq_len // 4), args.seq_len + 1, (n,), generator=g).tolist()
    rows = []
    for length in lengths:
        ids = [101, *torch.randint(1000, vocab, (length - 1,), generator=g).tolist()]
        rows.append({"input_ids": ids, "attention_mask": [1] * length})
    labels = torch.randint(0, 2, (n,), generator=g).tolist()
    return TokenizedDataset(TaskType.CLASSIFICATION, rows, labels, pad_id, num_labels=2, label_names=["0", "1"])


def run_case(payload: dict[str, Any]) -> dict[str, Any]:
    """One case in this process: prepare the method, train ``steps`` steps, report the step times."""
    import torch

    from sparsegrad_core.training import Trainer, TrainerCallback, TrainingArguments, prepare_for_training

    args = argparse.Namespace(**payload["args"])
    device = torch.device(args.device)
    spec = common.model_spec(args.model, layers=args.layers)
    model = common.build_model(spec, device)
    data = _rows(args, common.vocab_size(spec), common.pad_token_id(spec), args.batch_size * (args.steps + 4))
    method = common.method_spec(payload["method"], args.setting, args.density, args.calib_steps)
    prepared = prepare_for_training(model, method, data, batch_size=args.batch_size, seed=0)

    class Times(TrainerCallback):
        def __init__(self) -> None:
            self.step_s: list[float] = []

        def on_step(self, step: int, metrics: dict[str, float]) -> None:
            self.step_s.append(metrics["step_time_s"])

    times = Times()
    targs = TrainingArguments(
        learning_rate=1e-5, batch_size=args.batch_size, max_steps=args.steps, max_seq_length=args.seq_len,
        max_grad_norm=1.0, lr_scheduler="linear", eval_before=False, save_final=False, original_share_every=None,
        cuda_graphs=payload["graphs"], seed=0,
    )
    trainer = Trainer(prepared, data, None, None, targs, [times])  # type: ignore[arg-type]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    result = trainer.train()
    wall = time.perf_counter() - started
    measured = times.step_s[args.skip :]
    graph = trainer.step_graph
    return {
        "method": payload["method"], "cuda_graphs": payload["graphs"], "steps": result.global_step,
        "median_step_s": statistics.median(measured), "steps_per_s": 1.0 / statistics.median(measured),
        "train_wall_s": wall, "final_loss": result.losses[-1],
        "replays": None if graph is None else graph.replays, "captures": None if graph is None else graph.captures,
        "peak_memory_mb": (torch.cuda.max_memory_allocated(device) / 2**20) if device.type == "cuda" else None,
    }


def _device_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else "cpu"


def _worker(payload_json: str) -> None:
    payload = json.loads(payload_json)
    worker_process.write_result(run_case(payload), payload["result_path"])


def summarize(cases: dict[tuple[str, bool], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per (method, graphs): median steps/s over the repeats, and the medians of the per-repeat ratios to the same
    method eager and to full FT with the same graphs setting."""
    table = []
    for (method, graphs), rows in cases.items():
        ok = [r for r in rows if "error" not in r]
        entry: dict[str, Any] = {"method": method, "cuda_graphs": graphs, "repeats": len(ok),
                                 "errors": [r["error"] for r in rows if "error" in r]}
        if ok:
            entry["steps_per_s"] = statistics.median(r["steps_per_s"] for r in ok)
            entry["peak_memory_mb"] = ok[0]["peak_memory_mb"]

            def ratio(other: tuple[str, bool], repeats: list[dict[str, Any]] = ok) -> float | None:
                theirs = {r["repeat"]: r["steps_per_s"] for r in cases.get(other, []) if "error" not in r}
                mine = [r["steps_per_s"] / theirs[r["repeat"]] for r in repeats if r["repeat"] in theirs]
                return statistics.median(mine) if mine else None

            entry["vs_eager"] = ratio((method, False)) if graphs else None
            entry["vs_full"] = ratio(("full", graphs))
        table.append(entry)
    return table


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    methods = args.methods.split(",")
    modes = {"both": (False, True), "on": (True,), "off": (False,)}[args.graphs]
    script = Path(__file__).resolve()
    cases: dict[tuple[str, bool], list[dict[str, Any]]] = {}
    started = time.perf_counter()
    out: dict[str, Any] = {"argv": sys.argv[1:] if argv is None else argv,
                           "args": {k: str(v) for k, v in vars(args).items()},
                           "hardware": reporting.hardware(), "device": _device_name(args.device)}
    payload_args = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    for repeat in range(args.repeats):
        for method in methods:
            for graphs in modes:
                row = worker_process.run_worker(script, {"args": payload_args, "method": method, "graphs": graphs},
                                                timeout=args.timeout)
                row["repeat"] = repeat
                cases.setdefault((method, graphs), []).append(row)
                peak = row.get("peak_memory_mb")
                what = row.get("error") or f"{row['steps_per_s']:.2f} steps/s" + (f", peak {peak:.0f} MiB" if peak else "")
                print(f"[repeat {repeat}] {method:<10} graphs={'on ' if graphs else 'off'} {what}", flush=True)
                out.update(rows=[r for rows in cases.values() for r in rows], table=summarize(cases),
                           seconds=time.perf_counter() - started)
                if args.out is not None:  # after every case: a run cut short keeps what it measured
                    worker_process.write_result(out, args.out)
    print(f"{'method':<10} {'graphs':<6} {'steps/s':>8} {'× eager':>8} {'× full':>8} {'peak MiB':>9}")
    for e in out["table"]:
        def fmt(v: float | None) -> str:
            return "-" if v is None else f"{v:.3f}"
        print(f"{e['method']:<10} {'on' if e['cuda_graphs'] else 'off':<6} {fmt(e.get('steps_per_s')):>8} "
              f"{fmt(e.get('vs_eager')):>8} {fmt(e.get('vs_full')):>8} {fmt(e.get('peak_memory_mb')):>9}")
    return out


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "_worker":
        _worker(sys.argv[2])
    else:
        main()
