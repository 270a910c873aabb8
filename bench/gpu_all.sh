#!/usr/bin/env bash
# Every GPU check of the project in one unattended command, for a CUDA machine (under 10 minutes: the parts'
# time limits add up to 580 s), most telling first: the CUDA tests (no host sync inside a step, under
# torch.cuda.set_sync_debug_mode("error")), bench/gpu_step.py's encoder suite (steps/s and memory of every method),
# bench/gpu_profile.py (kernel launches, syncs and ops per step), then gpu_step.py's LLaMA suite. Each part has a
# time limit; a part that fails or runs out of time leaves its log (and gpu_step.py its result file, rewritten
# after every case) and the next part still runs.
#
#   bash bench/gpu_all.sh OUT_DIR            # writes cuda_tests.log, gpu_step_encoders.{json,log},
#                                            # gpu_profile.json, gpu_profile.log, trace_{full,sg_block}.json.gz and
#                                            # gpu_step_llama.{json,log} under OUT_DIR
# PYTHON picks the interpreter (default python3); the project's root must be importable (run from it).
set -u -o pipefail
OUT=${1:?usage: bash bench/gpu_all.sh OUT_DIR}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
status=0
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'" || exit 1
timeout -s INT 60 "$PY" -m pytest -q -p no:cacheprovider tests/core -k cuda -rA 2>&1 | tee "$OUT/cuda_tests.log" || status=1
timeout -s INT 190 "$PY" bench/gpu_step.py --suite encoders --out "$OUT/gpu_step_encoders.json" 2>&1 | tee "$OUT/gpu_step_encoders.log" || status=1
timeout -s INT 110 "$PY" bench/gpu_profile.py --traces full,sg_block --out "$OUT" > "$OUT/gpu_profile.log" 2>&1 || status=1
gzip -f "$OUT"/trace_*.json 2>/dev/null || true  # Chrome traces (chrome://tracing, ui.perfetto.dev): where the GPU idles
tail -n 12 "$OUT/gpu_profile.log"
timeout -s INT 220 "$PY" bench/gpu_step.py --suite llama --out "$OUT/gpu_step_llama.json" 2>&1 | tee "$OUT/gpu_step_llama.log" || status=1
exit $status
