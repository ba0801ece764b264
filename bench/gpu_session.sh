#!/usr/bin/env bash
# Every issue-6 figure on one GPU, written under OUT (docs/performance.md, "How to get the
# GPU figures").
#
#   bash bench/gpu_session.sh OUT [STAGE ...]      stages: machine data bench mapper build
#                                                  (default: all five, in that order)
#
# machine  GPU, driver, CPU, torch versions                      -> OUT/machine.txt
# data     GS_IMAGES (100,000) real-size JPEG files in GS_CLASSES (1,000) class folders and
#          a GS_BENCH_IMAGES (4,096) set, written in parallel by all cores (resumable)
# bench    bench/bench_build.py, GoogLeNet and ResNet-50 at 224 px, build pass vs bare
#          forward, one run per GS_BENCH_VARIANTS entry (pil / pil + channels-last /
#          jpeg-device + channels-last / the same in bf16)       -> OUT/bench.txt
# mapper   bench/bench_mapper.py at 100,000 x 512: our Mapper index build on the device
#          against KeplerMapper on the CPU (issue 4's "build >= 5x")  -> OUT/mapper.txt
# build    a timed `python -m compute build` (GoogLeNet, 9 Inception layers, jpeg-device,
#          channels-last, default settings) over the GS_IMAGES files: images/s and the
#          projected time for ImageNet's 1,281,167 images     -> OUT/build.txt, build.log
#
# Each stage stops itself before the device's 10-minute command limit (GS_*_TIMEOUT), and
# what it printed so far stays in OUT. With that limit, run the stages as separate
# commands on one warm machine (the data stays in GS_DATA between them; a fresh machine
# regenerates what is missing):
#   bash bench/gpu_session.sh "$OUT" machine data
#   bash bench/gpu_session.sh "$OUT" bench
#   bash bench/gpu_session.sh "$OUT" mapper
#   bash bench/gpu_session.sh "$OUT" build
#
# CPU smoke test (tiny sizes; the figures mean nothing):
#   GS_DEVICE=cpu GS_IMAGES=48 GS_BENCH_IMAGES=8 GS_CLASSES=4 GS_BATCH=8 GS_WORKERS=1 \
#   GS_IMAGE_SIZE=64 GS_BENCH_VARIANTS="pil|jpeg-device --channels-last --precision bf16" \
#   GS_BUILD_ARGS="--mapper-capacity 40 --mapper-crops 20 --crops 1" \
#   bash bench/gpu_session.sh /tmp/gpu-session-smoke
set -euo pipefail

OUT=${1:?usage: bash bench/gpu_session.sh OUT [machine] [data] [bench] [mapper] [build]}
shift
STAGES=${*:-machine data bench mapper build}
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

NPROC=$(nproc)
DEVICE=${GS_DEVICE:-cuda}
IMAGES=${GS_IMAGES:-100000}
BENCH_IMAGES=${GS_BENCH_IMAGES:-4096}
CLASSES=${GS_CLASSES:-1000}
BATCH=${GS_BATCH:-256}
WORKERS=${GS_WORKERS:-$((NPROC > 2 ? NPROC - 2 : 1))}
JOBS=${GS_JOBS:-$NPROC}
SIZE=${GS_IMAGE_SIZE:-224}
DATA=${GS_DATA:-/tmp/network-atlas-gpu-session}
MODELS=${GS_MODELS:-googlenet,resnet50}
BUILD_MODEL=${GS_BUILD_MODEL:-googlenet}
BUILD_ARGS=${GS_BUILD_ARGS:-}
BENCH_VARIANTS=${GS_BENCH_VARIANTS:-"pil|pil --channels-last|jpeg-device --channels-last|jpeg-device --channels-last --precision bf16"}
BENCH_TIMEOUT=${GS_BENCH_TIMEOUT:-140}
BUILD_TIMEOUT=${GS_BUILD_TIMEOUT:-540}
MAPPER_POINTS=${GS_MAPPER_POINTS:-100000}
MAPPER_TIMEOUT=${GS_MAPPER_TIMEOUT:-540}
TRAIN="$DATA/train-$IMAGES-$CLASSES"
BENCH_SET="$DATA/bench-$BENCH_IMAGES-$CLASSES"

