"""Where a SparseGrad (dynamic) training step spends its time on CPU, and candidate speedups, measured.

    python bench/profile_sg.py --model bert-base-4l
    python bench/profile_sg.py --model minilm --skip-ab        # breakdown + concentration only

Part A — breakdown: in this process only, timing wrappers go around ``SparseGradLinear.record_gradient``,
``sparsegrad_core.selection.rotate_gradient`` (``gᵀx`` + rotation ``u_outᵀ G u_in``) and ``topk_abs_indices``,
``SparseEntryAdam.step`` / ``_positions``, ``add_rotated_delta`` and AdamW's ``step``. FLOP counts per call are
accumulated alongside: rotation ``2·out·in·(out+in)`` vs the dense ``dW = gᵀx`` ``2·T·out·in``.

Part B — candidate library changes, as copies of the library functions defined here (the library is not
edited), checked for equality with the library's result and timed A/B in the same process:
  * ``add_rotated_delta`` with the sparse ``S`` (k non-zeros) multiplied as a sparse CSR matrix instead of a
    dense ``|R|×|C|`` block: ``min(out·k + out·|C|·in, k·in + out·|R|·in)`` instead of
    ``out·|R|·|C| + out·|C|·in``;
  * ``selection.rotate_gradient`` choosing among four associations of ``u_outᵀ gᵀ x u_in`` by FLOPs
    (the library chooses between two).
End-to-end: steps alternate library / patched on the same model and batches; medians reported.

Part C — information only (would change the method): share of the true top-k energy of ``G̃`` that a
top-k restricted to the leading ``--block-frac`` of the small dimension's basis would keep, and its FLOPs.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault(
    "OMP_WAIT_POLICY", "PASSIVE"
)  # as in the step.py workers; must precede the torch import

# The parts: profile_breakdown.py (A), profile_candidates.py + profile_ab.py (B), profile_concentration.py (C).
import common
import meters
import profile_ab
import profile_concentration
import reporting
import torch
from profile_breakdown import ProfiledModel, step_breakdown


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="bert-base-4l", choices=list(common.MODEL_PRESETS))
    ap.add_argument("--setting", default="paper")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--pad-frac", type=float, default=0.5)
    ap.add_argument("--density", type=float, default=0.01)
    ap.add_argument("--calib-steps", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3, help="profiled steps (Part A)")
    ap.add_argument("--ab-steps", type=int, default=3, help="steps per arm in the A/B (Part B)")
    ap.add_argument("--block-frac", type=float, default=0.3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-ab", action="store_true")
    ap.add_argument("--quiet-wait", type=float, default=60.0)
    ap.add_argument("--out")
    return ap.parse_args(argv)


def prepare(args: argparse.Namespace, spec: dict[str, Any]) -> ProfiledModel:
    """The model of ``spec`` calibrated and prepared for SparseGrad (dynamic), with AdamW + SparseEntryAdam."""
    from sparsegrad_core.methods import prepare_model
    from sparsegrad_core.model import sparsegrad_layers
    from sparsegrad_core.optim import SparseEntryAdam, build_optimizer

    kw = dict(vocab=common.vocab_size(spec), pad_id=common.pad_token_id(spec))
    batches = common.make_batches(4, args.batch_size, args.seq_len, args.pad_frac, seed=1, **kw)
    calib = common.make_batches(args.calib_steps, args.batch_size, args.seq_len, args.pad_frac, seed=2, **kw)
    model = common.build_model(spec)
    prepared = prepare_model(
        model, common.method_spec("sg_dynamic", args.setting, args.density, args.calib_steps), calib
    )
    model = prepared.model
    model.train()
    opt = build_optimizer(model, lr=1e-5)
    return ProfiledModel(
        model=model,
        opt=opt,
        layers=[layer for _, layer in sparsegrad_layers(model)],
        sparse_opt=next(o for o in opt.optimizers if isinstance(o, SparseEntryAdam)),
        dense_opts=[o for o in opt.optimizers if not isinstance(o, SparseEntryAdam)],
        batches=batches,
    )


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="Sparse (CSR tensor support|invariant checks)")
    spec = common.model_spec(args.model)
    pm = prepare(args, spec)
    pm.step(pm.batches[0], timed=False)  # warmup
    if args.quiet_wait > 0:
        meters.wait_for_quiet(args.quiet_wait)

    part_a = step_breakdown(pm, args)
    result: dict[str, Any] = {
        "args": vars(args),
        "hardware": reporting.hardware(),
        "model_spec": spec,
        "part_a": part_a,
    }
    # one (g, x) and one (idx, values) per kind, for the micro A/B and Part C
    captured = profile_ab.capture_layer_inputs(pm)
    if args.quiet_wait > 0:
        meters.wait_for_quiet(args.quiet_wait)
    result["part_b_micro"] = profile_ab.micro_ab(captured)
    result["part_c"] = profile_concentration.leading_block_concentration(captured, args.block_frac)
    if not args.skip_ab:
        if args.quiet_wait > 0:
            meters.wait_for_quiet(args.quiet_wait)
        result["part_b_end_to_end"] = profile_ab.end_to_end_ab(pm, args.ab_steps)

    path = reporting.save_json(result, f"profile_{args.model}.json", args.out)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
