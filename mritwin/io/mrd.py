"""ISMRMRD / MRD raw data files (HDF5) with a valid XML header.

Needs the optional ``ismrmrd`` package (``pip install mritwin[io]`` or
``pip install ismrmrd``).

What is written (one acquisition per ADC event, in sequence order):

- ``data``: (n_coils, n_samples) complex64 samples, in `Signal.samples` units.
- ``traj``: (n_samples, 3) k-space position in cycles per matrix, ``k · FOV / N``
  (range [-0.5, 0.5) for a fully covered grid, the Gadgetron convention), or
  ``k`` in 1/m when the FOV is unknown; the header's ``trajectoryDescription``
  says which.
- header ``idx``: encoding counters from the Pulseq labels (LIN -> step 1, PAR -> step 2,
  SLC, ECO -> contrast, AVG, REP, SET, SEG, PHS), or from the trajectory when the
  sequence has no LIN/PAR labels; flags: ACQ_IS_REVERSE (REV label), navigation (NAV),
  phase correction (REF), noise (NOISE), last in measurement.
- ``sample_time_us`` (dwell), ``center_sample`` (sample nearest k = 0),
  ``acquisition_time_stamp`` (first sample, 2.5 ms ticks), direction cosines of the
  scanner axes (read = x, phase = y, slice = z) and ``position`` 0.
- XML header: experimental conditions (H1 resonance frequency γ̄·B0), system field
  strength and receiver channels, one encoding (encoded/recon space: matrix and FOV in
  mm; limits of every counter; trajectory type), sequence parameters (TR, TE [ms],
  flip angle [deg]).
"""

from __future__ import annotations

import os

import numpy as np

from ..constants import GAMMA_BAR

__all__ = ["write_mrd", "read_mrd_header", "require_ismrmrd"]

_COUNTERS = {  # ismrmrd idx field -> Pulseq label
    "kspace_encode_step_1": "LIN",
    "kspace_encode_step_2": "PAR",
    "slice": "SLC",
    "contrast": "ECO",
    "average": "AVG",
    "repetition": "REP",
    "set": "SET",
    "segment": "SEG",
    "phase": "PHS",
}
_LIMITS = {
    "kspace_encode_step_1": "kspace_encoding_step_1",
    "kspace_encode_step_2": "kspace_encoding_step_2",
    "slice": "slice",
    "contrast": "contrast",
    "average": "average",
    "repetition": "repetition",
    "set": "set",
    "segment": "segment",
    "phase": "phase",
}


def require_ismrmrd():
    """Import and return the ``ismrmrd`` module, or raise a clear ImportError."""
    try:
        import ismrmrd  # noqa: PLC0415
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "writing ISMRMRD/MRD files needs the optional 'ismrmrd' package: "
            "pip install 'mritwin[io]' (or pip install ismrmrd)"
        ) from e
    return ismrmrd


