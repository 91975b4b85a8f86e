#!/usr/bin/env bash
# The whole miniature on one GPU: synthetic dataset -> VAE -> data_process -> dense teacher -> sparse LoRA
# (global only, then global + local) -> DMD -> DMD + region loss -> TAE decoder (distilled from the VAE) ->
# evaluation (scripts/eval_miniature.py, skipped if absent; with the TAE it also compares TAE- with VAE-decoded
# frames) -> packed weights and results in $OUT. Every stage's config is config/miniature/<stage>.yaml; each is
# time-boxed by its run.time_limit_s, which counts from the end of the stage's first step (kernel compiles excluded).
#
# The budgets below do not fit one 10-minute command: besides the training budgets every stage spends 15-35 s
# starting up and on its first step, data_process takes ~75 s and the evaluation of 4 clips ~180 s. So run it in
# three commands on the same (warm) machine:
#   bash scripts/run_miniature.sh --part 1   # dataset, VAE (160 s), data_process, teacher (220 s), pack      ~540 s
#   bash scripts/run_miniature.sh --part 2   # VAE decoder (100 s), LoRA x2 (30 s each), DMD x2 (55 s each),
#                                            # TAE (60 s), pack                                              ~520 s
#   bash scripts/run_miniature.sh --part 3   # the evaluation                                                  ~190 s
# Each part packs what exists into $OUT; on a fresh machine put the parts of the previous one under
# outputs/miniature/packed/ (carry them): the next part unpacks them and regenerates the dataset from its seed
# (and data_process, when a LoRA or DMD stage runs; part 2 with DECODER_STAGE=vae_decoder_long also that stage's
# 129-frame clips, data/miniature_long, seconds). A stage budget of 0 skips that stage (its earlier output is
# kept). Without --part every stage runs in one go.
#
# On the GPU machine (carry .whl: bash ../shared/gpu/wheels.sh yunchang, since every training entry point imports
# iasa.parallel, which needs yunchang), the full command:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PYTHONPATH || exit; bash scripts/run_miniature.sh
# Rehearsal on a CPU (tiny sizes, a few steps; minutes):  bash scripts/run_miniature.sh --rehearsal
# Environment: PYTHON (default python3), OUT (default outputs/miniature/export), WORKERS (default 16), the stage
# budgets in seconds T_VAE (160), T_TEACHER (220), T_VAE_DECODER (100), T_LORA (30, each), T_DMD (55, each), T_TAE
# (60), and BUDGET (560, of this command): the evaluation gets what is left of it (run under timeout). The weights
# are packed into $OUT before the evaluation, so an evaluation cut short still returns them. TEACHER_FROM (part 1):
# an earlier teacher run folder (model/, pose_guider.safetensors) to continue, with its VAE, instead of the vae stage
# and a teacher from scratch; the teacher's budget is then the continuation's (a fresh optimiser, warmed up again).
# T_TEACHER=0 (part 1): the VAE alone (no data_process, no teacher), packed with its newest checkpoint; a later part 1
# with those parts carried under outputs/miniature/packed/ unpacks them and the vae stage resumes from that checkpoint
# for T_VAE more seconds (at least a few: the stage writes its model folder, which data_process reads, at its end).
# DECODER_STAGE (part 2): the decoder stage's config, vae_decoder (whole 33-frame clips, the shipped decoder) or
# vae_decoder_long (129-frame clips in 4 pieces); both write outputs/miniature/vae_decoder. DECODER_FROM (part 2): an
# earlier model folder whose VAE decoder that stage continues to fine-tune, instead of the teacher's (e.g. the
# 33-frame decoder continued on the long clips).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
OUT=${OUT:-outputs/miniature/export}
WORKERS=${WORKERS:-16}
T_VAE=${T_VAE:-160} T_TEACHER=${T_TEACHER:-220} T_VAE_DECODER=${T_VAE_DECODER:-100} T_LORA=${T_LORA:-30} T_DMD=${T_DMD:-55}
T_TAE=${T_TAE:-60} BUDGET=${BUDGET:-560} TEACHER_FROM=${TEACHER_FROM:-} DECODER_FROM=${DECODER_FROM:-}
DECODER_STAGE=${DECODER_STAGE:-vae_decoder}
export TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1  # TF32 for the float32 matmuls left outside bf16 autocast
REHEARSAL=0 PART=all
while (($#)); do
  case $1 in
    --rehearsal) REHEARSAL=1 ;;
    --part) PART=${2:?--part needs 1 or 2}; shift ;;
    *) echo "run_miniature.sh: unknown argument $1 (use --rehearsal and/or --part 1|2)" >&2; exit 2 ;;
  esac
  shift
