#!/usr/bin/env bash
# One prepared GPU session (docs/benchmarks.md, "GPU"): the CUDA-graph tests on the GPU, the
# benchmark (chapter loop vs engine with and without the training step as one CUDA graph), then
# the whole default DAG through Snakemake on the GPU, timed. Each stage has its own time limit and
# a failure does not stop the next one; everything lands in $OUT (session.log, machine.txt,
# benchmark_*.json/md, results.tgz).
#
#   OUT=/tmp/gpu bash docs/gpu_session.sh            # on a machine with a CUDA GPU
#   QUICK=1 DEVICE=cpu OUT=/tmp/gpu bash docs/gpu_session.sh   # a dry run of the script itself
#
# Needs: python3 with torch, torchvision, onnx, onnxruntime, matplotlib, numpy, pyyaml, scipy,
# jsonschema, pytest; Snakemake (without pulp: the greedy scheduler; installed from wheels in .whl/ when that folder exists: the lent
# GPU machines have no network); the four Fashion-MNIST .gz files in resources/fashion-mnist/.
# STAGES (default "tests bench dag") picks stages; "ort" times ONNX Runtime (its CUDA provider
# when onnxruntime-gpu is installed).
set -u
OUT=${OUT:-/tmp/gpu-session}
DEVICE=${DEVICE:-cuda}
PY=${PY:-python3}
STAGES=${STAGES:-tests bench dag}
mkdir -p "$OUT" /tmp/gpu-session-work
exec > >(tee -a "$OUT/session.log") 2>&1
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/workflow${PYTHONPATH:+:$PYTHONPATH}
stage() { echo; echo "=== $(date -u +%H:%M:%S) $*"; }
wants() { [[ " $STAGES " == *" $1 "* ]]; }

stage machine
{
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
    nproc
    grep -m1 "model name" /proc/cpuinfo
    "$PY" -c "import torch, torchvision, onnxruntime, snakemake; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'onnxruntime', onnxruntime.__version__, onnxruntime.get_available_providers(), 'snakemake', snakemake.__version__, 'cuda', torch.cuda.is_available())"
} | tee "$OUT/machine.txt"

if [ -n "${QUICK:-}" ]; then
    STEPS=(--steps 5 --warmup 2 --repeats 1)
    SWITCHES=(fp32 channels_last)
    DAG_CONFIG=(--configfile config.yaml tests/configs/tiny.yaml)
    LIMITS=(300 120 600 60)
else
    STEPS=(--steps 200 --warmup 20 --repeats 3)
    SWITCHES=(channels_last cuda_graph channels_last+cuda_graph)
    DAG_CONFIG=(--configfile config.yaml)
    LIMITS=(60 100 300 60)
fi
echo "engine: {device: $DEVICE}" >/tmp/gpu-session-work/device.yaml

stage prepare data
"$PY" -m fashion_cnn prepare-data --raw-folder resources/fashion-mnist \
    --output results/data/fashion_mnist.npz --log /tmp/gpu-session-work/prepare.log

if wants tests; then
    stage tests: the CUDA-graph step against the eager step, on the GPU
    # the tests read the real files where Debian's dataset-fashion-mnist puts them
    mkdir -p /usr/share/datasets/fashion-mnist && cp -n resources/fashion-mnist/*.gz /usr/share/datasets/fashion-mnist/
    timeout "${LIMITS[0]}" "$PY" -m pytest -q -p no:cacheprovider tests/test_graphs.py -rs
    echo "tests rc=$?"
fi

if wants bench; then
    stage "benchmark: chapter loop vs engine, with and without a CUDA graph, batch 64"
    timeout "${LIMITS[1]}" "$PY" -m fashion_cnn benchmark --device "$DEVICE" "${STEPS[@]}" \
        --workloads cnn cnn_augmented resnet18 --skip-inference \
        --switches "${SWITCHES[@]}" \
        --output-json "$OUT/benchmark_graph.json" --output-markdown "$OUT/benchmark_graph.md"
    echo "benchmark rc=$?"
fi

if wants dag; then
    stage "workflow: the default DAG through Snakemake (engine.device auto, cuda_graph auto)"
    start=$(date +%s)
    timeout "${LIMITS[2]}" "$PY" -m snakemake --cores "$(nproc)" --scheduler greedy "${DAG_CONFIG[@]}"
    echo "workflow rc=$? wall=$(($(date +%s) - start)) s"
    grep -h "cuda_graph\|CUDA graph\|finished" results/logs/train_model/*.log results/logs/train_model/*/*.log 2>/dev/null | sort | uniq -c | sort -rn | head -20
    cat results/summary.md 2>/dev/null
    tar czf "$OUT/results.tgz" --exclude='*.pt' --exclude='*.onnx' --exclude='*.npz' results 2>/dev/null
fi

if wants ort; then
    # onnxruntime-gpu unpacked in /tmp/ortsite (it is larger than one transfer to the lent machine)
    [ -d /tmp/ortsite ] && export PYTHONPATH=/tmp/ortsite:$PYTHONPATH
    stage "inference: PyTorch eager vs ONNX Runtime ($("$PY" -c 'import onnxruntime as o; print(o.get_available_providers())'))"
    timeout "${LIMITS[3]}" "$PY" -m fashion_cnn benchmark --device "$DEVICE" --steps 1 --warmup 0 \
        --repeats 1 --workloads cnn --switches channels_last --latency-repeats 300 \
        --output-json "$OUT/benchmark_ort.json" --output-markdown "$OUT/benchmark_ort.md"
    echo "ort benchmark rc=$?"
fi
stage done
