#!/usr/bin/env bash
# Issue #14 on a lent GPU, in one call: strong teachers -> consistent distillation into an EAN -> pruning that
# keeps distilling from the same teachers. Every stage is the worker CLI (so every stage resumes from its
# work directory), each is bounded by a time limit, and whatever exists is packed into $OUT on exit, also
# after a limit or an error. Evaluate on test_public back on the CPU (the test set does not travel).
#
#   here:   bash benchmarks/gpu/prepare.sh
#   device: run(command="bash benchmarks/gpu/kd_campaign.sh", carry=[".gpu"], timeout_s=590)
#   here:   edgefer-worker export --checkpoint <files_at>/prune-model.pt --output models/ean-pruned.onnx ...
#
# Knobs (environment): TEACHER_EPOCHS, TEACHERS (seeds trained side by side), STUDENT_ARCH, STUDENT_EPOCHS,
# PRUNE_TARGET, PRUNE_EPOCHS, each stage's seconds (TEACHER_S, DISTILL_S, PRUNE_S), DEVICE (a CPU smoke run:
# DEVICE=cpu DATA=toy.npz TEACHER_EPOCHS=1 STUDENT_EPOCHS=1 PRUNE_EPOCHS=1 PRUNE_TARGET=0.3).
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-python3}
DATA=${DATA:-.gpu/train.npz}
RUNS=${RUNS:-runs/gpu}
OUT=${OUT:-runs/gpu-out}
TEACHERS=${TEACHERS:-"0 1"}
TEACHER_EPOCHS=${TEACHER_EPOCHS:-60}
STUDENT_ARCH=${STUDENT_ARCH:-ean-m}
STUDENT_EPOCHS=${STUDENT_EPOCHS:-100}
PRUNE_TARGET=${PRUNE_TARGET:-0.7}
PRUNE_EPOCHS=${PRUNE_EPOCHS:-60}
TEACHER_S=${TEACHER_S:-240}
DISTILL_S=${DISTILL_S:-180}
PRUNE_S=${PRUNE_S:-120}
DEVICE=${DEVICE:-cuda}
mkdir -p "$RUNS" "$OUT"
export PYTHONPATH=. PYTHONUNBUFFERED=1
ls .gpu/wheels/*.whl >/dev/null 2>&1 && $PY -m pip install -q --no-deps .gpu/wheels/*.whl
worker=($PY -m compression_worker.cli)
common=(--data "$DATA" --split-seed 0 --device "$DEVICE" --threads "$(nproc)")

pack() {
  for stage in its/round1 prune/step1; do
    [ -f "$RUNS/$stage/model.pt" ] && cp "$RUNS/$stage/model.pt" "$OUT/${stage%%/*}-model.pt"
  done
  tar -czf "$OUT/logs.tar.gz" --exclude='*.pt' --exclude='*.npz' -C "$RUNS" . 2>/dev/null
  nvidia-smi --query-gpu=name,memory.used --format=csv >"$OUT/gpu.txt" 2>&1
  ls -la "$OUT"
}
trap pack EXIT

teacher_args=()
for seed in $TEACHERS; do
  dir="$RUNS/teacher-r18-s$seed"
  teacher_args+=(--teacher "$dir/model.pt")
  timeout "$TEACHER_S" "${worker[@]}" train "${common[@]}" --arch resnet18-fer --epochs "$TEACHER_EPOCHS" \
    --batch-size 256 --lr 0.1 --mixup 0.2 --cutmix 1.0 --mix-prob 0.8 --label-smoothing 0.1 --ema-decay 0.9998 \
    --seed "$seed" --workdir "$dir" >"$dir.log" 2>&1 &
done
wait
for arg in "${teacher_args[@]}"; do
  [ "$arg" = --teacher ] || [ -f "$arg" ] || { echo "a teacher did not finish: $arg (see its .log)"; exit 1; }
done

timeout "$DISTILL_S" "${worker[@]}" distill "${common[@]}" --mode consistent "${teacher_args[@]}" --arch "$STUDENT_ARCH" --rounds 1 \
  --epochs "$STUDENT_EPOCHS" --temperature 2 --alpha 0.9 --mixup 0.2 --mix-prob 0.5 --ema-decay 0.9995 \
  --batch-size 256 --lr 0.2 --workdir "$RUNS/its" >"$RUNS/its.log" 2>&1 || { echo "distill stopped: $RUNS/its.log"; exit 1; }

timeout "$PRUNE_S" "${worker[@]}" prune "${common[@]}" --model "$RUNS/its/round1/model.pt" --distill-mode consistent "${teacher_args[@]}" \
  --target "$PRUNE_TARGET" --local-epochs 5 --finetune-epochs "$PRUNE_EPOCHS" --temperature 2 --alpha 0.9 \
  --ema-decay 0.999 --batch-size 256 --lr 0.05 --workdir "$RUNS/prune" >"$RUNS/prune.log" 2>&1 \
  || { echo "prune stopped: $RUNS/prune.log"; exit 1; }
