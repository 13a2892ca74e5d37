"""The fused Pallas kernel compiled for an NVIDIA GPU without one: registers, spills and
machine code (JSON lines).

Lowers `simulate`'s GPU kernels (the stepping kernel and, with prepared pulses, the
kernel that prepares them) to Triton IR with JAX on this machine, compiles that IR with
the ``triton`` package for an sm_XX target (its LLVM and bundled ``ptxas``) and reads the
cubin with the bundled ``cuobjdump``: per kernel and launch configuration, the registers
per thread, the stack and local (spill) bytes, the number of SASS instructions and of a
few telling kinds (MUFU: special functions; SHFL: warp shuffles of the per-sample sum;
LDG/STG: global loads and stores; LDL/STL: spill traffic). ``--sass DIR`` also writes
each kernel's SASS for reading.

What it is and is not: a static view of code that a GPU run would execute -- the
occupancy a register count allows (65 536 registers per SM on sm_90: at 86 registers, 23
warps of 32 threads) and the instructions of a step's path. It is not a timing, and it
is not exactly what jaxlib's CUDA plugin builds: the GPU runs jaxlib's own Triton and the
plugin's ``ptxas``. It reads Pallas's Triton module through a private JAX function
(``jax._src.pallas.triton``); another JAX version may move it (the script then says so).

Needs ``pip install triton`` (Linux x86_64; not a dependency of mritwin). Example:
``python benchmarks/kernel_sass.py --configs 64x1 128x1 --coils 1 4``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import mritwin as mt
from mritwin.benchmarking import emit_record
from mritwin.simulate import pallas_kernel as pk
from mritwin.simulate.kernels import Spins

KINDS = ("MUFU", "SHFL", "LDG", "STG", "LDL", "STL", "BRA", "BAR")


def _triton():
    try:
        import triton
        from triton.backends.compiler import GPUTarget
    except ImportError as e:
        raise SystemExit(f"kernel_sass.py needs the triton package (pip install triton): {e}") from None
    tools = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    if not (tools / "cuobjdump").exists():
        raise SystemExit(f"kernel_sass.py: no cuobjdump in {tools} (this triton build has no NVIDIA tools)")
    return triton, GPUTarget, tools


def _triton_modules(fn, *args):
    """The Triton modules (text) of the Pallas kernels in ``fn(*args)``, lowered for CUDA."""
    try:
        from jax._src.pallas.triton import pallas_call_registration as reg
        orig = reg.lowering.lower_jaxpr_to_triton_module
    except (ImportError, AttributeError) as e:
        raise SystemExit(f"kernel_sass.py: this JAX ({jax.__version__}) has no "
                         f"pallas_call_registration.lowering.lower_jaxpr_to_triton_module to read: {e}") from None
    modules = []

    def keep(*a, **k):
        out = orig(*a, **k)
        modules.append(str(out.module))
        return out

    reg.lowering.lower_jaxpr_to_triton_module = keep
    try:
        jax.jit(fn).trace(*args).lower(lowering_platforms=("cuda",))
    finally:
        reg.lowering.lower_jaxpr_to_triton_module = orig
    return modules


def _kernel_inputs(prepare: bool, n_coils: int, n_spins: int):
    """A small slice-selective GRE's kernel steps (a prepared sinc with ``prepare``) and
    random spins: the kernels' code depends on the flags and coil count, not on values."""
    scanner = mt.Scanner()
    seq = mt.sequences.gre(scanner=scanner, fov=0.2, matrix=8, flip_angle_deg=15, slice_thickness=5e-3)
    steps, pulse, _, n_slots = pk.kernel_steps(mt.discretize(seq, scanner, windows=False), prepare=prepare)
    rng = np.random.default_rng(0)

    def f(a):
        return jnp.asarray(a, jnp.float32)

    cre = cim = None
    if n_coils:
        cre, cim = f(rng.normal(size=(n_coils, n_spins))), f(rng.normal(size=(n_coils, n_spins)))
    spins = Spins(x=f(rng.uniform(-0.1, 0.1, n_spins)), y=f(rng.uniform(-0.1, 0.1, n_spins)),
                  z=f(rng.uniform(-0.01, 0.01, n_spins)), pd=f(np.ones(n_spins)), r1=f(np.ones(n_spins)),
                  r2=f(np.full(n_spins, 10.0)), df=f(np.zeros(n_spins)), b1=f(np.ones(n_spins)), coil_re=cre, coil_im=cim)
    return spins, steps, pulse, n_slots


