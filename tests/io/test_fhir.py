"""Patient context from a FHIR R4 Bundle: SAR (mass) and motion rates, unit conversion,
most-recent selection, and the errors for malformed input."""

import copy
import datetime as dt
import json
import math
import sys
import types

import pytest

import mritwin as mt
from mritwin.io.fhir import read_fhir_bundle
from mritwin.sequence.safety import BodyModel, check_sar
from mritwin.twin.patient import PatientContext

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


def obs(loinc, value, code=None, unit=None, when="2024-05-01T10:00:00Z", oid=None, **extra):
    vq = {"value": value}
    if code is not None:
        vq.update(system=UCUM, code=code)
    if unit is not None:
        vq["unit"] = unit
    r = {"resourceType": "Observation", "status": "final",
         "code": {"coding": [{"system": LOINC, "code": loinc}]},
         "subject": {"reference": "Patient/p1"}, "valueQuantity": vq, **extra}
    if oid:
        r["id"] = oid
    if when is not None:
        r["effectiveDateTime"] = when
    return {"fullUrl": f"urn:uuid:{oid or loinc}", "resource": r}


def bundle(*observations, patient=True):
    entries = []
    if patient:
        entries.append({"fullUrl": "urn:uuid:p1", "resource": {
            "resourceType": "Patient", "id": "p1", "gender": "male", "birthDate": "1980-06-15"}})
    entries.extend(observations)
    return {"resourceType": "Bundle", "type": "collection", "timestamp": "2024-05-02T08:00:00Z",
            "entry": entries}


def full_bundle(mass_kg=80.0):
    return bundle(obs("29463-7", mass_kg, "kg", "kg", oid="w"),
                  obs("8302-2", 180, "cm", "cm", oid="h"),
                  obs("8867-4", 72, "/min", "beats/minute", oid="hr"),
                  obs("9279-1", 15, "/min", "breaths/minute", oid="rr"))


@pytest.fixture(scope="module")
def gre_seq():
    sc = mt.Scanner(b0=3.0)
    return sc, mt.sequences.gre(scanner=sc, fov=0.2, matrix=16, flip_angle_deg=30, slice_thickness=5e-3)


# ------------------------------------------------------------------ happy path


def test_bundle_dict_and_file_give_patient_context(tmp_path):
    b = full_bundle()
    p = tmp_path / "patient.json"
    p.write_text(json.dumps(b))
    for src in (b, p, str(p)):
        ctx = read_fhir_bundle(src, require=("mass", "height", "heart_rate", "respiratory_rate"))
        assert ctx.patient_id == "p1" and ctx.sex == "male"
        assert ctx.age == 43.0  # born 1980-06-15, bundle timestamp 2024-05-02
        assert ctx.mass == pytest.approx(80.0) and ctx.height == pytest.approx(1.80)
        assert ctx.heart_rate == pytest.approx(1.2)
        assert ctx.cardiac_period == pytest.approx(1 / 1.2) and ctx.cardiac_period == pytest.approx(0.8333, abs=1e-4)
        assert ctx.respiratory_rate == pytest.approx(0.25) and ctx.respiratory_period == pytest.approx(4.0)
    assert read_fhir_bundle(b, as_of=dt.date(2024, 6, 15)).age == 44.0


def test_bundle_drives_whole_body_sar_by_mass(gre_seq, tmp_path):
    sc, seq = gre_seq
    reports = {}
    for m in (50.0, 100.0):
        p = tmp_path / f"p{m:g}.json"
        p.write_text(json.dumps(full_bundle(m)))
        model = read_fhir_bundle(p).body_model()
        assert model.patient_mass == m and model.patient_height == pytest.approx(1.8)
        rep = check_sar(seq, sc, model=model)
        # closed form of the model: SAR_wb = σ ω² R² B1rms² / (4ρ) · min(1, L/h), R² = m / (ρ π h)
        omega = 2 * math.pi * sc.gamma_bar * sc.b0
        r2 = m / (model.density * math.pi * 1.8)
        expected = (model.conductivity * omega ** 2 * r2 * rep.b1_rms ** 2 / (4 * model.density)
                    * min(1.0, model.coil_length / 1.8))
        assert rep.whole_body_sar == pytest.approx(expected, rel=1e-12)
        assert rep.model.patient_mass == m
        reports[m] = rep
    assert reports[50.0].b1_rms == pytest.approx(reports[100.0].b1_rms, rel=1e-12)
    # same height: whole-body SAR scales linearly with mass (R² ∝ m)
    assert reports[100.0].whole_body_sar / reports[50.0].whole_body_sar == pytest.approx(2.0, rel=1e-12)
    assert reports[100.0].whole_body_sar > 0


