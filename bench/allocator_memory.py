"""Resident memory over a whole training run, per allocator: does a training process's memory stay flat?

Step benchmarks (``bench/step.py --allocator``) time a few steps; an allocator that keeps freed pages can still
grow over hundreds of steps when the sizes it is asked for vary (dynamic padding makes every batch's activations a
different size). This script trains one real quality-protocol run (MiniLM-L6 on SST-2, the protocol's batch and
sequence length; ``--task chat``: the decoder stage's SmolLM2-135M chat SFT) for ``--steps`` optimizer steps once
per allocator setting, each in its own process, and records the process's resident set (``VmRSS``) and the bytes of the tensors Python can see every ``--every`` steps:

    python bench/allocator_memory.py --data-dir ../shared/data/glue --method sparsegrad-fixed --steps 250
    python bench/allocator_memory.py --data-dir ../shared/data/glue --task chat --method full --steps 24 --every 2

Allocator settings, each in its own process:

* ``system``: glibc's malloc;
* ``jemalloc``: what training workers run, ``JEMALLOC_CONF`` with the kept pages handed back every
  ``RELEASE_EVERY_STEPS`` steps, at the step after the process grew ``RELEASE_ABOVE_MIB`` since the last release,
  and after each evaluation (``sparsegrad_service/allocator.py``, ``sparsegrad_core/training/memory_release.py``);
* ``jemalloc-keep``: the same without handing anything back (the workers' setting until 2026-12-05);
* ``jemalloc-decay``: jemalloc handing pages back on a 1-second timer instead (``dirty_decay_ms:1000,muzzy_decay_ms:0``).

The result file (``bench/results/allocator_memory_<method>.json``; another task than SST-2:
``allocator_memory_<task>_<method>.json``) has every sample, the run's seconds per step,
per setting the growth from the first sample after the first evaluation (which adds the best-weights copy) to
the last, and the machine (``hardware``, as every benchmark script records it: ``reporting.hardware()``, taken in a
training process).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "bench" / "quality"))

DECAY_CONF = "dirty_decay_ms:1000,muzzy_decay_ms:0"
SETTINGS = ("system", "jemalloc", "jemalloc-keep", "jemalloc-decay")


def setting_env(setting: str) -> dict[str, str]:
    from sparsegrad_service.allocator import jemalloc_library, with_jemalloc

    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_CONF")}
    if setting == "system":
        return env
    if jemalloc_library() is None:
        raise SystemExit("jemalloc is not installed (sudo apt-get install -y libjemalloc2)")
    if setting == "jemalloc-decay":
        env["MALLOC_CONF"] = DECAY_CONF
    return with_jemalloc(env)


def rss_mib() -> float:
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


def child(args: argparse.Namespace) -> None:
    """One run in this process; prints one JSON line per sample."""
    warnings.simplefilter("ignore", FutureWarning)  # gc.get_objects() meets torch's deprecated module attributes
    import quality_plan as qp
    import quality_train as qt
    import reporting
    import torch

    from sparsegrad_core.training import TrainerCallback
    from sparsegrad_core.training import trainer as trainer_module
    from sparsegrad_service.allocator import process_allocator

    profile = qp.profile_from_protocol(qp.protocol())
    if args.task == "chat":  # the decoder stage: SmolLM2-135M chat SFT (the method's own setting)
        opts = qp.PlanOptions(profile=profile, tasks=[], methods=[args.method], steps=args.steps, stages=["decoder"],
                              decoder=True)
    else:
        opts = qp.PlanOptions(profile=profile, tasks=[args.task], methods=[args.method], settings=[args.setting],
                              steps=args.steps, stages=[args.setting])
    run = qp.selection_runs(opts)[0]
    original = trainer_module.Trainer._train_step
    done = [0]

    def sampled_step(self: Any, *a: Any, **k: Any) -> Any:
        out = original(self, *a, **k)
        done[0] += 1
        if done[0] % args.every == 0:
            tensors = [o for o in gc.get_objects() if isinstance(o, torch.Tensor) and not o.is_sparse]
            print(json.dumps({"step": done[0], "rss_mib": round(rss_mib(), 1),
                              "tensor_mib": round(sum(t.numel() * t.element_size() for t in tensors) / 2**20, 1),
                              "allocator": process_allocator(), "malloc_conf": os.environ.get("MALLOC_CONF")}),
                  flush=True)
        return out

    trainer_module.Trainer._train_step = sampled_step  # type: ignore[method-assign]
    if args.keep:
        qt.PeriodicRelease = lambda: TrainerCallback()
    result = qt.train_one(run, data_dir=Path(args.data_dir), workdir=Path(args.workdir))
    print(json.dumps({"s_per_step": result["s_per_step"], "steps_done": result["steps_done"],
                      "hardware": reporting.hardware()}), flush=True)


def measure(args: argparse.Namespace, setting: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", "--data-dir", args.data_dir, "--task", args.task, "--method",
           args.method, "--setting", args.setting, "--steps", str(args.steps), "--every", str(args.every),
           "--workdir", args.workdir] + (["--keep"] if setting == "jemalloc-keep" else [])
    env = setting_env(setting) | {"OMP_NUM_THREADS": str(args.threads)}
    samples: list[dict[str, Any]] = []
    run: dict[str, Any] = {}
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True, cwd=ROOT) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("{"):
                record = json.loads(line)
                if "s_per_step" in record:
                    run = record
                    continue
                samples.append(record)
                print(f"  {setting}: step {samples[-1]['step']}, RSS {samples[-1]['rss_mib']:.0f} MiB, "
                      f"tensors {samples[-1]['tensor_mib']:.0f} MiB", flush=True)
    if proc.returncode:
        raise SystemExit(f"{setting}: the training process exited with {proc.returncode}")
    eval_every = qp_eval_every(args)
    after_eval = [s for s in samples if s["step"] > eval_every] or samples
    return {"setting": setting, "allocator": samples[0]["allocator"], "malloc_conf": samples[0]["malloc_conf"],
            "s_per_step": run.get("s_per_step"), "steps_done": run.get("steps_done"),
            "samples": samples, "peak_rss_mib": max(s["rss_mib"] for s in samples),
            "growth_after_first_eval_mib": round(after_eval[-1]["rss_mib"] - after_eval[0]["rss_mib"], 1),
            "growth_from_step": after_eval[0]["step"], "hardware": run.get("hardware")}


def qp_eval_every(args: argparse.Namespace) -> int:
    import quality_plan as qp

    profile = qp.profile_from_protocol(qp.protocol())
    return int((profile.chat_eval_every if args.task == "chat" else profile.eval_every) or args.steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", required=True, help="GLUE folder (SST-2/ ...)")
    ap.add_argument("--task", default="sst2", help="a GLUE task, or chat (the decoder stage: SmolLM2-135M)")
    ap.add_argument("--method", default="sparsegrad-fixed")
    ap.add_argument("--setting", default="paper")
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--every", type=int, default=25, help="sample every this many steps")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--settings", default=",".join(SETTINGS), help=f"comma list of {','.join(SETTINGS)}")
    ap.add_argument("--workdir", default="bench/results/quality/data", help="tokenized-data cache")
    ap.add_argument("--out", default=None, help="default: bench/results/allocator_memory_[<task>_]<method>.json")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--keep", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    results = []
    for setting in args.settings.split(","):
        if setting not in SETTINGS:
            raise SystemExit(f"--settings: unknown setting {setting!r} (one of {', '.join(SETTINGS)})")
        print(f"{setting}: training {args.method} on {args.task} for {args.steps} steps", flush=True)
        results.append(measure(args, setting))
    hardware = next((h for h in [r.pop("hardware", None) for r in results] if h), None)
    name = args.method if args.task == "sst2" else f"{args.task}_{args.method}"
    out = Path(args.out or ROOT / f"bench/results/allocator_memory_{name}.json")
    out.write_text(json.dumps({"argv": sys.argv, "args": {k: v for k, v in vars(args).items() if k != "child"},
                               "hardware": hardware, "results": results}, indent=1) + "\n")
    for r in results:
        print(f"{r['setting']:>14}: peak {r['peak_rss_mib']:.0f} MiB, growth {r['growth_after_first_eval_mib']:+.0f} MiB "
              f"from step {r['growth_from_step']} to {args.steps}, {r['s_per_step']:.3f} s/step")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
