#!/usr/bin/env bash
# One prepared GPU session (docs/benchmarks.md, "GPU"): the benchmark on the GPU, then the whole
# default DAG plus cnn_fast through Snakemake on the GPU, then the torch.compile variants.
# Each stage has its own time limit and a failure does not stop the next one; everything lands in
# $OUT (session.log, machine.txt, benchmark*.json, benchmark.md, results.tgz).
#
#   OUT=/tmp/gpu bash docs/gpu_session.sh            # on a machine with a CUDA GPU
#   QUICK=1 DEVICE=cpu OUT=/tmp/gpu bash docs/gpu_session.sh   # a dry run of the script itself
#
# Needs: python3 with torch, torchvision, onnx, onnxruntime, matplotlib, numpy, pyyaml, scipy,
# jsonschema; Snakemake
# (installed from wheels in .whl/ when that folder exists: the lent GPU machines have no network);
# the four Fashion-MNIST .gz files in resources/fashion-mnist/.
set -u
OUT=${OUT:-/tmp/gpu-session}
DEVICE=${DEVICE:-cuda}
PY=${PY:-python3}
mkdir -p "$OUT" /tmp/gpu-session-work
exec > >(tee -a "$OUT/session.log") 2>&1
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/workflow${PYTHONPATH:+:$PYTHONPATH}
stage() { echo; echo "=== $(date -u +%H:%M:%S) $*"; }

stage machine
{
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
    nproc
    "$PY" -c "import torch, torchvision, onnxruntime, snakemake; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'onnxruntime', onnxruntime.__version__, onnxruntime.get_available_providers(), 'snakemake', snakemake.__version__, 'cuda', torch.cuda.is_available())"
} | tee "$OUT/machine.txt"

if [ -n "${QUICK:-}" ]; then
    BENCH=(--steps 5 --warmup 2 --repeats 1 --latency-repeats 5 --workloads cnn)
    TRAIN_CONFIG=tests/configs/tiny.yaml
    LIMITS=(120 600 60)
else
    BENCH=(--steps 300 --warmup 30 --repeats 3 --latency-repeats 300)
    TRAIN_CONFIG=/tmp/gpu-session-work/all.yaml
    LIMITS=(150 280 75)
fi
# one seed each: the session is too short for config.yaml's 5 seeds of the 500-image recipes
cat >/tmp/gpu-session-work/all.yaml <<'YAML'
run_experiments: [cnn_baseline, cnn_small_augmented, cnn_small_plain, resnet18_finetune, cnn_fast]
experiments:
  cnn_small_augmented: {seeds: [42]}
  cnn_small_plain: {seeds: [42]}
YAML
echo "engine: {device: $DEVICE}" >/tmp/gpu-session-work/device.yaml

stage prepare data
"$PY" -m fashion_cnn prepare-data --raw-folder resources/fashion-mnist \
    --output results/data/fashion_mnist.npz --log /tmp/gpu-session-work/prepare.log

stage benchmark: chapter loop vs engine, eager vs ONNX Runtime
timeout "${LIMITS[0]}" "$PY" -m fashion_cnn benchmark --device "$DEVICE" "${BENCH[@]}" \
    --switches fp32 channels_last bf16 channels_last+bf16 \
    --output-json "$OUT/benchmark.json" --output-markdown "$OUT/benchmark.md"
echo "benchmark rc=$?"

stage workflow: every experiment through Snakemake, one training job at a time
start=$(date +%s)
timeout "${LIMITS[1]}" "$PY" -m snakemake --cores "$(nproc)" --scheduler greedy \
    --set-threads train_model="$(nproc)" --configfile config.yaml "$TRAIN_CONFIG" /tmp/gpu-session-work/device.yaml
echo "workflow rc=$? wall=$(($(date +%s) - start)) s"
tar czf "$OUT/results.tgz" --exclude='*.pt' --exclude='*.onnx' --exclude='*.npz' results 2>/dev/null

stage benchmark: torch.compile, one workload at a time
for workload in cnn resnet18; do
    timeout "${LIMITS[2]}" "$PY" -m fashion_cnn benchmark --device "$DEVICE" "${BENCH[@]}" \
        --repeats 1 --workloads "$workload" --skip-inference \
        --switches channels_last+bf16 channels_last+bf16+compile \
        --output-json "$OUT/benchmark_compile_$workload.json" --output-markdown "/tmp/gpu-session-work/compile_$workload.md"
    echo "compile benchmark $workload rc=$?"
done
stage done