note() { echo "## $(date -u +%H:%M:%S) $*" | tee -a "$OUT/session.log"; }
load() { echo "# load average: $(cut -d' ' -f1-3 /proc/loadavg)"; }

stage_machine() {
    note "machine"
    {
        date -u
        nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv \
            2>/dev/null || echo "no nvidia-smi"
        echo "cpus: $NPROC, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs)"
        free -g | head -2
        df -h "$(dirname "$DATA")" | tail -1
        python -c 'import torch, torchvision, sys; print("python", sys.version.split()[0],
            "torch", torch.__version__, "torchvision", torchvision.__version__, "cuda",
            torch.version.cuda, "cudnn", torch.backends.cudnn.version(),
            "gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)'
        echo "settings: device $DEVICE, images $IMAGES, bench images $BENCH_IMAGES," \
            "classes $CLASSES, batch $BATCH, workers $WORKERS, size $SIZE"
        load
    } 2>&1 | tee "$OUT/machine.txt"
}

generate() {  # DIR COUNT
    python bench/bench_build.py --generate-only --keep "$1" --images "$2" \
        --classes "$CLASSES" --jobs "$JOBS" --device cpu
}

stage_data() {
    note "data: $IMAGES + $BENCH_IMAGES files in $DATA, $JOBS processes"
    {
        generate "$BENCH_SET" "$BENCH_IMAGES"
        generate "$TRAIN" "$IMAGES"
        echo "# $(find "$TRAIN" -name '*.jpg' | wc -l) files, $(du -sh "$TRAIN" | cut -f1)"
        load
    } 2>&1 | tee -a "$OUT/data.txt"
}

stage_bench() {
    generate "$BENCH_SET" "$BENCH_IMAGES" >/dev/null  # completes a set left unfinished
    local variant
    IFS='|' read -r -a variants <<<"$BENCH_VARIANTS"
    for variant in "${variants[@]}"; do
        note "bench: --decode $variant"
        # shellcheck disable=SC2086  # the variant is several flags
        {
            load
            timeout "$BENCH_TIMEOUT" python bench/bench_build.py --keep "$BENCH_SET" \
                --images "$BENCH_IMAGES" --classes "$CLASSES" --device "$DEVICE" \
                --batch-size "$BATCH" --workers "$WORKERS" --image-size "$SIZE" \
                --models "$MODELS" --decode $variant ||
                echo "# stopped (exit $?; timeout $BENCH_TIMEOUT s): lines above are complete"
            load
        } 2>&1 | tee -a "$OUT/bench.txt"
    done
}

stage_mapper() {
    note "mapper: index build on $DEVICE vs KeplerMapper on the CPU, $MAPPER_POINTS points"
    {
        load
        timeout "$MAPPER_TIMEOUT" python bench/bench_mapper.py --n "$MAPPER_POINTS" \
            --device "$DEVICE" --no-memory ||
            echo "# stopped (exit $?; timeout $MAPPER_TIMEOUT s): lines above are complete"
        load
    } 2>&1 | tee -a "$OUT/mapper.txt"
}