def _resources(tools: Path, cubin: Path) -> dict:
    out = subprocess.run([str(tools / "cuobjdump"), "--dump-resource-usage", str(cubin)], capture_output=True,
                         text=True, check=True).stdout
    got = dict(re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", out))
    return {"registers": int(got.get("REG", -1)), "stack_bytes": int(got.get("STACK", -1)),
            "local_bytes": int(got.get("LOCAL", -1)), "shared_bytes": int(got.get("SHARED", -1))}


def _sass(tools: Path, cubin: Path) -> list[tuple[str, str]]:
    """The kernel's instructions: (address, text) pairs."""
    out = subprocess.run([str(tools / "cuobjdump"), "-sass", str(cubin)], capture_output=True, text=True,
                         check=True).stdout
    return [(m.group(1), m.group(2).strip()) for m in re.finditer(r"^\s+/\*([0-9a-f]{4,})\*/\s+([^;]*);", out, re.M)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=[f"{pk.GPU_BLOCK}x{pk.GPU_WARPS}"], metavar="BxW",
                   help=f"spins per program x warps (default {pk.GPU_BLOCK}x{pk.GPU_WARPS}: simulate's GPU launch)")
    p.add_argument("--coils", type=int, nargs="+", default=[1], help="receive coils (0: none; default 1)")
    p.add_argument("--prepare", nargs="+", choices=["yes", "no"], default=["yes"],
                   help="a prepared pulse (yes: both kernels) and/or stepped pulses only (no)")
    p.add_argument("--reuse", nargs="+", choices=["yes", "no"], default=["yes"], help="the kernel's reuse option")
    p.add_argument("--sincos", nargs="+", choices=pk.SINCOS, default=[pk.DEFAULT_SINCOS])
    p.add_argument("--arch", type=int, default=90, help="compute capability x 10 (default 90: H100/H200)")
    p.add_argument("--sass", metavar="DIR", help="also write each kernel's SASS here")
    p.add_argument("--out", help="also append the JSON lines to this file")
    a = p.parse_args(argv)
    triton, GPUTarget, tools = _triton()
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # (Triton's default, said out loud)
    try:
        configs = [tuple(int(v) for v in c.lower().split("x")) for c in a.configs]
    except ValueError:
        print(f"kernel_sass.py: --configs takes BLOCKxWARPS, e.g. 64x1; got {a.configs}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        for block, warps in configs:
            for n_coils in a.coils:
                for prepare in (v == "yes" for v in a.prepare):
                    for reuse in (v == "yes" for v in a.reuse):
                        for sincos in a.sincos:
                            spins, steps, pulse, n_slots = _kernel_inputs(prepare, n_coils, 4 * block)
                            mods = _triton_modules(
                                lambda sp, st, pu, block=block, warps=warps, reuse=reuse, sincos=sincos, n_slots=n_slots:
                                pk._pallas_forward(sp, st, pu, n_slots=n_slots, block=block, interpret=False,
                                                   num_warps=warps, sincos=sincos, reuse=reuse),
                                spins, steps, pulse)
                            for text in mods:
                                name = re.search(r"module @(\w+)", text).group(1)
                                # the preparing kernel runs one spin per thread (`_prepare_maps`)
                                w = block // 32 if name == "mritwin_prepare_pulses" else warps
                                src = Path(tmp) / f"{name}.ttir"
                                src.write_text(text)
                                k = triton.compile(str(src), target=GPUTarget("cuda", a.arch, 32),
                                                   options={"num_warps": w, "num_stages": 1})
                                cubin = Path(tmp) / f"{name}.cubin"
                                cubin.write_bytes(k.asm["cubin"])
                                sass = _sass(tools, cubin)
                                ops = [t.split()[1] if t.startswith("@") else t.split()[0] for _, t in sass]
                                tag = f"{name}-b{block}w{w}-c{n_coils}-{'prep' if prepare else 'step'}" \
                                      f"-{'reuse' if reuse else 'fresh'}-{sincos}"
                                if a.sass:
                                    Path(a.sass).mkdir(parents=True, exist_ok=True)
                                    (Path(a.sass) / f"{tag}.sass").write_text("".join(f"{at} {t}\n" for at, t in sass))
                                emit_record({"kernel": name, "block": block, "num_warps": w, "coils": n_coils,
                                             "prepare": prepare, "reuse": reuse, "sincos": sincos,
                                             "arch": f"sm_{a.arch}", **_resources(tools, cubin),
                                             "sass_instructions": len(sass),
                                             **{f"n_{kind.lower()}": sum(o.split(".")[0] == kind for o in ops)
                                                for kind in KINDS},
                                             "triton": triton.__version__, "jax": jax.__version__}, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
