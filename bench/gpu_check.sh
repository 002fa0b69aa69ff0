#!/usr/bin/env bash
# The GPU check of issue 4 in one go (about 5 minutes on an H100, at most 7): training throughput of
# train_vit.py's loop against ../shared/bench/peer_recipe.py, on the same 288x288 TIF cells, one run.
#
#   bash bench/gpu_check.sh PEER_RECIPE [IMAGES_DIR]
#
# PEER_RECIPE: a copy of ../shared/bench/peer_recipe.py inside the working tree (../shared does not
# travel to the GPU machine). IMAGES_DIR: class folders of images; default: the synthetic MLL23 sample
# (TIF, 288x288), drawn here in parallel, about 4,300 cells. Nothing is installed or downloaded: it needs
# torch with CUDA, transformers, accelerate, torchvision (for the peer), numpy, scipy and pillow.
# Results: printed, and as JSON in $OUT (or /tmp/gpu-check). GPU_CHECK_TINY=1: a CPU smoke test in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PEER=${1:?usage: bash bench/gpu_check.sh PEER_RECIPE [IMAGES_DIR]}
IMAGES=${2:-}
RESULTS=${OUT:-/tmp/gpu-check}
WORK=$(mktemp -d /tmp/gpu-check-work.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$RESULTS"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

if [[ ${GPU_CHECK_TINY:-0} == 1 ]]; then
  PER_DRAW=2; DRAWS=2; BENCH=(--model tiny --batch-size 8 --steps 3 --workers 0,2 --mode train)
else
  PER_DRAW=15; DRAWS=16; BENCH=(--model base --batch-size 128 --steps 30 --workers 0,8,16)
fi

python3 - <<'EOF'
import platform, torch, transformers, accelerate
print("python", platform.python_version(), "torch", torch.__version__, "transformers", transformers.__version__,
      "accelerate", accelerate.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else "(no GPU)", flush=True)
EOF

if [[ -z $IMAGES ]]; then
  IMAGES=$WORK/cells
  # DRAWS samples with different seeds, drawn side by side: (18 classes x PER_DRAW) cells each.
  python3 - "$IMAGES" "$PER_DRAW" "$DRAWS" <<'EOF'
import sys, time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from hema.synthetic.painter import draw_sample

root, per_class, draws = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
start = time.perf_counter()
with ProcessPoolExecutor() as pool:
    list(pool.map(draw_sample, [root / f"draw{s}" for s in range(draws)], [per_class] * draws, range(draws)))
n = sum(1 for _ in root.rglob("*.TIF"))
print(f"drew {n} synthetic 288x288 TIF cells in {time.perf_counter() - start:.0f} s", flush=True)
EOF
fi

# 1. The ratios: peer GPU-only ceiling, peer recipe at 0/8/16 workers, our loop compiled (bf16, fused AdamW).
timeout 420 python3 bench/train_bench.py --images "$IMAGES" --peer "$PEER" "${BENCH[@]}" \
  --json "$RESULTS/train_bench.json"

# 2. train_vit.py itself on the GPU (compiled step, padded evaluation, checkpoints), when datasets and
#    evaluate are importable there (carry their wheels: datasets, dill, multiprocess, evaluate).
if python3 -c "import datasets, evaluate" 2>/dev/null; then
  HEMA_CACHE=$WORK/cache timeout 150 python3 train_vit.py --max-steps 40 --eval-every 20 --report-to none \
    --output-dir "$WORK/demo-gpu" 2>&1 | grep -v "it/s\]" | tail -6 || echo "train_vit.py on the GPU failed"
  cp "$WORK/demo-gpu/all_results.json" "$RESULTS/demo_gpu_all_results.json" 2>/dev/null || true
else
  echo "skipped train_vit.py on the GPU: datasets/evaluate are not installed here"
fi

# 3. What compiling buys, and CUDA graphs on top, while time is left (each about a minute).
if (( SECONDS < 300 )); then
  timeout 120 python3 bench/train_bench.py --images "$IMAGES" --peer "$PEER" "${BENCH[@]}" --skip-peer \
    --compile no --json "$RESULTS/train_bench_eager.json" || echo "eager variant failed or timed out"
fi
if (( SECONDS < 300 )); then
  timeout 150 python3 bench/train_bench.py --images "$IMAGES" --peer "$PEER" "${BENCH[@]}" --skip-peer \
    --compile yes --compile-mode reduce-overhead --json "$RESULTS/train_bench_cudagraphs.json" \
    || echo "CUDA graphs variant failed or timed out"
fi
echo "gpu_check done in ${SECONDS} s; results in $RESULTS"