def test_block_pulse_sar_closed_form():
    """Hard pulse: B1 = α / (2π γ̄ τ), B1rms² = B1² τ / TR; SAR_wb from the patient's mass."""
    sc = mt.Scanner(b0=1.5)
    tau, tr = 1e-3, 0.1
    seq = mt.Sequence([mt.Block(rf=mt.make_block_pulse(math.pi / 2, tau, scanner=sc), duration=tr)])
    ctx = read_fhir_bundle(full_bundle(60.0))
    rep = check_sar(seq, sc, model=ctx.body_model())
    b1 = (math.pi / 2) / (2 * math.pi * sc.gamma_bar * tau)
    m, h, sigma, rho = 60.0, 1.8, 0.5, 1000.0
    omega = 2 * math.pi * sc.gamma_bar * sc.b0
    expected = sigma * omega ** 2 * (m / (rho * math.pi * h)) * b1 ** 2 * tau / tr / (4 * rho) * (0.7 / h)
    assert rep.b1_rms == pytest.approx(b1 * math.sqrt(tau / tr), rel=1e-9)
    assert rep.whole_body_sar == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("loinc,value,code,si,field", [
    ("29463-7", 176.3698, "[lb_av]", 80.0, "mass"),
    ("3141-9", 80000, "g", 80.0, "mass"),
    ("8302-2", 70.866, "[in_i]", 1.8, "height"),
    ("8302-2", 180, "cm", 1.8, "height"),
    ("8302-2", 1.8, "m", 1.8, "height"),
    ("8867-4", 72, "{beats}/min", 1.2, "heart_rate"),
    ("8867-4", 1.2, "/s", 1.2, "heart_rate"),
    ("9279-1", 12, "1/min", 0.2, "respiratory_rate"),
])
def test_unit_conversion(loinc, value, code, si, field):
    b = bundle(obs("29463-7", 70, "kg"), obs(loinc, value, code, oid="x"))
    if field == "mass":
        b = bundle(obs(loinc, value, code))
    ctx = read_fhir_bundle(b)
    assert getattr(ctx, field) == pytest.approx(si, rel=1e-4)


def test_unit_from_display_unit_when_no_code():
    b = bundle(obs("29463-7", 70, "kg"), obs("8867-4", 60, unit="beats/min", oid="hr"))
    assert read_fhir_bundle(b).heart_rate == pytest.approx(1.0)


def test_most_recent_observation_wins():
    b = bundle(obs("29463-7", 70, "kg", when="2023-01-01T00:00:00Z", oid="old"),
               obs("29463-7", 82, "kg", when="2024-03-01T09:00:00+01:00", oid="new"),
               obs("29463-7", 75, "kg", when="2024-02-29", oid="mid"),
               obs("8867-4", 60, "/min", when="2024-01-01T00:00:00Z", oid="hr1"),
               obs("8867-4", 90, "/min", when="2022-01-01T00:00:00Z", oid="hr2"))
    ctx = read_fhir_bundle(b)
    assert ctx.mass == 82.0 and ctx.heart_rate == pytest.approx(1.0)


def test_entered_in_error_is_ignored():
    bad = obs("29463-7", 300, "kg", when="2025-01-01T00:00:00Z", oid="typo")
    bad["resource"]["status"] = "entered-in-error"
    ctx = read_fhir_bundle(bundle(obs("29463-7", 70, "kg", oid="ok"), bad))
    assert ctx.mass == 70.0


def test_optional_quantities_absent():
    ctx = read_fhir_bundle(bundle(obs("29463-7", 70, "kg")))
    assert ctx.heart_rate is None and ctx.height is None
    assert ctx.body_model().patient_height == BodyModel().patient_height
    with pytest.raises(ValueError, match="cardiac_period needs heart_rate.*'p1'"):
        _ = ctx.cardiac_period
    with pytest.raises(ValueError, match="respiratory_period needs respiratory_rate"):
        _ = ctx.respiratory_period


# ------------------------------------------------------------------ errors


def test_malformed_json_names_file(tmp_path):
    p = tmp_path / "broken.json"
    p.write_text('{"resourceType": "Bundle", "type": "collection", "entry": [')
    with pytest.raises(ValueError, match=r"broken\.json: malformed JSON at line 1"):
        read_fhir_bundle(p)


