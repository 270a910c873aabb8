"""Adapter sizes of SparseGrad (each selection mode) and LoRA on real MiniLM-L6, PEFT-pure and paper settings.

    python bench/adapter_size.py                    # SST-2 bundled sample, 20 steps per run

For each (setting, method): calibrate (SparseGrad) on the bundled SST-2 sample, train ``--steps`` steps, export
the way the service does, and report the bytes of every file, the bytes of the task head (classifier and
pooler) inside them, and the total without the head. Block selection also reports its PEFT LoRA export.
Results: bench/results/adapter_size.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import reporting

from sparsegrad_core.config import SparseGradConfig
from sparsegrad_core.loading import load_base_model
from sparsegrad_core.methods import MethodSpec, is_head_param, lora_export_dir
from sparsegrad_core.tokenization import tokenize_dataset
from sparsegrad_core.training import Trainer, TrainingArguments, prepare_for_training
from sparsegrad_data import glue_mapping, load_dataset, sample_path

RUNS = [("sparsegrad", "dynamic"), ("sparsegrad", "block"), ("lora", None)]


def head_bytes(directory: Path) -> int:
    """Bytes of task-head tensors in the directory's safetensors files."""
    total = 0
    for path in directory.glob("*.safetensors"):
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
                name = key.removeprefix("base_model.model.")
                if is_head_param(name):
                    t = f.get_tensor(key)
                    total += t.numel() * t.element_size()
    return total


def measure(directory: Path) -> dict[str, Any]:
    files = {p.name: p.stat().st_size for p in sorted(directory.iterdir()) if p.is_file()}
    total, head = sum(files.values()), head_bytes(directory)
    return {"files": files, "total_bytes": total, "head_bytes": head, "without_head_bytes": total - head}


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--settings", default="peft,paper")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="JSON path (default bench/results/adapter_size.json)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    task, mapping = glue_mapping("sst2")
    ds = load_dataset(sample_path("sst2_train"), task, mapping)
    results: list[dict[str, Any]] = []
    for setting in [s.strip() for s in args.settings.split(",") if s.strip()]:
        for method, selection in RUNS:
            torch.manual_seed(0)
            model, tokenizer = load_base_model("minilm-l6", ds.task, num_labels=2, label_names=ds.label_names)
            data = tokenize_dataset(ds, tokenizer, 128)
            sg = SparseGradConfig(selection=selection or "dynamic")
            spec = MethodSpec(type=method, setting=setting, sparsegrad=sg)  # type: ignore[arg-type]
            prepared = prepare_for_training(model, spec, data, batch_size=args.batch_size, seed=0)
            with tempfile.TemporaryDirectory() as tmp:
                targs = TrainingArguments(batch_size=args.batch_size, max_steps=args.steps, learning_rate=1e-4,
                                          seed=0, eval_before=False, output_dir=Path(tmp), checkpoint_every=None,
                                          log_every=args.steps)
                result = Trainer(prepared, data, None, tokenizer, targs).train()
                assert result.export_dir is not None
                label = f"{method}" + (f" ({selection})" if selection else "")
                row: dict[str, Any] = {"setting": setting, "method": label, **measure(result.export_dir)}
                if prepared.basis is not None and "block" in prepared.basis.stats:
                    row["block"] = {k: (c["r_out"], c["r_in"]) for k, c in prepared.basis.stats["block"]["kinds"].items()}
                results.append(row)
                lora = lora_export_dir(result.export_dir)
                if lora.is_dir():
                    results.append({"setting": setting, "method": f"{label} as PEFT LoRA", **measure(lora)})
            print(f"  {setting} {results[-1]['method']}: {reporting.mib(results[-1]['without_head_bytes']):.2f} MiB "
                  "without the head", flush=True)
    rows = [{"setting": r["setting"], "method": r["method"], "total": r["total_bytes"] / 1e6,
             "head": r["head_bytes"] / 1e6, "without_head": r["without_head_bytes"] / 1e6} for r in results]
    print()
    print(reporting.fmt_table(rows, [("setting", "setting"), ("method", "method"), ("total", "total MB"),
                                     ("head", "task head MB"), ("without_head", "without head MB")]))
    path = reporting.save_json({"argv": ["bench/adapter_size.py", *argv], "args": vars(args),
                                "hardware": reporting.hardware(), "results": results}, "adapter_size.json", args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