done
[[ $PART == all || $PART == 1 || $PART == 2 || $PART == 3 ]] || { echo "run_miniature.sh: --part $PART: use 1, 2 or 3" >&2; exit 2; }
[[ $DECODER_STAGE == vae_decoder || $DECODER_STAGE == vae_decoder_long ]] \
  || { echo "run_miniature.sh: DECODER_STAGE=$DECODER_STAGE: use vae_decoder or vae_decoder_long" >&2; exit 2; }
mkdir -p "$OUT" outputs/miniature
LOG="$OUT/run_miniature.log"
exec > >(tee -a "$LOG") 2>&1
export TQDM_MININTERVAL=5  # a progress line every 5 s in the log, not one per step

# Shrunk sizes of the rehearsal (every stage, same code path).
DATA_ARGS=(--train_clips 160 --heldout_clips 16 --identities_train 16 --identities_heldout 4 --frames 33 --size 256)
# The long decoder stage's clips (config/miniature/vae_decoder_long.yaml): the same seed and so the same people (the
# identity seeds are drawn first; motions and framing differ), 129 frames = 33 latent frames, 4 pieces of ~33 frames.
LONG_ARGS=(--train_clips 64 --heldout_clips 4 --identities_train 16 --identities_heldout 4 --frames 129 --size 256)
COMMON=() ; PROCESS=() ; VAE=() ; DECODER=() ; TEACHER=() ; TRAIN=() ; DISTILL=() ; TAE=() ; EVAL=(device=cuda max_clips=4)
if [[ $REHEARSAL == 1 ]]; then
  DATA_ARGS=(--train_clips 4 --heldout_clips 2 --identities_train 2 --identities_heldout 1 --frames 17 --size 64)
  LONG_ARGS=(--train_clips 2 --heldout_clips 1 --identities_train 2 --identities_heldout 1 --frames 33 --size 64)
  WORKERS=2
  COMMON=(run.max_steps=2 run.mixed_precision=fp32 model.dtype=float32)
  for budget in T_VAE T_TEACHER T_VAE_DECODER T_LORA T_DMD T_TAE; do  # 20 s each; a 0 (skip) stays 0
    if ((${!budget} > 0)); then printf -v "$budget" 20; fi
  done
  BUDGET=100000
  PROCESS=(data.height=64 data.width=64 data.num_frames=17 model.dtype=float32)
  VAE=(data.num_frames=5 data.crop=32 data.batch_size=2 data.max_videos=4)
  DECODER=(data.num_frames=17 data.crop=32 data.batch_size=2)
  if [[ $DECODER_STAGE == vae_decoder_long ]]; then DECODER+=(decoder_pieces=2); fi  # 5 latent frames: pieces of 3 and 2
  TEACHER=(clips_per_step=2)
  TRAIN=(attention.backend=reference)
  DISTILL=(attention.backend=reference region.latent_frames=1)
  TAE=(data.num_frames=5 data.crop=32 data.batch_size=2 data.max_videos=4)
  EVAL=(device=cpu max_clips=1 cpu_clips=1)
fi

# A stage that fails still returns what the stages before it trained (the teacher onwards).
trap 'echo "=== FAILED (line $LINENO): packing what exists"; pack || true' ERR

stage() {  # stage <name> <command...>: runs it, logs its wall time
  local name=$1 start=$SECONDS
  shift
  echo "=== $name: $*"
  "$@"
  echo "=== $name done in $((SECONDS - start)) s (total $SECONDS s)"
}
train() {  # train <stage> <budget s> [overrides...]: budget 0 skips the stage
  local name=$1 budget=$2
  shift 2
  if ((budget == 0)); then echo "=== $name: skipped (budget 0)"; return; fi
  stage "$name" "$PY" examples/IASA/train_iasa.py --config "config/miniature/$name.yaml" "$@" run.time_limit_s="$budget"
}
runs() { [[ $PART == all || $PART == "$1" ]]; }
packed() { compgen -G "outputs/miniature/packed/miniature.tar.part-*" > /dev/null; }
pack() {  # with the vae stage's newest checkpoint, when it has one: a later command continues that stage
  local checkpoints=()
  if compgen -G "outputs/miniature/vae/checkpoints/step-*/state.json" > /dev/null; then checkpoints=(--checkpoints vae); fi
  stage pack "$PY" scripts/pack_miniature.py --runs outputs/miniature --out "$OUT" "${checkpoints[@]}"
}

