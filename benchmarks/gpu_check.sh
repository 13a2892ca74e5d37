#!/usr/bin/env bash
# Issue 8's GPU checks as one prepared script, sized for one short GPU session (at most
# ~11 min on an H100/H200 after the machine starts: each stage has its own timeout; the
# last stage, the multi-slice and slab 3D brains, is the one to drop when time is short).
# Run from the repository root:
#   OUT=gpu-out [COMMIT=<hash>] bash benchmarks/gpu_check.sh
# It needs jax with CUDA, equinox, optax, h5py and matplotlib (no install: the repo is put
# on PYTHONPATH; the IO libraries are imported lazily). Each scenario runs in its own
# process, so that a compiler crash (seen once: benchmarks/RESULTS.md, "GPU: NVIDIA H200")
# costs one scenario, not the rest. Everything lands under $OUT (8 files):
#   devices.txt   the card, driver, JAX version, commit
#   suite.jsonl   the suite on the GPU: the XLA engine, then simulate's default (kernel="auto")
#   pallas.jsonl  the fused Pallas kernel vs the XLA engine: quick checks, blocks x warps sweep
#   scale.jsonl   50M spins on the one GPU, grouped (default Bloch) and every spin simulated
#   layout.jsonl  periodic step layouts vs the generic scan by twin size
#   precision.jsonl  float32 against float64 on shaped-pulse GREs (prepared, stepped, auto)
#   suite.md      the RESULTS.md table of suite.jsonl
#   log.txt       everything printed
# DRY=1 runs every stage at small sizes on whatever JAX has (a CPU: the Pallas kernel
# interpreted), with longer timeouts: a check, before a device is lent, that no stage of
# this script fails on its own (each prints "<stage>: rc N" when it does). Its numbers
# mean nothing.
set -uo pipefail
OUT=${OUT:-gpu-out}
if [ "${DRY:-0}" = 1 ]; then Q=(--quick); T=10; BIG=200000; else Q=(); T=1; BIG=50000000; fi
# the kernel's A/B stages at the GPU's launch configuration (the interpreter's in a dry run:
# 64-spin programs take 4x as long there)
if [ "${DRY:-0}" = 1 ]; then AB=(); else AB=(--sweep --blocks 64 --warps 1); fi
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec > >(tee -a "$OUT/log.txt") 2>&1
{
  date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  echo "commit: ${COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}"
  python -c "import jax, jaxlib; print('jax', jax.__version__, 'jaxlib', jaxlib.__version__, jax.devices())"
} | tee "$OUT/devices.txt"
suite() {  # one scenario per process; extra arguments go to bench_suite.py
  local s=$1; shift
  timeout $((45 * T)) python -X faulthandler benchmarks/bench_suite.py --no-numpy --repeats 5 --out "$OUT/suite.jsonl" \
    --scenario "$s" "${Q[@]}" "$@" > /dev/null 2> /tmp/suite_err.txt || { echo "suite $s $*: rc $?"; tail -4 /tmp/suite_err.txt; }
}
# 1. the kernel compiled for the GPU against the XLA engine on small cases (correctness first)
timeout $((60 * T)) python benchmarks/bench_pallas.py --quick --repeats 3 --out "$OUT/pallas.jsonl" \
  --scenario koma-column gre-64 koma-brain-motion > /dev/null || echo "pallas quick: rc $?"
# 1b. float32 against float64 (the compensated pulse preparation kept by XLA's GPU compiler?)
timeout $((60 * T)) python benchmarks/bench_precision.py --out "$OUT/precision.jsonl" > /dev/null || echo "precision: rc $?"
# 1c. the kernel's reuse of repeated factors and its prepared pulse (both on by default,
#     unmeasured on a GPU before) against neither, at full size, on the two target cases
timeout $((120 * T)) python benchmarks/bench_pallas.py "${Q[@]}" "${AB[@]}" --reuse yes no \
  --prepare yes no --repeats 5 --out "$OUT/pallas.jsonl" --scenario brain3d-gre koma-brain-spiral > /dev/null \
  || echo "pallas reuse/prepare: rc $?"
# 2. the suite, full sizes, XLA engine; the two target cases first (26k brain spiral, >= 1M spins)
for s in koma-brain-spiral brain3d-gre koma-epi koma-brain-motion koma-brain-suscept koma-column koma-sphere-cs \
         mrilab-spiral gre-64 gre-128 gre-256 gre-sinc-256 mrf-train; do suite "$s" --kernel xla; done
# 3. what simulate's default Bloch(kernel="auto") runs (the fused kernel where it covers the case)
for s in koma-brain-spiral brain3d-gre koma-epi koma-brain-motion mrilab-spiral gre-256 mrf-train; do
  suite "$s" --kernel auto; done
python benchmarks/bench_suite.py --from "$OUT/suite.jsonl" > "$OUT/suite.md" 2>/dev/null || true
# 4. the kernel's launch sweep at full size
timeout $((90 * T)) python benchmarks/bench_pallas.py "${Q[@]}" --sweep --blocks 32 64 128 256 --warps 1 2 4 --repeats 5 \
  --out "$OUT/pallas.jsonl" --scenario koma-brain-spiral brain3d-gre > /dev/null || echo "pallas sweep: rc $?"
# 4b. the kernel's sine/cosine (its reduced polynomials, the default since 2026-12-06 on
#     instruction counts; CUDA's libdevice; the XLA engine's polynomial) and the cost of
#     compensated (Kahan) summation of each step's change
timeout $((90 * T)) python benchmarks/bench_pallas.py "${Q[@]}" --sweep --blocks 64 --warps 1 --sincos reduced libdevice poly \
  --compensate no yes --repeats 5 \
  --out "$OUT/pallas.jsonl" --scenario brain3d-gre koma-brain-spiral > /dev/null || echo "pallas sincos: rc $?"
# 4c. the same on readout-bound and pulse-bound cases
timeout $((120 * T)) python benchmarks/bench_pallas.py "${Q[@]}" "${AB[@]}" --reuse yes no \
  --prepare yes no --repeats 5 --out "$OUT/pallas.jsonl" --scenario koma-epi mrf-train gre-sinc-256 mrilab-spiral brain3d-ms \
  > /dev/null || echo "pallas reuse/prepare 2: rc $?"
# 5. 50M spins: grouped (the default) and every spin simulated
timeout $((60 * T)) python benchmarks/bench_scale.py --one $BIG --repeats 2 >> "$OUT/scale.jsonl" || echo "scale: rc $?"
timeout $((60 * T)) python benchmarks/bench_scale.py --one $BIG --repeats 2 --ungrouped >> "$OUT/scale.jsonl" \
  || echo "scale ungrouped: rc $?"
# 6. periodic step layouts against the generic scan, by twin size
timeout $((30 * T)) python benchmarks/bench_step_layout.py --sizes 64 256 512 --calls 11 > "$OUT/layout.jsonl" \
  || echo "step layouts: rc $?"
# 7. the 3D brain under a 2D multi-slice and a 3D slab GRE (last: the first stage cut when time runs short)
for s in brain3d-ms brain3d-slab; do suite "$s" --kernel auto; done
python benchmarks/bench_suite.py --from "$OUT/suite.jsonl" > "$OUT/suite.md" 2>/dev/null || true
cut -c1-200 "$OUT/suite.md"
echo "done"; date -u