stage_build() {
    generate "$TRAIN" "$IMAGES" >/dev/null  # completes a set left by an earlier machine
    local layers decode=jpeg-device
    layers=$(python -c "from bench.bench_build import LAYERS; print(','.join(LAYERS['$BUILD_MODEL']))")
    note "build: $BUILD_MODEL over $IMAGES files ($layers)"
    rm -rf "$DATA/atlas"
    load | tee "$OUT/build.log"
    local start end code=0 startup
    # What the command costs before it reads any data (imports, the model): fixed, so the
    # projection does not multiply it by 12.8.
    start=$(date +%s.%N)
    python -c "import compute.cli; from compute.models import get_model
get_model('torchvision:$BUILD_MODEL', num_classes=$CLASSES)"
    startup=$(python -c "import time; print(time.time() - $start)")
    start=$(date +%s.%N)
    # shellcheck disable=SC2086  # GS_BUILD_ARGS is several flags
    timeout "$BUILD_TIMEOUT" python -m compute build --model "torchvision:$BUILD_MODEL" \
        --data "$TRAIN" --layers "$layers" --out "$DATA/atlas" --device "$DEVICE" \
        --batch-size "$BATCH" --workers "$WORKERS" --image-size "$SIZE" --decode "$decode" \
        --channels-last --num-classes "$CLASSES" --no-progress $BUILD_ARGS 2>&1 |
        tee -a "$OUT/build.log" || code=$?
    end=$(date +%s.%N)
    load | tee -a "$OUT/build.log"
    if [ -f "$DATA/atlas/manifest.json" ]; then
        python -m compute verify "$DATA/atlas" | tee -a "$OUT/build.log"
        python -c "import json, sys; m = json.load(open(sys.argv[1])); m.pop('files');
print(json.dumps(m['build'], indent=1)); print('parameters', json.dumps(m['parameters'])[:2000])" \
            "$DATA/atlas/manifest.json" >>"$OUT/build.log"
    fi
    report "$OUT/build.log" "$IMAGES" "$start" "$end" "$code" "$BUILD_TIMEOUT" "$startup" |
        tee "$OUT/build.txt"
}

report() {  # LOG IMAGES START END EXIT LIMIT STARTUP: images/s and the ImageNet projection
    python - "$@" <<'PY'
import re
import sys

log, images, start, end, code, limit, startup = sys.argv[1:]
images, wall, startup = int(images), float(end) - float(start), float(startup)
IMAGENET, TARGET = 1_281_167, 15 * 60
text = open(log, encoding="utf-8", errors="replace").read()
stages = {
    name: float(seconds)
    for name, seconds in re.findall(r"compute\.build: ([a-z ]+): ([0-9.]+) s$", text, re.M)
}
print(f"# timed build: {images:,} JPEG files, exit {code}, wall {wall:.1f} s (limit {limit} s)")
print("# stages: " + ", ".join(f"{k} {v:.1f} s" for k, v in stages.items()))
if "summit pass" not in stages:
    print("# the pass did not finish (see build.log): no figure")
    sys.exit(0)
pass_s = stages["summit pass"]
print(f"pass only: {images / pass_s:,.1f} img/s -> {IMAGENET / (images / pass_s) / 60:.1f} min "
      f"for {IMAGENET:,} images")
# Grow with the images: the pass, and what the command does before build_atlas's stages
# begin besides its fixed start-up (folder scan, every image's header check). Fixed:
# start-up (imports, model), validate (first batch, layer checks, receptive fields) and the
# derived stages, bounded by classes, examples and the Mapper capacity (100,000 images by
# default: the same sample at 100,000 and at 1.28 M images).
finished = "commit" in stages
fixed = startup + sum(v for k, v in stages.items() if k != "summit pass")
# (the start-up is timed in a separate process, so it can exceed the build's own by noise)
before = max(0.0, wall - startup - sum(stages.values()))
scaled = pass_s + (before if finished else 0.0)
if finished:
    print(f"start-up (imports, model) {startup:.1f} s; before the stages (folder scan, header "
          f"checks) {before:.1f} s")
projected = scaled * IMAGENET / images + fixed
print(f"whole build: {images / wall:,.1f} img/s over {wall:.1f} s" if finished else
      "# the derived stages did not finish within the limit: projection without them")
print(f"projected ImageNet build: {scaled:.1f} s x {IMAGENET / images:.2f} + {fixed:.1f} s "
      f"fixed = {projected / 60:.1f} min (target <= {TARGET // 60} min: "
      f"{'met' if projected <= TARGET and finished else 'NOT met' if finished else 'open'})")
PY
}

for stage in $STAGES; do
    case $stage in
        machine | data | bench | mapper | build) "stage_$stage" ;;
        *) echo "unknown stage $stage (machine, data, bench, mapper, build)" >&2 && exit 2 ;;
    esac
done
note "done: $STAGES (figures in $OUT)"