if [[ -f data/miniature/train/manifest.json ]]; then
  echo "=== dataset: data/miniature exists, kept"
else
  stage dataset "$PY" scripts/make_synthetic_dataset.py --out data/miniature --workers "$WORKERS" --codec ffv1 "${DATA_ARGS[@]}"
fi
if [[ $PART == 1 && ! -d outputs/miniature/vae ]] && packed; then  # a fresh machine: the vae stage continues
  cat outputs/miniature/packed/miniature.tar.part-* | tar x
fi
if [[ $PART != 1 && ! -d outputs/miniature/teacher/model ]]; then  # a fresh machine: the packed weights were carried
  packed || { echo "run_miniature.sh: no outputs/miniature/teacher/model and no outputs/miniature/packed/miniature.tar.part-*: run the earlier parts first" >&2; exit 2; }
  cat outputs/miniature/packed/miniature.tar.part-* | tar x
fi

if runs 1; then
  FROM=() GUIDER=()
  if [[ -n $TEACHER_FROM ]]; then  # the teacher continued: its VAE encodes the cache, no vae stage
    FROM=(model.model_dir="$TEACHER_FROM/model") GUIDER=(pose_guider_init="$TEACHER_FROM/pose_guider.safetensors")
  else
    train vae "$T_VAE" "${COMMON[@]}" "${VAE[@]}"
  fi
  if ((T_TEACHER > 0)); then
    stage data_process "$PY" examples/IASA/train_iasa.py --config config/miniature/data_process.yaml "${PROCESS[@]}" "${FROM[@]}"
    train teacher "$T_TEACHER" "${COMMON[@]}" "${TEACHER[@]}" "${FROM[@]}" "${GUIDER[@]}"
  else
    echo "=== data_process, teacher: skipped (T_TEACHER=0: the VAE alone; a later part 1 continues it)"
  fi
fi
if runs 2; then
  if ((T_LORA + T_DMD > 0)) && ! compgen -G "data/miniature/train_cache/*/meta.json" > /dev/null; then
    stage data_process "$PY" examples/IASA/train_iasa.py --config config/miniature/data_process.yaml \
      model.model_dir=outputs/miniature/teacher/model "${PROCESS[@]}"
  fi
  if ((T_VAE_DECODER > 0)) && [[ $DECODER_STAGE == vae_decoder_long && ! -f data/miniature_long/train/manifest.json ]]; then
    stage long_dataset "$PY" scripts/make_synthetic_dataset.py --out data/miniature_long --workers "$WORKERS" --codec ffv1 "${LONG_ARGS[@]}"
  fi
  DECODER_START=()
  if [[ -n $DECODER_FROM ]]; then DECODER_START=(model.model_dir="$DECODER_FROM"); fi
  train "$DECODER_STAGE" "$T_VAE_DECODER" "${COMMON[@]}" "${DECODER[@]}" "${DECODER_START[@]}"
  train lora_global "$T_LORA" "${COMMON[@]}" "${TRAIN[@]}"
  train lora_global_local "$T_LORA" "${COMMON[@]}" "${TRAIN[@]}"
  train dmd "$T_DMD" "${COMMON[@]}" "${DISTILL[@]}"
  train dmd_region "$T_DMD" "${COMMON[@]}" "${DISTILL[@]}"
  train tae "$T_TAE" "${COMMON[@]}" "${TAE[@]}"
fi
if runs 1 || runs 2; then pack; fi
if ! runs 3; then
  if [[ $PART == 1 ]] && ((T_TEACHER == 0)); then
    echo "=== part 1 (the VAE alone) done in $SECONDS s: run --part 1 again to continue it (and train the teacher)"
  else
    echo "=== part $PART done in $SECONDS s: run --part $((PART + 1)) next on this machine"
  fi
  exit 0
fi

mkdir -p benchmarks/results
# Only when the file exists: the evaluation stops on a missing tae_checkpoint, and only after every variant ran.
TAE_FILE=outputs/miniature/tae/tae.safetensors
if [[ -f $TAE_FILE ]]; then EVAL+=(tae_checkpoint="$TAE_FILE"); fi
left=$((BUDGET - SECONDS))
if ((left < 30)); then
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