@pytest.mark.parametrize("mutate,match", [
    (lambda b: b.update(resourceType="Patient"), r"<dict>: not a FHIR Bundle: resourceType is 'Patient'"),
    (lambda b: b.pop("type"), r"not an R4 Bundle: field 'type' is None"),
    (lambda b: b.update(type="subscription-notification"), r"not an R4 Bundle.*'subscription-notification'"),
    (lambda b: b.update(entry={"a": 1}), r"field 'entry' must be a list, got dict"),
    (lambda b: b["entry"].append({"resource": {"id": "x"}}), r"entry 2: 'resource' must be an object with a string"),
    (lambda b: b["entry"].pop(0), r"expected exactly one Patient resource in the Bundle, got 0"),
    (lambda b: b["entry"].append(copy.deepcopy(b["entry"][0])), r"exactly one Patient.*got 2"),
    (lambda b: b["entry"][0]["resource"].update(gender="M"), r"Patient/p1\): field 'gender' must be one of"),
    (lambda b: b["entry"][0]["resource"].update(birthDate="15.06.1980"), r"field 'birthDate' is '15.06.1980'"),
    (lambda b: b["entry"][1]["resource"].update(subject={"reference": "Patient/p2"}),
     r"entry 1 \(Observation/w\): field 'subject.reference' is 'Patient/p2', not the Bundle's Patient"),
])
def test_malformed_bundle(mutate, match):
    b = bundle(obs("29463-7", 70, "kg", oid="w"))
    mutate(b)
    with pytest.raises(ValueError, match=match):
        read_fhir_bundle(b)


def test_not_an_object_file(tmp_path):
    p = tmp_path / "list.json"
    p.write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"list\.json: expected a JSON object .*got list"):
        read_fhir_bundle(p)


def test_missing_required_observation():
    with pytest.raises(ValueError, match=r"no Observation of body weight \(LOINC 29463-7 or 3141-9\).*required"):
        read_fhir_bundle(bundle(obs("8867-4", 72, "/min")))
    b = bundle(obs("29463-7", 70, "kg"))
    with pytest.raises(ValueError, match=r"no Observation of heart rate \(LOINC 8867-4\)"):
        read_fhir_bundle(b, require=("mass", "heart_rate"))
    with pytest.raises(ValueError, match=r"require: unknown quantity 'weight'"):
        read_fhir_bundle(b, require=("weight",))


@pytest.mark.parametrize("loinc,code,match", [
    ("29463-7", "cm", r"field 'valueQuantity.code' is 'cm', not a unit of body weight; accepted: kg, g, \[lb_av\]"),
    ("8302-2", "kg", r"'kg', not a unit of body height; accepted: m, cm, mm, \[in_i\]"),
    ("8867-4", "mmHg", r"'mmHg', not a unit of heart rate; accepted: /min"),
    ("9279-1", "lb", r"'lb', not a unit of respiratory rate"),
])
def test_wrong_unit(loinc, code, match):
    b = bundle(obs("29463-7", 70, "kg"), obs(loinc, 5, code, oid="x"))
    if loinc == "29463-7":
        b = bundle(obs(loinc, 5, code, oid="x"))
    with pytest.raises(ValueError, match=match):
        read_fhir_bundle(b)


def test_missing_or_non_ucum_unit():
    e = obs("29463-7", 70)
    with pytest.raises(ValueError, match=r"body weight has no unit .*accepted UCUM codes: kg, g"):
        read_fhir_bundle(bundle(e))
    e = obs("29463-7", 70, "kg")
    e["resource"]["valueQuantity"]["system"] = "http://snomed.info/sct"
    with pytest.raises(ValueError, match=r"'valueQuantity.system' is 'http://snomed.info/sct', expected UCUM"):
        read_fhir_bundle(bundle(e))


@pytest.mark.parametrize("value,match", [
    ("70", r"'valueQuantity.value' must be a number, got '70' \(str\)"),
    (None, r"must be a number, got None"),
    (True, r"must be a number, got True"),
    (float("nan"), r"must be finite"),
])
def test_non_numeric_value(value, match):
    with pytest.raises(ValueError, match=match):
        read_fhir_bundle(bundle(obs("29463-7", value, "kg", oid="w")))


def test_comparator_rejected():
    e = obs("29463-7", 40, "kg")
    e["resource"]["valueQuantity"]["comparator"] = "<"
    with pytest.raises(ValueError, match=r"'valueQuantity.comparator' is '<'"):
        read_fhir_bundle(bundle(e))


