"""``mritwin simulate``: twin + Pulseq sequence -> raw data, image, preview, summary.

Writes into ``--out DIR``:

- ``raw.mrd``: ISMRMRD raw data with XML header;
- ``image.nii.gz``: the reconstructed magnitude image (NIfTI, scanner/RAS affine);
- ``image.png``: a preview;
- ``dicom/``: a DICOM MR series (with ``--dicom``);
- ``summary.json``: what was done, with timings (written last: its presence means
  success).

Everything is produced in a temporary folder inside ``DIR`` and moved into place only
when every step succeeded. Bad input (missing or unreadable twin or sequence, a
sequence without ADC, an output folder that cannot be written, invalid options) exits
with status 2 and one line on stderr; nothing half-written is left.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import warnings

__all__ = ["add_parser", "run", "UserError"]


class UserError(Exception):
    """Bad input from the user: reported in one line, exit status 2."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``simulate`` sub-command to an ``argparse`` sub-parser collection."""
    p = subparsers.add_parser(
        "simulate",
        help="simulate a twin under a Pulseq sequence; write raw.mrd, image.nii.gz, image.png, summary.json",
        description="Simulate a twin under a Pulseq sequence and write raw data, an image and a summary.",
    )
    p.add_argument("--twin", required=True, metavar="PATH|builtin:NAME",
                   help="twin file (HDF5, from `mritwin twin`) or builtin:NAME for mritwin.phantoms.NAME")
    p.add_argument("--seq", required=True, metavar="FILE.seq", help="Pulseq sequence file")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--coils", type=int, default=None, metavar="N",
                   help="simulate N receive coils on a ring (default: the twin's coils, else 1)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--noise", type=float, default=None, metavar="SIGMA",
                   help="receiver noise: std of one complex sample at the longest dwell [a.u.]")
    g.add_argument("--snr", type=float, default=None,
                   help="receiver noise as the SNR of the peak k-space sample")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--nufft", type=float, default=None, metavar="TOL",
                   help="evaluate ADC windows with the NUFFT readout to relative tolerance TOL "
                        "(e.g. 1e-4; >= 1e-6 in single precision); default: exact windows")
    p.add_argument("--precision", choices=("single", "double"), default="single",
                   help="floating-point precision of the simulation (default single)")
    p.add_argument("--device", choices=("cpu", "gpu"), default=None,
                   help="JAX device (default: JAX's default device)")
    p.add_argument("--b0", type=float, default=None, help="main field [T] (default: the twin's or 3 T)")
    p.add_argument("--dicom", action="store_true", help="also write a DICOM series to DIR/dicom/")
    p.add_argument("--refocusing-threshold", type=float, default=None, metavar="DEG",
                   help="files before Pulseq 1.5: RF pulses of at least DEG degrees refocus, "
                        "smaller ones excite (default: the toolboxes' 90.01)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)
    return p


class _Progress:
    """A minimal progress bar on stderr (silent with ``quiet``)."""

    def __init__(self, quiet: bool, stream=None):
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.t0 = time.perf_counter()

    def stage(self, text: str):
        if not self.quiet:
            self.stream.write(f"[{time.perf_counter() - self.t0:7.1f} s] {text}\n")
            self.stream.flush()

    def bar(self, done: int, total: int, text: str):
        if self.quiet:
            return
        width = 30
        fill = int(width * done / max(total, 1))
        end = "\n" if done >= total else ""
        self.stream.write(f"\r  {text} [{'#' * fill}{' ' * (width - fill)}] {done}/{total} "
                          f"{time.perf_counter() - self.t0:6.1f} s{end}")
        self.stream.flush()


def _load_twin(spec: str):
    import mritwin as mt  # noqa: PLC0415

    if spec.startswith("builtin:"):
        name = spec.split(":", 1)[1]
        fn = getattr(mt.phantoms, name, None)
        # the phantom builders that return twins (the *_labels ones return segmentations)
        public = [n for n in getattr(mt.phantoms, "__all__", [])
                  if callable(getattr(mt.phantoms, n, None)) and not n.endswith("_labels")]
        if not name or not callable(fn) or name.startswith("_") or name.endswith("_labels"):
            raise UserError(f"unknown built-in twin {name!r}; available: {', '.join(public) or 'none'}")
        return fn()
    if not os.path.exists(spec):
        raise UserError(f"twin file not found: {spec}")
    if not os.path.isfile(spec):
        raise UserError(f"twin path is not a file: {spec}")
    try:
        return mt.load_twin(spec)
    except (ValueError, OSError, KeyError, TypeError) as e:
        raise UserError(f"cannot read twin {spec}: {_one_line(e)}") from e


def _load_seq(path: str, refocusing_threshold_deg: float | None = None):
    import mritwin as mt  # noqa: PLC0415

    if not os.path.exists(path):
        raise UserError(f"sequence file not found: {path}")
    if not os.path.isfile(path):
        raise UserError(f"sequence path is not a file: {path}")
    try:
        seq = mt.read_seq(path, refocusing_threshold_deg=refocusing_threshold_deg)
    except (ValueError, OSError, KeyError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read sequence {path}: {_one_line(e)}") from e
    if seq.n_adc_samples == 0:
        raise UserError(f"sequence {path} has no ADC events: nothing to simulate or reconstruct")
    return seq


def _prepare_out(out: str) -> str:
    """Create ``out`` if needed and return a fresh temporary folder inside it."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"output path exists and is not a folder: {out}")
    try:
        os.makedirs(out, exist_ok=True)
        return tempfile.mkdtemp(prefix=".mritwin-partial-", dir=out)
    except OSError as e:
        raise UserError(f"cannot write to output folder {out}: {e.strerror or _one_line(e)}") from e


def _one_line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return s[0] if s else type(e).__name__


def _simulate_chunked(twin, seq, *, coils, dtype, progress: _Progress, max_chunks: int = 10,
                      min_spins: int = 8192, granule: int = 4096, method=None):
    """Simulate in equal spin chunks (spins are independent: signals add), with a progress bar.

    The last chunk is padded with spins of zero proton density so that every chunk has
    the same shape and the simulation compiles once.
    """
    import jax.numpy as jnp  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    import mritwin as mt  # noqa: PLC0415

    n = twin.n_spins
    n_chunks = 1 if n <= min_spins else min(max_chunks, -(-n // granule))
    if n_chunks == 1:
        progress.bar(0, 1, "simulate")
        sig = mt.simulate(twin, seq, coils=coils, dtype=dtype, method=method)
        sig.samples.block_until_ready()
        progress.bar(1, 1, "simulate")
        return sig
    chunk = -(-n // n_chunks)
    chunk = -(-chunk // granule) * granule
    n_chunks = -(-n // chunk)
    total = None
    sig = None
    progress.bar(0, n_chunks, "simulate")
    for i in range(n_chunks):
        idx = np.arange(i * chunk, (i + 1) * chunk)
        real = idx < n
        idx = np.where(real, idx, 0)
        part = twin[idx]
        part = part.replace(pd=jnp.where(jnp.asarray(real), part.pd, 0.0))
        c = None if coils is None else jnp.asarray(coils)[:, idx]
        sig = mt.simulate(part, seq, coils=c, dtype=dtype, method=method)
        total = sig.samples if total is None else total + sig.samples
        total.block_until_ready()
        progress.bar(i + 1, n_chunks, "simulate")
    return mt.Signal(samples=total, kspace=sig.kspace, time=sig.time)


def run(args) -> int:
    """Run ``mritwin simulate`` with parsed ``args``; returns the exit status."""
    try:
        return _run(args)
    except UserError as e:
        print(f"mritwin simulate: error: {e}", file=sys.stderr)
        return 2
    except NotImplementedError as e:
        print(f"mritwin simulate: not available in this version: {_one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("mritwin simulate: interrupted", file=sys.stderr)
        return 130


def _run(args) -> int:
    timings: dict[str, float] = {}
    progress = _Progress(args.quiet)
    if args.coils is not None and args.coils < 1:
        raise UserError(f"--coils must be >= 1, got {args.coils}")
    if args.noise is not None and not args.noise >= 0:
        raise UserError(f"--noise must be >= 0, got {args.noise}")
    if args.snr is not None and not args.snr > 0:
        raise UserError(f"--snr must be > 0, got {args.snr}")
    if args.b0 is not None and not args.b0 > 0:
        raise UserError(f"--b0 must be > 0 [T], got {args.b0}")
    if args.nufft is not None:
        floor = 1e-6 if args.precision == "single" else 1e-14
        if not floor <= args.nufft < 1:
            raise UserError(f"--nufft tolerance must be in [{floor:g}, 1) in {args.precision} precision, "
                            f"got {args.nufft:g}")

    import jax  # noqa: PLC0415

    if args.precision == "double":
        jax.config.update("jax_enable_x64", True)  # the CLI is a program: it may configure JAX
    device = None
    if args.device is not None:
        try:
            device = jax.devices(args.device)[0]
        except RuntimeError as e:
            raise UserError(f"no {args.device} device available to JAX ({_one_line(e)})") from e

    # validate inputs before any work
    # validate every input before printing anything, so bad input gives exactly one line
    t = time.perf_counter()
    seq = _load_seq(args.seq, getattr(args, "refocusing_threshold", None))
    twin = _load_twin(args.twin)
    timings["load"] = time.perf_counter() - t
    tmp = _prepare_out(args.out)
    progress.stage(f"read {args.seq} ({seq.n_blocks} blocks) and twin {args.twin} ({twin.n_spins} spins)")
    try:
        with jax.default_device(device) if device is not None else _nullcontext():
            result = _pipeline(args, seq, twin, tmp, progress, timings)
        # success: move files into place, summary last
        names = sorted(os.listdir(tmp), key=lambda n: n == "summary.json")
        for name in names:
            dst = os.path.join(args.out, name)
            if os.path.isdir(dst) and not os.path.islink(dst):
                shutil.rmtree(dst)
            os.replace(os.path.join(tmp, name), dst)
    except OSError as e:
        raise UserError(f"cannot write output to {args.out}: {e.strerror or _one_line(e)}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    progress.stage(f"done: {args.out} ({result['image']['shape']} image, {sum(timings.values()):.1f} s)")
    return 0


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


def _pipeline(args, seq, twin, tmp, progress, timings) -> dict:
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    import mritwin as mt  # noqa: PLC0415
    from mritwin.io.images import write_dicom, write_nifti, write_png  # noqa: PLC0415
    from mritwin.io.mrd import write_mrd  # noqa: PLC0415
    from mritwin.recon import reconstruct  # noqa: PLC0415
    from mritwin.signal.coils import ring_coil_sensitivities  # noqa: PLC0415
    from mritwin.signal.noise import add_noise, sample_dwell  # noqa: PLC0415

    dtype = jnp.float64 if args.precision == "double" else jnp.float32
    coils = None
    if args.coils is not None and args.coils > 1:
        coils = ring_coil_sensitivities(np.asarray(twin.position), args.coils)
    elif args.coils == 1:
        coils = np.ones((1, twin.n_spins), np.complex128)
    n_coils = coils.shape[0] if coils is not None else twin.n_coils

    t = time.perf_counter()
    progress.stage(f"simulating {twin.n_spins} spins, {seq.n_blocks} blocks, {seq.n_adc_samples} ADC samples")
    notes: list[str] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            method = None if args.nufft is None else mt.Bloch(readout=mt.NUFFTReadout(args.nufft))
            sig = _simulate_chunked(twin, seq, coils=coils, dtype=dtype, progress=progress, method=method)
        for w in caught:
            msg = _one_line(w.message)
            if msg not in notes:
                notes.append(msg)
                progress.stage(f"note: {msg}")
    except (ValueError, TypeError) as e:
        raise UserError(f"cannot simulate {args.seq} on twin {args.twin}: {_one_line(e)}") from e
    timings["simulate"] = time.perf_counter() - t

    noise = None
    if args.noise is not None or args.snr is not None:
        t = time.perf_counter()
        sig = add_noise(sig, key=jax.random.key(args.seed), sigma=args.noise, snr=args.snr,
                        dwell=sample_dwell(seq))
        noise = {"sigma": args.noise, "snr": args.snr, "reference": "peak", "seed": args.seed,
                 "bandwidth_scaling": "sigma * sqrt(longest_dwell / dwell)"}
        timings["noise"] = time.perf_counter() - t

    t = time.perf_counter()
    progress.stage("reconstructing")
    b0 = args.b0 if args.b0 is not None else 3.0
    try:
        img = reconstruct(sig, seq, b0=b0)
    except ValueError as e:
        raise UserError(f"cannot reconstruct an image from {args.seq}: {_one_line(e)}") from e
    jax.block_until_ready(img.data)
    timings["reconstruct"] = time.perf_counter() - t

    t = time.perf_counter()
    progress.stage("writing raw.mrd, image.nii.gz, image.png")
    files = []
    write_mrd(os.path.join(tmp, "raw.mrd"), sig, seq, image=img, b0=b0,
              protocol_name=os.path.basename(args.seq))
    files.append("raw.mrd")
    write_nifti(img, os.path.join(tmp, "image.nii.gz"))
    files.append("image.nii.gz")
    write_png(img, os.path.join(tmp, "image.png"))
    files.append("image.png")
    if args.dicom:
        n = len(write_dicom(img, os.path.join(tmp, "dicom"), series_description=os.path.basename(args.seq)))
        files.append(f"dicom/ ({n} files)")
    timings["write"] = time.perf_counter() - t

    summary = {
        "mritwin_version": mt.__version__,
        "command": "simulate",
        "twin": {"source": args.twin, "n_spins": twin.n_spins},
        "sequence": {"file": args.seq, "n_blocks": seq.n_blocks, "duration_s": seq.duration,
                     "n_adc_samples": seq.n_adc_samples},
        "coils": int(n_coils),
        "noise": noise,
        "precision": args.precision,
        "device": str(jax.devices()[0]) if args.device is None else args.device,
        "b0_T": b0,
        "image": {"shape": list(img.shape), "dims": list(img.dims),
                  "voxel_size_mm": [round(float(v) * 1e3, 6) for v in img.voxel_size],
                  "te_s": img.te, "tr_s": img.tr,
                  "flip_angle_deg": None if img.flip_angle is None else float(np.degrees(img.flip_angle)),
                  "reconstruction": img.description},
        "notes": notes,
        "files": files + ["summary.json"],
        "timings_s": {k: round(v, 4) for k, v in timings.items()},
    }
    with open(os.path.join(tmp, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2, default=str)
    return summary
