"""Per-step training time and peak training memory of SparseGrad vs full FT, LoRA, MeProp, frozen MLP (CPU).

    python bench/step.py --model bert-base-4l                 # both settings, all methods
    python bench/step.py --model minilm --settings paper
    python bench/step.py sweep --axis seq_len                 # also: batch, width (writes a PNG per axis)

Every (setting, method) runs in a fresh subprocess: import everything → RSS baseline → build the model →
prepare (SparseGrad calibrates here; not timed) → warmup steps → timed steps (forward + backward +
optimizer step + zero_grad), same batches for all methods, ``torch.set_num_threads(threads)``.

Memory metric ("peak training memory"): the peak resident set size of the worker process during the timed
steps (Linux VmHWM, reset right before the first timed step) minus the RSS measured right before the model
was built (after imports and batch creation; heap trimmed with ``malloc_trim`` before both readings). It
therefore includes the model weights, gradients, optimizer state, SparseGrad bases and the activation peak.
"State memory" is computed from tensors: parameters + buffers + gradients + optimizer state + SparseGrad
bases/indices/deltas (and fixed-selection support tensors), each storage counted once.

Time: median wall seconds and median process CPU seconds (user + system, all threads) per step. On a shared
machine the CPU seconds are the comparable figure; each step also records the "foreign" CPU share used by
other processes (``/proc/stat``), steps above ``--max-foreign`` are replaced (up to 3x ``--steps``), and the
workers run with ``OMP_WAIT_POLICY=PASSIVE``. SparseGrad calibrations are cached per model/selection mode
within one invocation (``--no-cache`` to recalibrate in every worker). Results: bench/results/step_<model>.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

# The parts: step_worker.py measures one (setting, method) in its own process, step_runner.py runs them all,
# step_report.py makes the tables, step_sweep.py the sweeps.
import common
import reporting
import step_report
import step_runner
import step_sweep


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="bert-base-4l", choices=list(common.MODEL_PRESETS))
    ap.add_argument("--markdown", action="store_true", help="print tables as markdown")
    step_runner.add_common_args(ap)
    args = ap.parse_args(argv)
    spec = common.model_spec(args.model, args.hidden, args.intermediate, args.layers, args.heads)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    for m in methods:
        if m not in common.ALL_METHODS:
            raise SystemExit(f"unknown method {m!r}")
    print(
        f"model {spec}  batch {args.batch_size}x{args.seq_len} pad {args.pad_frac:.0%}  "
        f"steps {args.steps} (+{args.warmup} warmup)  threads {args.threads}  density {args.density}"
    )
    print("peak training memory = peak RSS during the timed steps − RSS right before the model was built")
    common.clear_calibration_cache()
    results = step_runner.run_methods(args, spec, methods, settings)
    common.clear_calibration_cache()
    summary = step_report.print_report(results, markdown=args.markdown)
    path = reporting.save_json(
        {
            "argv": ["bench/step.py", *argv],
            "model_spec": spec,
            "args": vars(args),
            "hardware": reporting.hardware(),
            "metric": "peak_train_bytes = VmHWM during timed steps - RSS before model build",
            "results": results,
            "summary": summary,
        },
        f"step_{args.model}.json",
        args.out,
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "sweep":
        step_sweep.sweep(sys.argv[2:])
    else:
        main(sys.argv[1:])
