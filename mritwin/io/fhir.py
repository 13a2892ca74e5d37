"""Read a patient context (body size, vital signs) from a FHIR R4 Bundle (JSON).

The Bundle's Patient resource gives the id, the age (from ``birthDate``) and the sex
(``gender``); Observations identified by LOINC codes give the vital signs, converted
from their UCUM ``valueQuantity`` units into SI:

============================  ======================  ======================================
quantity                      LOINC                   accepted units (UCUM ``code``)
============================  ======================  ======================================
body mass [kg]                29463-7, 3141-9         ``kg``, ``g``, ``[lb_av]``
body height [m]               8302-2                  ``m``, ``cm``, ``mm``, ``[in_i]``
heart rate [Hz]               8867-4                  ``/min``, ``1/min``, ``{beats}/min``,
                                                      ``/s``, ``1/s``, ``Hz``
respiratory rate [Hz]         9279-1                  ``/min``, ``1/min``, ``{breaths}/min``,
                                                      ``/s``, ``1/s``, ``Hz``
============================  ======================  ======================================

The unit is looked up from ``valueQuantity.code`` (UCUM), or from ``valueQuantity.unit``
when the code is absent (``beats/min`` and ``breaths/min`` are also accepted there).
When several Observations give one quantity, the most recent (``effectiveDateTime``,
else ``effectivePeriod.end``/``start``, else ``issued``) wins; observations with status
``entered-in-error`` or ``cancelled`` are ignored.

Validation: when the optional extra ``fhir.resources`` (``pip install mritwin[fhir]``)
is installed, the bundle is first validated against its R4 models
(``fhir.resources.R4B`` of fhir.resources >= 7, or ``fhir.resources`` 6.x which is R4).
Without it the check is structural only: the Bundle/Patient/Observation fields this
reader uses are checked for presence and type, nothing else.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
from collections.abc import Iterable, Mapping

from ..twin.patient import PLAUSIBLE_RANGES, SEXES, PatientContext

__all__ = ["read_fhir_bundle", "LOINC_CODES", "UNITS", "QUANTITIES"]

LOINC_SYSTEM = "http://loinc.org"
UCUM_SYSTEM = "http://unitsofmeasure.org"

#: The patient quantities and the LOINC codes of the Observations that give them.
LOINC_CODES = {
    "mass": ("29463-7", "3141-9"),
    "height": ("8302-2",),
    "heart_rate": ("8867-4",),
    "respiratory_rate": ("9279-1",),
}
QUANTITIES = tuple(LOINC_CODES)

_PER_MIN = 1.0 / 60.0
_RATE = {"/min": _PER_MIN, "1/min": _PER_MIN, "/s": 1.0, "1/s": 1.0, "Hz": 1.0}
#: Accepted units (UCUM codes) per quantity and their factor to SI.
UNITS = {
    "mass": {"kg": 1.0, "g": 1e-3, "[lb_av]": 0.45359237},
    "height": {"m": 1.0, "cm": 1e-2, "mm": 1e-3, "[in_i]": 0.0254},
    "heart_rate": {**_RATE, "{beats}/min": _PER_MIN, "{beat}/min": _PER_MIN},
    "respiratory_rate": {**_RATE, "{breaths}/min": _PER_MIN, "{breath}/min": _PER_MIN},
}
# Human-readable unit strings accepted only in ``valueQuantity.unit`` (no ``code``).
_UNIT_ALIASES = {
    "heart_rate": {"beats/min": _PER_MIN, "bpm": _PER_MIN},
    "respiratory_rate": {"breaths/min": _PER_MIN},
}
_SI = {"mass": "kg", "height": "m", "heart_rate": "Hz", "respiratory_rate": "Hz"}
_LABEL = {"mass": "body weight", "height": "body height", "heart_rate": "heart rate",
          "respiratory_rate": "respiratory rate"}

# R4 Bundle.type value set (R5 adds subscription-notification).
_R4_BUNDLE_TYPES = ("document", "message", "transaction", "transaction-response", "batch",
                    "batch-response", "history", "searchset", "collection")
_IGNORED_STATUS = ("entered-in-error", "cancelled")
_CODE_TO_QUANTITY = {c: q for q, codes in LOINC_CODES.items() for c in codes}


def read_fhir_bundle(source, *, require: Iterable[str] = ("mass",),
                     as_of: _dt.date | None = None) -> PatientContext:
    """Read the `PatientContext` of the one Patient in a FHIR R4 Bundle (JSON).

    Args:
        source: path of a ``.json`` file (str or path-like), or the parsed Bundle as a
            dict.
        require: the quantities that must be present (``"mass"``, ``"height"``,
            ``"heart_rate"``, ``"respiratory_rate"``); the others are ``None`` when the
            bundle has no Observation for them. Default: the mass (the SAR model needs it).
        as_of: date at which the age is computed (completed years); default the Bundle's
            ``timestamp`` when present, else today's date (UTC).

    Returns:
        A `PatientContext` in SI units (kg, m, Hz, years).

    Raises:
        ValueError: malformed JSON (names the file); not a FHIR R4 Bundle; no or several
            Patient resources; an Observation of a required quantity missing; an
            unknown or wrong unit (names the code/unit and lists the accepted ones); a
            non-numeric value; a value outside the plausible range (e.g. mass outside
            0.5 to 500 kg); a bad date. Messages name the file (or ``<dict>``), the entry
            index and resource, and the field.
        OSError: the file cannot be read.

    Example:
        >>> bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        ...     {"resource": {"resourceType": "Patient", "id": "p1", "gender": "female"}},
        ...     {"resource": {"resourceType": "Observation", "status": "final",
        ...      "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
        ...      "valueQuantity": {"value": 154, "unit": "lb",
        ...                        "system": "http://unitsofmeasure.org", "code": "[lb_av]"}}}]}
        >>> ctx = read_fhir_bundle(bundle)
        >>> round(ctx.mass, 2), ctx.sex, ctx.heart_rate
        (69.85, 'female', None)
    """
    data, src = _load(source)
    req = tuple(require)
    for q in req:
        if q not in LOINC_CODES:
            raise ValueError(f"require: unknown quantity {q!r}; expected one of {', '.join(QUANTITIES)}")
    _check_bundle(data, src)
    _validate_with_library(data, src)

    patients = []
    found: dict[str, list] = {q: [] for q in QUANTITIES}
    for i, entry in enumerate(data.get("entry", [])):
        where = f"{src}: entry {i}"
        if not isinstance(entry, Mapping):
            raise ValueError(f"{where}: expected an object, got {type(entry).__name__}")
        res = entry.get("resource")
        if res is None:
            continue  # e.g. a transaction-response entry without a resource
        if not isinstance(res, Mapping) or not isinstance(res.get("resourceType"), str):
            raise ValueError(f"{where}: 'resource' must be an object with a string 'resourceType'")
        rtype = res["resourceType"]
        if rid := res.get("id"):
            where = f"{where} ({rtype}/{rid})"
        else:
            where = f"{where} ({rtype})"
        if rtype == "Patient":
            patients.append((where, entry, res))
        elif rtype == "Observation":
            q = _observation_quantity(res, where)
            if q is not None and res.get("status") not in _IGNORED_STATUS:
                found[q].append((i, where, res))

    if len(patients) != 1:
        raise ValueError(f"{src}: expected exactly one Patient resource in the Bundle, got {len(patients)}")
    p_where, p_entry, patient = patients[0]
    pid = patient.get("id")
    if pid is not None and not isinstance(pid, str):
        raise ValueError(f"{p_where}: field 'id' must be a string, got {type(pid).__name__}")
    refs = {r for r in (p_entry.get("fullUrl"), f"Patient/{pid}" if pid else None) if r}

    sex = patient.get("gender")
    if sex is not None and sex not in SEXES:
        raise ValueError(f"{p_where}: field 'gender' must be one of {', '.join(SEXES)}, got {sex!r}")
    age = None
    if patient.get("birthDate") is not None:
        ref_date = as_of if as_of is not None else _bundle_date(data, src)
        age = _age(patient["birthDate"], ref_date, p_where)

    values: dict[str, float | None] = {}
    for q in QUANTITIES:
        obs = found[q]
        for _, where, res in obs:
            _check_subject(res, refs, where)
        if not obs:
            if q in req:
                codes = " or ".join(LOINC_CODES[q])
                raise ValueError(f"{src}: no Observation of {_LABEL[q]} (LOINC {codes}) in the Bundle; "
                                 f"it is required")
            values[q] = None
            continue
        _, where, res = _most_recent(obs, _LABEL[q])
        values[q] = _quantity_si(res, q, where)

    return PatientContext(mass=values["mass"], height=values["height"], heart_rate=values["heart_rate"],
                          respiratory_rate=values["respiratory_rate"], age=age, sex=sex, patient_id=pid)


# --------------------------------------------------------------------------- helpers


def _load(source) -> tuple[Mapping, str]:
    if isinstance(source, Mapping):
        return source, "<dict>"
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be a path or a dict (parsed FHIR JSON), got {type(source).__name__}")
    path = os.fspath(source)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: expected a JSON object (a FHIR Bundle), got {type(data).__name__}")
    return data, path


def _check_bundle(data: Mapping, src: str) -> None:
    rtype = data.get("resourceType")
    if rtype != "Bundle":
        raise ValueError(f"{src}: not a FHIR Bundle: resourceType is {rtype!r}, expected 'Bundle'")
    btype = data.get("type")
    if btype not in _R4_BUNDLE_TYPES:
        raise ValueError(f"{src}: not an R4 Bundle: field 'type' is {btype!r}, expected one of "
                         f"{', '.join(_R4_BUNDLE_TYPES)}")
    entries = data.get("entry", [])
    if not isinstance(entries, list):
        raise ValueError(f"{src}: Bundle field 'entry' must be a list, got {type(entries).__name__}")


def _validate_with_library(data: Mapping, src: str) -> bool:
    """Validate with fhir.resources when installed; return whether it ran."""
    try:
        from fhir.resources.R4B.bundle import Bundle  # fhir.resources >= 7 (R5 default; R4B ~ R4)
    except ImportError:
        try:
            from fhir.resources.bundle import Bundle  # fhir.resources 6.x (R4)
        except ImportError:
            return False
    validate = getattr(Bundle, "model_validate", None) or Bundle.parse_obj
    try:
        validate(dict(data))
    except ValueError as e:  # pydantic's ValidationError is a ValueError
        raise ValueError(f"{src}: not a valid FHIR R4 Bundle (fhir.resources): {e}") from None
    return True


def _observation_quantity(res: Mapping, where: str) -> str | None:
    code = res.get("code")
    if not isinstance(code, Mapping):
        raise ValueError(f"{where}: field 'code' must be a CodeableConcept object, got {type(code).__name__}")
    codings = code.get("coding", [])
    if not isinstance(codings, list):
        raise ValueError(f"{where}: field 'code.coding' must be a list, got {type(codings).__name__}")
    hits = {_CODE_TO_QUANTITY[c.get("code")] for c in codings
            if isinstance(c, Mapping) and c.get("system") == LOINC_SYSTEM and c.get("code") in _CODE_TO_QUANTITY}
    if len(hits) > 1:
        raise ValueError(f"{where}: field 'code' has LOINC codes of several quantities: {sorted(hits)}")
    return hits.pop() if hits else None


def _check_subject(res: Mapping, refs: set, where: str) -> None:
    subj = res.get("subject")
    if subj is None or not refs:
        return
    ref = subj.get("reference") if isinstance(subj, Mapping) else None
    if isinstance(ref, str) and not any(ref == r or ref.endswith("/" + r) or r.endswith("/" + ref) for r in refs):
        raise ValueError(f"{where}: field 'subject.reference' is {ref!r}, not the Bundle's Patient "
                         f"({' or '.join(sorted(refs))})")


def _parse_datetime(s, where: str, field: str) -> _dt.datetime:
    if not isinstance(s, str):
        raise ValueError(f"{where}: field {field!r} must be a string, got {type(s).__name__}")
    try:
        if len(s) == 4:
            t = _dt.datetime(int(s), 1, 1)
        elif len(s) == 7:
            t = _dt.datetime(int(s[:4]), int(s[5:7]), 1)
        else:
            # normalise for Python 3.10's fromisoformat: "Z" and 1 to 9 fraction digits
            iso = re.sub(r"\.(\d+)", lambda m: "." + (m.group(1) + "000000")[:6], s.replace("Z", "+00:00"))
            t = _dt.datetime.fromisoformat(iso)
    except ValueError:
        raise ValueError(f"{where}: field {field!r} is {s!r}, not a FHIR date/dateTime "
                         f"(YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss+zz:zz)") from None
    return t if t.tzinfo is not None else t.replace(tzinfo=_dt.timezone.utc)


def _effective_time(res: Mapping, where: str) -> _dt.datetime | None:
    if "effectiveDateTime" in res:
        return _parse_datetime(res["effectiveDateTime"], where, "effectiveDateTime")
    per = res.get("effectivePeriod")
    if isinstance(per, Mapping):
        for k in ("end", "start"):
            if k in per:
                return _parse_datetime(per[k], where, f"effectivePeriod.{k}")
    if "issued" in res:
        return _parse_datetime(res["issued"], where, "issued")
    return None


def _most_recent(obs: list, label: str):
    if len(obs) == 1:
        return obs[0]
    timed = []
    for i, where, res in obs:
        t = _effective_time(res, where)
        if t is None:
            raise ValueError(f"{where}: {len(obs)} Observations of {label} but this one has no "
                             f"effectiveDateTime, so the most recent cannot be chosen")
        timed.append((t, i, where, res))
    _, i, where, res = max(timed, key=lambda x: (x[0], x[1]))  # ties: the later entry
    return i, where, res


def _quantity_si(res: Mapping, q: str, where: str) -> float:
    vq = res.get("valueQuantity")
    if vq is None:
        other = [k for k in res if k.startswith("value")]
        got = f"got {other[0]}" if other else "none given"
        raise ValueError(f"{where}: {_LABEL[q]} needs a 'valueQuantity' ({got})")
    if not isinstance(vq, Mapping):
        raise ValueError(f"{where}: field 'valueQuantity' must be an object, got {type(vq).__name__}")
    value = vq.get("value")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: field 'valueQuantity.value' must be a number, got {value!r} "
                         f"({type(value).__name__})")
    if not math.isfinite(value):
        raise ValueError(f"{where}: field 'valueQuantity.value' must be finite, got {value!r}")
    if vq.get("comparator") is not None:
        raise ValueError(f"{where}: field 'valueQuantity.comparator' is {vq['comparator']!r}; "
                         f"a bounded value is not a measurement of {_LABEL[q]}")
    system = vq.get("system")
    if system is not None and system != UCUM_SYSTEM:
        raise ValueError(f"{where}: field 'valueQuantity.system' is {system!r}, expected UCUM ({UCUM_SYSTEM})")
    accepted = UNITS[q]
    if "code" in vq:
        unit, field, table = vq["code"], "valueQuantity.code", accepted
    elif "unit" in vq:
        unit, field, table = vq["unit"], "valueQuantity.unit", {**accepted, **_UNIT_ALIASES.get(q, {})}
    else:
        raise ValueError(f"{where}: {_LABEL[q]} has no unit (valueQuantity.code or .unit); "
                         f"accepted UCUM codes: {', '.join(accepted)}")
    if unit not in table:
        raise ValueError(f"{where}: field {field!r} is {unit!r}, not a unit of {_LABEL[q]}; "
                         f"accepted: {', '.join(table)}")
    v = float(value) * table[unit]
    lo, hi = PLAUSIBLE_RANGES[q]
    if not lo <= v <= hi:
        raise ValueError(f"{where}: {_LABEL[q]} {value!r} {unit} = {v:.4g} {_SI[q]} is outside the "
                         f"plausible range [{lo:.4g}, {hi:.4g}] {_SI[q]}")
    return v


def _bundle_date(data: Mapping, src: str) -> _dt.date:
    ts = data.get("timestamp")
    if ts is None:
        return _dt.datetime.now(_dt.timezone.utc).date()
    return _parse_datetime(ts, f"{src}: Bundle", "timestamp").date()


def _age(birth, ref: _dt.date, where: str) -> float:
    b = _parse_datetime(birth, where, "birthDate").date()
    if b > ref:
        raise ValueError(f"{where}: field 'birthDate' {birth!r} is after the reference date {ref.isoformat()}")
    years = ref.year - b.year - ((ref.month, ref.day) < (b.month, b.day))
    lo, hi = PLAUSIBLE_RANGES["age"]
    if not lo <= years <= hi:
        raise ValueError(f"{where}: age {years} years from birthDate {birth!r} is outside [{lo:g}, {hi:g}]")
    return float(years)