def write_mrd(path, sig, seq=None, *, image=None, b0: float | None = None, fov=None, matrix=None,
              trajectory: str | None = None, protocol_name: str | None = None) -> str:
    """Write a signal as an ISMRMRD (MRD) HDF5 file.

    Args:
        path: output file (conventionally ``raw.mrd``); overwritten if it exists.
        sig: the `mritwin.Signal`.
        seq: the `mritwin.Sequence` (labels, dwell times, TE/TR/flip); without it every
            sample goes into one acquisition per run of evenly spaced samples.
        image: optional reconstructed `Image`: its matrix and FOV define the recon space
            (and encoded space when ``matrix``/``fov`` are not given).
        b0: main field [T] (default: ``image.b0``, else 3 T).
        fov: (3,) field of view [m] along x, y, z (default: image, else the sequence's
            ``FOV`` definition).
        matrix: (3,) encoded matrix (default: image, else from the k-space extent).
        trajectory: ``"cartesian"``, ``"epi"``, ``"radial"``, ``"spiral"``, ``"other"``
            (default: from the sequence's ``Name`` definition when it names one of them,
            else ``"other"`` for a NUFFT-reconstructed ``image``, else ``"cartesian"``).
        protocol_name: stored in the measurement information.

    Returns:
        The path written, as a string.

    Raises:
        ImportError: ``ismrmrd`` is not installed.
        ValueError: the signal and the sequence disagree on the number of samples.
        OSError: the file cannot be written.
    """
    ismrmrd = require_ismrmrd()
    from ismrmrd import xsd  # noqa: PLC0415

    from ..recon.seqinfo import acquisition_info, sequence_fov  # noqa: PLC0415
    from ..sequence.labels import sample_adc_index  # noqa: PLC0415

    samples = np.asarray(sig.samples)
    n_coils, n_adc = samples.shape
    k = np.asarray(sig.kspace, dtype=np.float64)
    info = None
    if seq is not None:
        info = acquisition_info(seq)
        adc_of = sample_adc_index(seq)
        if adc_of.size != n_adc:
            raise ValueError(f"the sequence has {adc_of.size} ADC samples but the signal has {n_adc}")
        if not np.all(np.isfinite(k)):
            k = seq.kspace()
        dwell = np.array([b.adc.dwell for b in seq.blocks if b.adc is not None])
    else:
        t = np.asarray(sig.time, dtype=np.float64)
        dt = np.diff(t) if n_adc > 1 else np.array([1e-5])
        step = float(np.median(dt)) if dt.size else 1e-5
        adc_of = np.concatenate([[0], np.cumsum(dt > 1.5 * step)]).astype(np.int64) if n_adc > 1 else np.zeros(1, int)
        dwell = np.full(int(adc_of.max()) + 1, step)
    n_events = int(adc_of.max()) + 1
    k = np.where(np.isfinite(k), k, 0.0)

    # geometry
    fov_m = None
    if fov is not None:
        fov_m = np.broadcast_to(np.asarray(fov, float), (3,)).copy()
    elif image is not None:
        fov_m = image.voxel_size * _shape3(image)
    else:
        fov_m = sequence_fov(seq)
    if matrix is not None:
        mat = np.broadcast_to(np.asarray(matrix, int), (3,)).copy()
    elif image is not None:
        mat = np.array(_shape3(image))
    elif fov_m is not None:
        mat = np.array([max(1, 2 * int(np.ceil(np.abs(k[:, a]).max() * fov_m[a] - 1e-6))) if np.isfinite(fov_m[a])
                        else 1 for a in range(3)])
    else:
        mat = np.ones(3, int)
    if fov_m is None:
        fov_m = np.full(3, np.nan)
    known = np.isfinite(fov_m) & (fov_m > 0)
    b0 = b0 if b0 is not None else (image.b0 if image is not None and image.b0 else 3.0)

    # encoding counters per ADC
    labels = info.labels if info is not None else {}
    used = info.labels_used if info is not None else set()
    counters = {f: np.zeros(n_events, np.int64) for f in _COUNTERS}
    first_sample = np.searchsorted(adc_of, np.arange(n_events))
    for field, lab in _COUNTERS.items():
        if lab in used:
            counters[field] = labels[lab].astype(np.int64)
    for field, axis in (("kspace_encode_step_1", 1), ("kspace_encode_step_2", 2)):
        if _COUNTERS[field] not in used and known[axis] and mat[axis] > 1:
            # phase index from the trajectory: value at the first sample of each ADC
            idx = np.round(k[first_sample, axis] * fov_m[axis]).astype(np.int64) + mat[axis] // 2
            counters[field] = np.clip(idx, 0, None)
    for field in counters:
        counters[field] = np.clip(counters[field], 0, 65535)

    def flagset(name):
        return labels[name] != 0 if name in used else np.zeros(n_events, bool)

    rev, nav, ref, noise = flagset("REV"), flagset("NAV"), flagset("REF"), flagset("NOISE")

    # header
    kind = trajectory
    if kind is None:
        name = str(seq.definitions.get("Name", "")).lower() if seq is not None else ""
        kind = next((t for t in ("epi", "radial", "spiral") if t in name), None)
    if kind is None:
        kind = "other" if image is not None and "nufft" in image.description else "cartesian"
    traj_enum = xsd.trajectoryType(kind)
    fov_mm = np.where(known, fov_m * 1000.0, 1.0)
    space = xsd.encodingSpaceType(
        matrixSize=xsd.matrixSizeType(x=int(mat[0]), y=int(mat[1]), z=int(mat[2])),
        fieldOfView_mm=xsd.fieldOfViewMm(x=float(fov_mm[0]), y=float(fov_mm[1]), z=float(fov_mm[2])),
    )
    limits = xsd.encodingLimitsType()
    n_ro = int(np.bincount(adc_of).max())
    limits.kspace_encoding_step_0 = xsd.limitType(minimum=0, maximum=n_ro - 1, center=n_ro // 2)
    for field, lim in _LIMITS.items():
        v = counters[field]
        centre = int(mat[1] // 2) if field == "kspace_encode_step_1" else (
            int(mat[2] // 2) if field == "kspace_encode_step_2" else 0)
        centre = min(max(centre, int(v.min())), int(v.max()))
        setattr(limits, lim, xsd.limitType(minimum=int(v.min()), maximum=int(v.max()), center=centre))
    unit = "cycles_per_matrix" if known.any() else "per_metre"
    desc = xsd.trajectoryDescriptionType(
        identifier="mritwin",
        userParameterString=[xsd.userParameterStringType(name="traj_unit", value=unit)],
        comment="traj = k * FOV / matrix (k = GAMMA_BAR * integral of G dt, scanner x, y, z)"
        if unit == "cycles_per_matrix" else "traj = k [1/m] (scanner x, y, z)",
    )
    enc = xsd.encodingType(encodedSpace=space, reconSpace=space, encodingLimits=limits,
                           trajectory=traj_enum, trajectoryDescription=desc)
    sp = xsd.sequenceParametersType()
    te = tr = flip = None
    if info is not None:
        te, tr, flip = info.te, info.tr, info.flip_angle
    elif image is not None:
        te, tr, flip = image.te, image.tr, image.flip_angle
    if te is not None:
        sp.TE = [float(t) * 1e3 for t in np.atleast_1d(te)]
    if tr is not None:
        sp.TR = [float(tr) * 1e3]
    if flip is not None:
        sp.flipAngle_deg = [float(np.degrees(flip))]
    sp.sequence_type = str(seq.definitions.get("Name", "Pulseq")) if seq is not None else "unknown"
    hdr = xsd.ismrmrdHeader(
        version=2,
        experimentalConditions=xsd.experimentalConditionsType(H1resonanceFrequency_Hz=int(round(GAMMA_BAR * b0))),
        acquisitionSystemInformation=xsd.acquisitionSystemInformationType(
            systemVendor="mritwin", systemModel="mritwin simulator", systemFieldStrength_T=float(b0),
            receiverChannels=int(n_coils), relativeReceiverNoiseBandwidth=1.0),
        measurementInformation=xsd.measurementInformationType(
            patientPosition=xsd.patientPositionType("HFS"), protocolName=protocol_name,
            sequenceName=sp.sequence_type),
        encoding=[enc],
        sequenceParameters=sp,
    )
    xml = xsd.ToXML(hdr)

    scale = np.where(known, fov_m / np.maximum(mat, 1), 1.0) if unit == "cycles_per_matrix" else np.ones(3)
    traj_all = (k * np.where(known, scale, 1.0)[None, :]).astype(np.float32)
    path = os.fspath(path)
    if os.path.exists(path):
        os.remove(path)
    t_all = np.asarray(sig.time, dtype=np.float64)
    with ismrmrd.Dataset(path, "dataset", create_if_needed=True) as dset:
        dset.write_xml_header(xml)
        for e in range(n_events):
            sel = np.nonzero(adc_of == e)[0]
            data = samples[:, sel].astype(np.complex64)
            traj = traj_all[sel]
            acq = ismrmrd.Acquisition.from_array(data, traj)
            head = acq.getHead()
            head.scan_counter = e
            head.sample_time_us = float(dwell[e] * 1e6)
            head.center_sample = int(np.argmin(np.linalg.norm(k[sel], axis=1)))
            head.acquisition_time_stamp = int(t_all[sel[0]] / 2.5e-3) if t_all.size == n_adc else 0
            head.read_dir[:] = (1.0, 0.0, 0.0)
            head.phase_dir[:] = (0.0, 1.0, 0.0)
            head.slice_dir[:] = (0.0, 0.0, 1.0)
            for field in _COUNTERS:
                setattr(head.idx, field, int(counters[field][e]))
            acq.setHead(head)
            if rev[e]:
                acq.set_flag(ismrmrd.ACQ_IS_REVERSE)
            if nav[e]:
                acq.set_flag(ismrmrd.ACQ_IS_NAVIGATION_DATA)
            if ref[e]:
                acq.set_flag(ismrmrd.ACQ_IS_PHASECORR_DATA)
            if noise[e]:
                acq.set_flag(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
            if e == n_events - 1:
                acq.set_flag(ismrmrd.ACQ_LAST_IN_MEASUREMENT)
            dset.append_acquisition(acq)
    return path


def read_mrd_header(path):
    """Read and parse (validate) the XML header of an MRD file.

    Returns:
        The ``ismrmrd.xsd.ismrmrdHeader`` object.

    Raises:
        ImportError: ``ismrmrd`` is missing. ValueError: the header does not parse.
    """
    ismrmrd = require_ismrmrd()
    from ismrmrd import xsd  # noqa: PLC0415

    with ismrmrd.Dataset(os.fspath(path), "dataset", create_if_needed=False) as dset:
        xml = dset.read_xml_header()
    try:
        return xsd.CreateFromDocument(xml)
    except Exception as e:
        raise ValueError(f"{path}: the ISMRMRD XML header does not validate: {e}") from e


def _shape3(image):
    s = list(image.spatial_shape)
    while len(s) < 3:
        s.append(1)
    return np.array(s[:3])
