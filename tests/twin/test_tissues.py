import math

import pytest

import mritwin as mt
from mritwin.twin import DEFAULT_LIBRARY, FAT_SPECTRUM_HAMILTON, SOURCES, Tissue, TissueLibrary
from mritwin.twin.tissues import FIELDS

REQUIRED = ("pd", "t1", "t2", "t2_star", "t2_prime", "adc", "chemical_shift_ppm")
TISSUES = ("white_matter", "gray_matter", "csf", "fat", "muscle", "skin", "skull", "marrow",
           "blood", "vessels", "ms_lesion", "edema", "tumor")


@pytest.mark.parametrize("name", TISSUES)
@pytest.mark.parametrize("b0", FIELDS)
def test_every_tissue_has_sourced_values_at_every_field(name, b0):
    p = mt.tissue_parameters(name, b0=b0)
    for k in REQUIRED:
        assert k in p
    assert p["t1"] > 0 and p["t2"] > 0 and 0 < p["t2_star"] <= p["t2"]
    assert p["t2_prime"] > 0
    if not math.isinf(p["t2_prime"]):
        assert 1 / p["t2_star"] == pytest.approx(1 / p["t2"] + 1 / p["t2_prime"])
    assert 0 <= p["pd"] <= 1 and p["adc"] >= 0
    assert all(src in SOURCES for src in p["sources"].values())
    assert sum(p["spectrum_amplitude"]) == pytest.approx(1.0)


def test_known_values_and_aliases():
    wm = mt.tissue_parameters("white_matter", b0=3.0)
    assert (wm["t1"], wm["t2"]) == (1.084, 0.069)  # Stanisz 2005
    assert mt.tissue_parameters("grey_matter", 1.5) == mt.tissue_parameters("gm", 1.5)
    assert mt.tissue_parameters("gray_matter", 2.89)["b0"] == 3.0  # "3 T" systems at 2.89 T
    # T1 of brain tissue grows with field
    for name in ("white_matter", "gray_matter"):
        t1 = [mt.tissue_parameters(name, b)["t1"] for b in FIELDS]
        assert t1 == sorted(t1)


def test_fat_has_six_peak_hamilton_spectrum():
    p = mt.tissue_parameters("fat", 3.0)
    assert len(p["spectrum_ppm"]) == 6
    assert p["chemical_shift_ppm"] == -3.40
    assert sum(a for _, a in FAT_SPECTRUM_HAMILTON) == pytest.approx(1.0)
    assert max(FAT_SPECTRUM_HAMILTON, key=lambda x: x[1])[0] == -3.40


def test_unknown_field_strength_raises():
    with pytest.raises(ValueError, match=r"no T1/T2/T2\* values at b0 = 9.4 T"):
        mt.tissue_parameters("white_matter", b0=9.4)
    with pytest.raises(ValueError, match="unknown tissue 'brain_goo'"):
        mt.tissue_parameters("brain_goo")


def test_library_is_immutable_and_extendable():
    lib = DEFAULT_LIBRARY.override("white_matter", b0=9.4, t1=1.4, t2=0.04, t2_star=0.02)
    assert lib.parameters("wm", 9.4)["t1"] == 1.4
    assert lib.parameters("wm", 9.4)["sources"]["t1"] == "assumed"
    with pytest.raises(ValueError, match="9.4 T"):
        DEFAULT_LIBRARY.parameters("wm", 9.4)  # the default is unchanged
    gel = Tissue("gel", pd=1.0, t1={3.0: 0.8}, t2={3.0: 0.08}, t2_star={3.0: 0.08}, adc=2e-9)
    lib2 = lib.add(gel)
    assert "gel" in lib2 and "gel" not in DEFAULT_LIBRARY
    assert lib2.parameters("gel")["t2_prime"] == math.inf
    with pytest.raises(ValueError, match="used twice"):
        lib2.add(gel)
    assert isinstance(lib2, TissueLibrary) and len(lib2) == len(DEFAULT_LIBRARY) + 1


def test_tissue_validation():
    with pytest.raises(ValueError, match="t2_star 0.2 s exceeds t2 0.1 s"):
        Tissue("x", pd=1, t1={3: 1}, t2={3: 0.1}, t2_star={3: 0.2})
    with pytest.raises(ValueError, match="t1 at 3.0 T must be > 0"):
        Tissue("x", pd=1, t1={3: -1}, t2={3: 0.1}, t2_star={3: 0.1})
    with pytest.raises(ValueError, match="sum to 1"):
        Tissue("x", pd=1, t1={3: 1}, t2={3: 0.1}, t2_star={3: 0.1}, spectrum=((0, 0.5),))
    with pytest.raises(ValueError, match="not a key of SOURCES"):
        Tissue("x", pd=1, t1={3: 1}, t2={3: 0.1}, t2_star={3: 0.1}, sources={"t1": "blog"})
