#!/usr/bin/env bash
# Every GPU check of the project, unattended, for a CUDA machine, in four commands of under 10 minutes each (the
# parts' time limits add up to 540 s, 400 s, 530 s and 520 s), most telling first. Each part has a time limit; a part
# that fails or runs out of time leaves its log (and gpu_step.py and gpu_trainer.py their result files, rewritten
# after every case) and the next part still runs.
#
#   bash bench/gpu_all.sh OUT_DIR         # the CUDA tests (no host sync inside a step, under
#                                         # torch.cuda.set_sync_debug_mode("error"); a captured step replays as eager
#                                         # steps), gpu_step.py's encoder suite eager and with --cuda-graphs, and
#                                         # bench/gpu_profile.py (kernel launches, syncs and ops per step): writes
#                                         # cuda_tests.log, gpu_step_encoders.{json,log}, gpu_step_encoders_graphs.{json,log},
#                                         # gpu_profile.{json,log} and trace_{full,sg_block}.json.gz under OUT_DIR
#   bash bench/gpu_all.sh OUT_DIR llama   # gpu_step.py's LLaMA suite, the exact method (beside full FT) a part of its own:
#                                         # gpu_step_llama.{json,log}, gpu_step_llama_exact.{json,log}
#   bash bench/gpu_all.sh OUT_DIR jobs    # training jobs with CUDA graphs (TrainingArguments.cuda_graphs): the Trainer's CUDA
#                                         # tests (a graphed run lands where the eager run does, resumes from its checkpoint)
#                                         # and bench/gpu_trainer.py (Trainer steps/s per method, eager and graphed, rows of
#                                         # varied length): cuda_graph_job_tests.log, gpu_trainer.{json,log}
#   bash bench/gpu_all.sh OUT_DIR bf16    # the encoder suite under bf16 autocast, eager and with --cuda-graphs (SparseGrad's
#                                         # gradient products run in bf16 there, as a dense layer's weight gradient does):
#                                         # gpu_step_encoders_bf16.{json,log}, gpu_step_encoders_bf16_graphs.{json,log}
# PYTHON picks the interpreter (default python3); the project's root must be importable (run from it).
set -u -o pipefail
OUT=${1:?usage: bash bench/gpu_all.sh OUT_DIR [llama]}
PART=${2:-encoders}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
status=0
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'" || exit 1
if [ "$PART" = llama ]; then
  timeout -s INT 220 "$PY" bench/gpu_step.py --suite llama --llama-methods full,lora,sg_block,frozen_mlp \
    --out "$OUT/gpu_step_llama.json" 2>&1 | tee "$OUT/gpu_step_llama.log" || status=1
  timeout -s INT 180 "$PY" bench/gpu_step.py --suite llama --llama-methods full,sg_dynamic \
    --out "$OUT/gpu_step_llama_exact.json" 2>&1 | tee "$OUT/gpu_step_llama_exact.log" || status=1
  exit $status
fi
if [ "$PART" = jobs ]; then
  timeout -s INT 150 "$PY" -m pytest -q -p no:cacheprovider tests/training/test_cuda_graphs.py tests/core/test_optim.py \
    -rA 2>&1 | tee "$OUT/cuda_graph_job_tests.log" || status=1
  timeout -s INT 380 "$PY" bench/gpu_trainer.py --steps 30 --skip 8 --timeout 150 --out "$OUT/gpu_trainer.json" 2>&1 \
    | tee "$OUT/gpu_trainer.log" || status=1
  exit $status
fi
if [ "$PART" = bf16 ]; then
  timeout -s INT 260 "$PY" bench/gpu_step.py --suite encoders --precisions bf16 \
    --out "$OUT/gpu_step_encoders_bf16.json" 2>&1 | tee "$OUT/gpu_step_encoders_bf16.log" || status=1
  timeout -s INT 260 "$PY" bench/gpu_step.py --suite encoders --precisions bf16 --cuda-graphs \
    --out "$OUT/gpu_step_encoders_bf16_graphs.json" 2>&1 | tee "$OUT/gpu_step_encoders_bf16_graphs.log" || status=1
  exit $status
fi
[ "$PART" = encoders ] || { echo "unknown part $PART: encoders (default), llama, jobs or bf16" >&2; exit 2; }
timeout -s INT 60 "$PY" -m pytest -q -p no:cacheprovider tests/core -k cuda -rA 2>&1 | tee "$OUT/cuda_tests.log" || status=1
timeout -s INT 190 "$PY" bench/gpu_step.py --suite encoders --out "$OUT/gpu_step_encoders.json" 2>&1 | tee "$OUT/gpu_step_encoders.log" || status=1
timeout -s INT 180 "$PY" bench/gpu_step.py --suite encoders --cuda-graphs --out "$OUT/gpu_step_encoders_graphs.json" 2>&1 | tee "$OUT/gpu_step_encoders_graphs.log" || status=1
timeout -s INT 110 "$PY" bench/gpu_profile.py --traces full,sg_block --out "$OUT" > "$OUT/gpu_profile.log" 2>&1 || status=1
gzip -f "$OUT"/trace_*.json 2>/dev/null || true  # Chrome traces (chrome://tracing, ui.perfetto.dev): where the GPU idles
tail -n 12 "$OUT/gpu_profile.log"
exit $status
