#!/usr/bin/env bash
# The whole miniature on one GPU, in one command (~9.5 minutes on an H200): synthetic dataset -> VAE ->
# data_process -> dense teacher -> sparse LoRA (global only, then global + local) -> DMD -> DMD + region loss
# -> evaluation (scripts/eval_miniature.py, skipped if absent) -> packed weights and results in $OUT.
# Every stage's config is config/miniature/<stage>.yaml; each is time-boxed by its run.time_limit_s.
#
# On the GPU machine (carry .whl), the full command:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PYTHONPATH || exit; bash scripts/run_miniature.sh
# Rehearsal on a CPU (tiny sizes, a few steps; minutes):  bash scripts/run_miniature.sh --rehearsal
# Environment: PYTHON (default python3), OUT (default outputs/miniature/export), WORKERS (default 16), the stage
# budgets in seconds T_VAE (50), T_TEACHER (110), T_LORA (25, each), T_DMD (50, each), and BUDGET (560): the
# evaluation gets what is left of it (run under timeout). The weights are packed into $OUT before the evaluation,
# so an evaluation cut short still returns them.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
OUT=${OUT:-outputs/miniature/export}
WORKERS=${WORKERS:-16}
T_VAE=${T_VAE:-50} T_TEACHER=${T_TEACHER:-110} T_LORA=${T_LORA:-25} T_DMD=${T_DMD:-50} BUDGET=${BUDGET:-560}
export TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1  # TF32 for the float32 matmuls left outside bf16 autocast
REHEARSAL=0
[[ "${1:-}" == "--rehearsal" ]] && REHEARSAL=1
mkdir -p "$OUT" outputs/miniature
LOG="$OUT/run_miniature.log"
exec > >(tee -a "$LOG") 2>&1
export TQDM_MININTERVAL=5  # a progress line every 5 s in the log, not one per step

# Shrunk sizes of the rehearsal (every stage, same code path).
DATA_ARGS=(--train_clips 160 --heldout_clips 16 --identities_train 16 --identities_heldout 4 --frames 33 --size 256)
COMMON=() ; PROCESS=() ; VAE=() ; TRAIN=() ; DISTILL=() ; EVAL=(device=cuda)
if [[ $REHEARSAL == 1 ]]; then
  DATA_ARGS=(--train_clips 4 --heldout_clips 2 --identities_train 2 --identities_heldout 1 --frames 17 --size 64)
  WORKERS=2
  COMMON=(run.max_steps=2 run.mixed_precision=fp32 model.dtype=float32)
  T_VAE=20 T_TEACHER=20 T_LORA=20 T_DMD=20 BUDGET=100000
  PROCESS=(data.height=64 data.width=64 data.num_frames=17 model.dtype=float32)
  VAE=(data.num_frames=9 data.crop=32 data.batch_size=2 data.max_videos=4)
  TRAIN=(attention.backend=reference)
  DISTILL=(attention.backend=reference region.latent_frames=1)
  EVAL=(device=cpu max_clips=1 cpu_clips=1)
fi

# A stage that fails still returns what the stages before it trained (the teacher onwards).
trap 'echo "=== FAILED (line $LINENO): packing what exists"; "$PY" scripts/pack_miniature.py --runs outputs/miniature --out "$OUT" || true' ERR

stage() {  # stage <name> <command...>: runs it, logs its wall time
  local name=$1 start=$SECONDS
  shift
  echo "=== $name: $*"
  "$@"
  echo "=== $name done in $((SECONDS - start)) s (total $SECONDS s)"
}
train() {  # train <stage> [overrides...]
  local name=$1
  shift
  stage "$name" "$PY" examples/IASA/train_iasa.py --config "config/miniature/$name.yaml" "$@"
}

if [[ -f data/miniature/train/manifest.json ]]; then
  echo "=== dataset: data/miniature exists, kept"
else
  stage dataset "$PY" scripts/make_synthetic_dataset.py --out data/miniature --workers "$WORKERS" --codec ffv1 "${DATA_ARGS[@]}"
fi
train vae "${COMMON[@]}" "${VAE[@]}" run.time_limit_s="$T_VAE"
stage data_process "$PY" examples/IASA/train_iasa.py --config config/miniature/data_process.yaml "${PROCESS[@]}"
train teacher "${COMMON[@]}" run.time_limit_s="$T_TEACHER"
train lora_global "${COMMON[@]}" "${TRAIN[@]}" run.time_limit_s="$T_LORA"
train lora_global_local "${COMMON[@]}" "${TRAIN[@]}" run.time_limit_s="$T_LORA"
train dmd "${COMMON[@]}" "${DISTILL[@]}" run.time_limit_s="$T_DMD"
train dmd_region "${COMMON[@]}" "${DISTILL[@]}" run.time_limit_s="$T_DMD"
stage pack "$PY" scripts/pack_miniature.py --runs outputs/miniature --out "$OUT"

mkdir -p benchmarks/results
left=$((BUDGET - SECONDS))
if [[ ! -f scripts/eval_miniature.py ]]; then
  echo "=== eval skipped: scripts/eval_miniature.py is absent (helper mini-eval writes it)"
elif ((left < 30)); then
  echo "=== eval skipped: only $left s of the $BUDGET s budget left"
else
  stage eval timeout "$left" "$PY" scripts/eval_miniature.py --config config/miniature/eval.yaml dataset=data/miniature \
    runs=outputs/miniature out=benchmarks/results/miniature.json grid=benchmarks/results/miniature_grid.png "${EVAL[@]}" \
    || echo "=== eval FAILED or cut at the budget (the weights are packed already)"
fi
for file in benchmarks/results/miniature.json benchmarks/results/miniature_grid.png; do
  if [[ -f $file ]]; then cp "$file" "$OUT/"; fi
done
echo "=== all done in $SECONDS s; $OUT holds: $(ls "$OUT" | tr '\n' ' ')"