def test_datetime_forms():
    b = bundle(obs("29463-7", 70, "kg", when="2024-03-01T10:00:00.1234567Z", oid="a"),
               obs("29463-7", 71, "kg", when="2024-03-01T10:00:00.5+00:00", oid="b"),
               obs("29463-7", 72, "kg", when="2024-02", oid="c"))
    assert read_fhir_bundle(b).mass == 71.0
    b = bundle(obs("29463-7", 70, "kg", when="yesterday", oid="a"), obs("29463-7", 71, "kg", oid="b"))
    with pytest.raises(ValueError, match=r"Observation/a\): field 'effectiveDateTime' is 'yesterday', not a FHIR"):
        read_fhir_bundle(b)


def test_value_string_instead_of_quantity():
    e = obs("29463-7", 70, "kg")
    del e["resource"]["valueQuantity"]
    e["resource"]["valueString"] = "70 kg"
    with pytest.raises(ValueError, match=r"body weight needs a 'valueQuantity' \(got valueString\)"):
        read_fhir_bundle(bundle(e))


@pytest.mark.parametrize("loinc,value,code,match", [
    ("29463-7", 700, "kg", r"body weight 700 kg = 700 kg is outside the plausible range \[0.5, 500\] kg"),
    ("29463-7", -3, "kg", r"outside the plausible range \[0.5, 500\] kg"),
    ("29463-7", 80, "g", r"80 g = 0.08 kg is outside"),  # a unit slip: grams for kilograms
    ("8302-2", 180, "m", r"body height 180 m = 180 m is outside"),
    ("8867-4", 720, "/min", r"heart rate 720 /min = 12 Hz is outside"),
])
def test_absurd_values(loinc, value, code, match):
    b = bundle(obs("29463-7", 70, "kg"), obs(loinc, value, code, oid="x"))
    if loinc == "29463-7":
        b = bundle(obs(loinc, value, code, oid="x"))
    with pytest.raises(ValueError, match=match):
        read_fhir_bundle(b)


def test_several_observations_without_time():
    b = bundle(obs("29463-7", 70, "kg", oid="a"), obs("29463-7", 71, "kg", when=None, oid="b"))
    with pytest.raises(ValueError, match=r"Observation/b\): 2 Observations of body weight but this one has no "
                                         r"effectiveDateTime"):
        read_fhir_bundle(b)


def test_patient_context_invariants():
    with pytest.raises(ValueError, match=r"mass = 0.1 kg is outside the plausible range"):
        PatientContext(mass=0.1)
    with pytest.raises(ValueError, match=r"heart_rate must be a number \[Hz\], got '72'"):
        PatientContext(heart_rate="72")
    with pytest.raises(ValueError, match=r"sex must be one of female, male, other, unknown"):
        PatientContext(sex="M")
    with pytest.raises(ValueError, match=r"body_model\(\) needs mass"):
        PatientContext(height=1.7).body_model()
    with pytest.raises(ValueError, match=r"takes patient_mass from the patient"):
        PatientContext(mass=70).body_model(patient_mass=80)
    assert PatientContext(mass=70).body_model(coil="head").coil == "head"


def test_optional_fhir_resources_validation(monkeypatch):
    """With fhir.resources importable, its R4 model validates the bundle first."""
    calls = []

    class Bundle:
        @staticmethod
        def model_validate(data):
            calls.append(data["resourceType"])
            if data.get("id") == "bad":
                raise ValueError("1 validation error for Bundle")

    mods = {n: types.ModuleType(n) for n in ("fhir", "fhir.resources", "fhir.resources.R4B",
                                             "fhir.resources.R4B.bundle")}
    mods["fhir.resources.R4B.bundle"].Bundle = Bundle
    for n, m in mods.items():
        monkeypatch.setitem(sys.modules, n, m)
    b = bundle(obs("29463-7", 70, "kg"))
    assert read_fhir_bundle(b).mass == 70.0 and calls == ["Bundle"]
    b["id"] = "bad"
    with pytest.raises(ValueError, match=r"not a valid FHIR R4 Bundle \(fhir.resources\): 1 validation error"):
        read_fhir_bundle(b)


def test_docs_example_bundle():
    """The example bundle in docs/patient.md reads as the page says."""
    import pathlib
    import re

    doc = pathlib.Path(__file__).resolve().parents[2] / "docs" / "patient.md"
    if not doc.is_file():
        pytest.skip("docs/patient.md not found")
    text = re.search(r"```json\n(.*?)```", doc.read_text(), re.S).group(1)
    ctx = read_fhir_bundle(json.loads(text), require=("mass", "height", "heart_rate", "respiratory_rate"))
    assert ctx == PatientContext(mass=82.0, height=1.8, heart_rate=1.2, respiratory_rate=0.25, age=43.0,
                                 sex="female", patient_id="p1")
