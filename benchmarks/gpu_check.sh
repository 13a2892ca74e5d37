#!/usr/bin/env bash
# Issue 8's GPU checks as one prepared script, sized for one short GPU session (at most 9.75 min
# on an H100/H200 after the machine starts: each stage has its own timeout). Run from the repository root:
#   OUT=gpu-out [COMMIT=<hash>] bash benchmarks/gpu_check.sh
# It needs jax with CUDA, equinox, optax, h5py and matplotlib (no install: the repo is put
# on PYTHONPATH; the IO libraries are imported lazily). Everything lands under $OUT:
#   devices.txt   the card, driver, JAX version, commit
#   suite.jsonl   the benchmark suite on the GPU (XLA engine; `--markdown` table in suite.md)
#   pallas.jsonl  the fused Pallas kernel vs the XLA engine, blocks x warps sweep
#   scale.jsonl   50M spins on the one GPU (issue 8: >= 50M on one 80 GB GPU)
#   layout.jsonl  periodic step layouts vs the generic scan by twin size (sets the size gate)
#   log.txt       everything printed
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec > >(tee -a "$OUT/log.txt") 2>&1
{
  date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  echo "commit: ${COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}"
  python -c "import jax, jaxlib; print('jax', jax.__version__, 'jaxlib', jaxlib.__version__, jax.devices())"
} | tee "$OUT/devices.txt"
# 1. the kernel compiled for the GPU against the XLA engine on small cases (correctness first)
timeout 100 python benchmarks/bench_pallas.py --quick --repeats 3 --out "$OUT/pallas.jsonl" \
  --scenario koma-column gre-64 koma-brain-motion koma-brain-spiral || echo "pallas quick: failed ($?)"
# 2. the suite on the GPU, full sizes, the XLA engine (no NumPy reference: it is a CPU number);
#    the two target cases first (26k brain spiral, >= 1M spins)
timeout 220 python benchmarks/bench_suite.py --no-numpy --repeats 5 --out "$OUT/suite.jsonl" \
  --scenario koma-brain-spiral brain3d-gre koma-column koma-sphere-cs koma-brain-suscept koma-brain-motion koma-epi \
  mrilab-spiral gre-64 gre-128 gre-256 mrf-train || echo "suite: failed or timed out ($?)"
python benchmarks/bench_suite.py --from "$OUT/suite.jsonl" > "$OUT/suite.md" 2>/dev/null || true
# 3. the kernel sweep at full size
timeout 100 python benchmarks/bench_pallas.py --sweep --repeats 5 --out "$OUT/pallas.jsonl" \
  --scenario koma-brain-spiral brain3d-gre koma-epi || echo "pallas sweep: failed or timed out ($?)"
# 4. 50M spins on the GPU, in this process (no child for `timeout` to miss; the twin is
#    built on the host: ~300 B/spin, 15 GB)
timeout 120 python benchmarks/bench_scale.py --one 50000000 --repeats 2 > "$OUT/scale.jsonl" \
  || echo "scale: failed or timed out ($?)"
# 5. periodic step layouts against the generic scan, by twin size
timeout 45 python benchmarks/bench_step_layout.py --sizes 64 128 256 512 --calls 11 > "$OUT/layout.jsonl" \
  || echo "step layouts: failed or timed out ($?)"
echo "done"; date -u
