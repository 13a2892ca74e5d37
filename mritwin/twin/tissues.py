"""Tissue library: relaxation times, proton density, diffusion and chemical shift.

Values are tabulated at the nominal fields 1.5 T, 3 T and 7 T, each with the key of its
literature source (`SOURCES`). There is no interpolation between fields: a field
within `FIELD_TOLERANCE` of a tabulated one uses that field's values (a Siemens
"3 T" system runs at 2.89 T), any other field raises `ValueError` unless the tissue
carries a value for it (add one with `Tissue.with_values` / `TissueLibrary.add`).

Where no in vivo measurement at a field was found, the value is a documented
assumption (source key ``"assumed"`` with a note saying what was assumed). The values
are representative adult values for simulation, not reference ranges.

Example:
    >>> import mritwin as mt
    >>> p = mt.tissue_parameters("white_matter", b0=3.0)
    >>> round(p["t1"], 3), round(p["t2"], 3)
    (1.084, 0.069)
    >>> lib = mt.twin.DEFAULT_LIBRARY.add(
    ...     mt.twin.Tissue("gel", pd=1.0, t1={3.0: 0.8}, t2={3.0: 0.08},
    ...                    t2_star={3.0: 0.05}, adc=2e-9))
    >>> lib.parameters("gel", b0=3.0)["t1"]
    0.8
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from types import MappingProxyType

__all__ = [
    "Tissue",
    "TissueLibrary",
    "DEFAULT_LIBRARY",
    "SOURCES",
    "FIELDS",
    "FIELD_TOLERANCE",
    "FAT_SPECTRUM_HAMILTON",
    "tissue_parameters",
]

#: Nominal field strengths [T] with tabulated values.
FIELDS: tuple[float, ...] = (1.5, 3.0, 7.0)
#: A requested B0 within this distance [T] of a tabulated field uses that field's values.
FIELD_TOLERANCE: float = 0.15

#: Literature sources, by key. Every tabulated value names one of these keys.
SOURCES: Mapping[str, str] = MappingProxyType({
    "stanisz2005": "Stanisz GJ et al. T1, T2 relaxation and magnetization transfer in tissue "
                   "at 3T. Magn Reson Med 2005;54:507-512 (1.5 T and 3 T values, Table 1).",
    "rooney2007": "Rooney WD et al. Magnetic field and tissue dependencies of human brain "
                  "longitudinal 1H2O relaxation in vivo. Magn Reson Med 2007;57:308-318.",
    "peters2007": "Peters AM et al. T2* measurements in human brain at 1.5, 3 and 7 T. "
                  "Magn Reson Imaging 2007;25:748-753.",
    "cox2010": "Cox EF, Gowland PA. Simultaneous quantification of T2 and T2' using a combined "
               "gradient echo-spin echo sequence at ultrahigh field. Magn Reson Med "
               "2010;64:1440-1445 (7 T T2 of grey and white matter).",
    "spijkerman2018": "Spijkerman JM et al. T2 mapping of cerebrospinal fluid: 3 T versus 7 T. "
                      "MAGMA 2018;31:415-424.",
    "debazelaire2004": "de Bazelaire CMJ et al. MR imaging relaxation times of abdominal and "
                       "pelvic tissues measured in vivo at 3.0 T: preliminary results. "
                       "Radiology 2004;230:652-659 (subcutaneous fat, 1.5 T and 3 T).",
    "jordan2013": "Jordan CD et al. Musculoskeletal MRI at 3.0 T and 7.0 T: a comparison of "
                  "relaxation times and image contrast. Eur J Radiol 2013;82:734-739.",
    "gold2004": "Gold GE et al. Musculoskeletal MRI at 3.0 T: relaxation times and image "
                "contrast. AJR 2004;183:343-351 (bone marrow, 1.5 T and 3 T).",
    "krishnamurthy2014": "Krishnamurthy LC et al. Dependence of blood T2 on oxygenation at 7 T: "
                         "in vitro calibration and in vivo application. Magn Reson Med "
                         "2014;71:2035-2042.",
    "hamilton2011": "Hamilton G et al. In vivo characterization of the liver fat 1H MR spectrum. "
                    "NMR Biomed 2011;24:784-790 (6-peak model as used by the ISMRM fat-water "
                    "toolbox: ppm relative to water and relative amplitudes).",
    "du2010": "Du J et al. Qualitative and quantitative ultrashort echo time (UTE) imaging of "
              "cortical bone. J Magn Reson 2010;207:304-311 (cortical bone T1 and T2*).",
    "techawiboonwong2008": "Techawiboonwong A et al. Cortical bone water: in vivo quantification "
                           "with ultrashort echo-time MR imaging. Radiology 2008;248:824-833.",
    "tofts2003": "Tofts PS (ed.). Quantitative MRI of the Brain. Wiley 2003, ch. 4 (water "
                 "content of white matter ~0.69-0.71, grey matter ~0.80, CSF 1.0).",
    "holz2000": "Holz M, Heil SR, Sacco A. Temperature-dependent self-diffusion coefficients of "
                "water. Phys Chem Chem Phys 2000;2:4740-4742 (free water at 37 C ~3.0e-9 m^2/s).",
    "helenius2002": "Helenius J et al. Diffusion-weighted MR imaging in normal human brains in "
                    "various age groups. AJNR 2002;23:194-199 (ADC of grey and white matter).",
    "vrenken2006": "Vrenken H et al. Whole-brain T1 mapping in multiple sclerosis: global changes "
                   "of normal-appearing gray and white matter. Radiology 2006;240:811-820 "
                   "(lesion T1 at 1.5 T).",
    "karampinos2018": "Karampinos DC et al. Quantitative MRI and spectroscopy of bone marrow. "
                      "J Magn Reson Imaging 2018;47:332-353 (adult yellow marrow fat fraction).",
    "water_reference": "Chemical shifts are relative to water: a water-like tissue has one "
                       "peak at 0 ppm by definition.",
    "assumed": "Assumption made for simulation where no in vivo value was found; the value's "
               "note says what was assumed. Replace it for quantitative work.",
})

#: The 6-peak fat spectrum (Hamilton 2011; ISMRM fat-water toolbox): (ppm relative to
#: water, relative amplitude); amplitudes are normalised to sum to 1.
_HAMILTON_PPM = (-3.80, -3.40, -2.60, -1.94, -0.39, 0.60)
_HAMILTON_AMP = (0.087, 0.693, 0.128, 0.004, 0.039, 0.048)
FAT_SPECTRUM_HAMILTON: tuple[tuple[float, float], ...] = tuple(
    (p, a / sum(_HAMILTON_AMP)) for p, a in zip(_HAMILTON_PPM, _HAMILTON_AMP, strict=True)
)


def _field_key(b0: float) -> float:
    return round(float(b0), 4)


@dataclasses.dataclass(frozen=True)
class Tissue:
    """One tissue: field-dependent relaxation times and field-independent PD, ADC, spectrum.

    Args:
        name: canonical name (lower case, ``snake_case``).
        pd: relative proton density [a.u.], water = 1, >= 0.
        t1: {b0 [T]: T1 [s]} (> 0, ``inf`` allowed).
        t2: {b0 [T]: T2 [s]} (> 0, ``inf`` allowed).
        t2_star: {b0 [T]: T2* [s]} (0 < T2* <= T2).
        adc: apparent diffusion coefficient [m²/s], >= 0.
        spectrum: ((ppm, relative amplitude), ...) chemical shift components relative
            to water; amplitudes >= 0 and summing to 1. Default: one water peak at 0 ppm.
        aliases: other names accepted for this tissue.
        sources: {parameter or "parameter@b0": source key in `SOURCES`}.
        notes: free text (assumptions).

    Raises:
        ValueError: a value is out of range, T2* > T2, or a source key is unknown.
    """

    name: str
    pd: float
    t1: Mapping[float, float]
    t2: Mapping[float, float]
    t2_star: Mapping[float, float]
    adc: float = 0.0
    spectrum: tuple[tuple[float, float], ...] = ((0.0, 1.0),)
    aliases: tuple[str, ...] = ()
    sources: Mapping[str, str] = dataclasses.field(default_factory=dict)
    notes: str = ""

    def __post_init__(self):
        set_ = object.__setattr__
        for fld in ("t1", "t2", "t2_star"):
            d = {_field_key(k): float(v) for k, v in dict(getattr(self, fld)).items()}
            set_(self, fld, MappingProxyType(d))
        set_(self, "spectrum", tuple((float(p), float(a)) for p, a in self.spectrum))
        set_(self, "aliases", tuple(self.aliases))
        set_(self, "sources", MappingProxyType(dict(self.sources)))
        name = self.name
        if not isinstance(name, str) or not name:
            raise ValueError(f"Tissue.name must be a non-empty string, got {name!r}")
        if not (math.isfinite(self.pd) and self.pd >= 0):
            raise ValueError(f"tissue {name!r}: pd must be finite and >= 0, got {self.pd}")
        if not (math.isfinite(self.adc) and self.adc >= 0):
            raise ValueError(f"tissue {name!r}: adc must be finite and >= 0 [m^2/s], got {self.adc}")
        for fld in ("t1", "t2", "t2_star"):
            for b0, v in getattr(self, fld).items():
                if math.isnan(v) or v <= 0:
                    raise ValueError(f"tissue {name!r}: {fld} at {b0} T must be > 0 [s] (inf allowed), got {v}")
        for b0, t2s in self.t2_star.items():
            t2 = self.t2.get(b0)
            if t2 is not None and t2s > t2 * (1 + 1e-12):
                raise ValueError(f"tissue {name!r}: t2_star {t2s} s exceeds t2 {t2} s at {b0} T")
        if not self.spectrum:
            raise ValueError(f"tissue {name!r}: spectrum needs at least one (ppm, amplitude) peak")
        amps = [a for _, a in self.spectrum]
        if any(not math.isfinite(a) or a < 0 for a in amps) or abs(sum(amps) - 1) > 1e-6:
            raise ValueError(f"tissue {name!r}: spectrum amplitudes must be >= 0 and sum to 1, got {amps}")
        for key, src in self.sources.items():
            if src not in SOURCES:
                raise ValueError(f"tissue {name!r}: source {src!r} for {key!r} is not a key of SOURCES")

    @property
    def fields(self) -> tuple[float, ...]:
        """Fields [T] at which T1, T2 and T2* are all known."""
        return tuple(sorted(set(self.t1) & set(self.t2) & set(self.t2_star)))

    def _field(self, b0: float) -> float:
        b0 = float(b0)
        if not (math.isfinite(b0) and b0 > 0):
            raise ValueError(f"b0 must be a positive field strength [T], got {b0}")
        known = self.fields
        exact = _field_key(b0)
        if exact in known:
            return exact
        near = [f for f in known if abs(f - b0) <= FIELD_TOLERANCE]
        if near:
            return min(near, key=lambda f: abs(f - b0))
        raise ValueError(
            f"tissue {self.name!r} has no T1/T2/T2* values at b0 = {b0:g} T (known fields: "
            f"{', '.join(f'{f:g} T' for f in known) or 'none'}); mritwin does not interpolate "
            f"between fields: add values with Tissue.with_values(b0={b0:g}, t1=..., t2=..., t2_star=...)"
        )

    def parameters(self, b0: float = 3.0) -> dict:
        """Parameters at field ``b0`` [T] (SI).

        Returns:
            dict with ``name``, ``b0`` (the tabulated field used) [T], ``pd``, ``t1``,
            ``t2``, ``t2_star``, ``t2_prime`` (``1/T2' = 1/T2* - 1/T2``; ``inf`` when
            T2* = T2) [s], ``adc`` [m²/s], ``chemical_shift_ppm`` (amplitude-weighted
            main peak), ``spectrum_ppm`` and ``spectrum_amplitude`` (tuples), and
            ``sources`` ({parameter: source key}).

        Raises:
            ValueError: no values at ``b0`` (within `FIELD_TOLERANCE`).
        """
        f = self._field(b0)
        t1, t2, t2s = self.t1[f], self.t2[f], self.t2_star[f]
        rate = 1.0 / t2s - (0.0 if math.isinf(t2) else 1.0 / t2)
        t2p = math.inf if rate <= 1e-12 * (1.0 / t2s) else 1.0 / rate
        main = max(self.spectrum, key=lambda pa: pa[1])[0]

        def src(p):
            default = "water_reference" if p == "spectrum" and self.spectrum == ((0.0, 1.0),) else "assumed"
            return self.sources.get(f"{p}@{f:g}", self.sources.get(p, default))

        return {
            "name": self.name,
            "b0": f,
            "pd": self.pd,
            "t1": t1,
            "t2": t2,
            "t2_star": t2s,
            "t2_prime": t2p,
            "adc": self.adc,
            "chemical_shift_ppm": main,
            "spectrum_ppm": tuple(p for p, _ in self.spectrum),
            "spectrum_amplitude": tuple(a for _, a in self.spectrum),
            "sources": {p: src(p) for p in ("pd", "t1", "t2", "t2_star", "adc", "spectrum")},
        }

    def with_values(self, *, b0: float | None = None, source: str = "assumed", **changes) -> Tissue:
        """A copy with changed values.

        With ``b0``, ``t1``/``t2``/``t2_star`` set (or add) the value at that field;
        without it, they replace the whole {b0: value} mapping. Other keywords (``pd``,
        ``adc``, ``spectrum``, ``name``, ``aliases``, ``notes``) replace the field.
        """
        new = dict(changes)
        sources = dict(self.sources)
        for fld in ("t1", "t2", "t2_star"):
            if fld in new and b0 is not None:
                d = dict(getattr(self, fld))
                d[_field_key(b0)] = new[fld]
                new[fld] = d
                sources[f"{fld}@{_field_key(b0):g}"] = source
        for fld in ("pd", "adc", "spectrum"):
            if fld in new:
                sources[fld] = source
        new.setdefault("sources", sources)
        return dataclasses.replace(self, **new)


class TissueLibrary:
    """An immutable collection of `Tissue` s, looked up by name or alias.

    `DEFAULT_LIBRARY` holds the built-in tissues; derive your own with `add` or
    `override` (both return a new library and leave the original unchanged).

    Args:
        tissues: the tissues. Names and aliases must be unique (case-insensitive).
    """

    def __init__(self, tissues=()):
        self._tissues: dict[str, Tissue] = {}
        self._alias: dict[str, str] = {}
        for t in tissues:
            if not isinstance(t, Tissue):
                raise TypeError(f"TissueLibrary takes Tissue objects, got {type(t).__name__}")
            for key in dict.fromkeys(_norm(k) for k in (t.name, *t.aliases)):
                k = key
                if k in self._alias:
                    raise ValueError(f"tissue name or alias {key!r} is used twice in the library")
                self._alias[k] = t.name
            self._tissues[t.name] = t

    def __contains__(self, name) -> bool:
        return isinstance(name, str) and _norm(name) in self._alias

    def __iter__(self):
        return iter(self._tissues.values())

    def __len__(self) -> int:
        return len(self._tissues)

    def __repr__(self) -> str:
        return f"TissueLibrary({', '.join(self._tissues)})"

    @property
    def names(self) -> tuple[str, ...]:
        """Canonical tissue names."""
        return tuple(self._tissues)

    def get(self, name: str) -> Tissue:
        """The tissue called ``name`` (or with that alias).

        Raises:
            ValueError: unknown name (the message lists the known ones).
        """
        if not isinstance(name, str):
            raise TypeError(f"tissue name must be a string, got {type(name).__name__}")
        try:
            return self._tissues[self._alias[_norm(name)]]
        except KeyError:
            raise ValueError(
                f"unknown tissue {name!r}; known tissues: {', '.join(self._tissues)}"
            ) from None

    def parameters(self, name: str, b0: float = 3.0) -> dict:
        """``self.get(name).parameters(b0)``."""
        return self.get(name).parameters(b0)

    def add(self, tissue: Tissue, *, replace: bool = False) -> TissueLibrary:
        """A new library with ``tissue`` added (``replace=True`` replaces a same-named one)."""
        old = [t for t in self._tissues.values() if not (replace and t.name == tissue.name)]
        return TissueLibrary([*old, tissue])

    def override(self, name: str, *, b0: float | None = None, source: str = "assumed",
                 **changes) -> TissueLibrary:
        """A new library in which tissue ``name`` has changed values (see `Tissue.with_values`)."""
        t = self.get(name)
        return self.add(t.with_values(b0=b0, source=source, **changes), replace=True)

    def table(self, b0: float = 3.0) -> list[dict]:
        """Parameters of every tissue with values at ``b0`` (for docs and printing)."""
        out = []
        for t in self._tissues.values():
            try:
                out.append(t.parameters(b0))
            except ValueError:
                pass
        return out


def _norm(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def _t(name, pd, t1, t2, t2s, adc, *, spectrum=((0.0, 1.0),), aliases=(), sources=None, notes=""):
    return Tissue(name=name, pd=pd, t1=dict(zip(FIELDS, t1, strict=True)), t2=dict(zip(FIELDS, t2, strict=True)),
                  t2_star=dict(zip(FIELDS, t2s, strict=True)), adc=adc, spectrum=spectrum,
                  aliases=aliases, sources=sources or {}, notes=notes)


def _src(**kw) -> dict:
    """Sources: keyword ``t1_7`` means "t1@7", plain names apply to all fields."""
    out = {}
    for k, v in kw.items():
        if "_" in k and k.rsplit("_", 1)[1] in ("15", "3", "7"):
            p, f = k.rsplit("_", 1)
            out[f"{p}@{ {'15': '1.5', '3': '3', '7': '7'}[f] }"] = v
        else:
            out[k] = v
    return out


_mar_water = 0.35  # yellow marrow water fraction (adult, karampinos2018: fat fraction ~0.6-0.8)
_MARROW_SPECTRUM = ((0.0, _mar_water),) + tuple((p, a * (1 - _mar_water)) for p, a in FAT_SPECTRUM_HAMILTON)

#                        name             pd    T1 (1.5, 3, 7) [s]       T2 [s]                  T2* [s]                 ADC [m²/s]
_DEFAULT_TISSUES = (
    _t("white_matter", 0.69, (0.884, 1.084, 1.220), (0.072, 0.069, 0.046), (0.0662, 0.0532, 0.0268), 0.70e-9,
       aliases=("wm", "white"),
       sources=_src(pd="tofts2003", t1="stanisz2005", t1_7="rooney2007", t2="stanisz2005",
                    t2_7="cox2010", t2_star="peters2007", adc="helenius2002")),
    _t("gray_matter", 0.80, (1.124, 1.820, 2.132), (0.095, 0.099, 0.055), (0.0840, 0.0660, 0.0332), 0.83e-9,
       aliases=("gm", "grey_matter", "gray", "grey", "cortex"),
       sources=_src(pd="tofts2003", t1="stanisz2005", t1_7="rooney2007", t2="stanisz2005",
                    t2_7="cox2010", t2_star="peters2007", adc="helenius2002")),
    _t("csf", 1.00, (4.070, 4.163, 4.425), (2.000, 1.650, 0.800), (0.400, 0.400, 0.200), 3.0e-9,
       aliases=("cerebrospinal_fluid", "ventricles", "water"),
       sources=_src(pd="tofts2003", t1="rooney2007", t2_15="assumed", t2_3="spijkerman2018",
                    t2_7="spijkerman2018", t2_star="assumed", adc="holz2000"),
       notes="CSF T1 taken as field-independent ~4.1-4.4 s; T2 at 1.5 T and CSF T2* "
             "(macroscopic-field dominated, no stable in vivo value) are assumptions."),
    _t("fat", 0.90, (0.343, 0.382, 0.580), (0.058, 0.068, 0.046), (0.030, 0.025, 0.012), 0.01e-9,
       spectrum=FAT_SPECTRUM_HAMILTON, aliases=("adipose", "subcutaneous_fat", "lipid"),
       sources=_src(pd="assumed", t1="debazelaire2004", t1_7="jordan2013", t2="debazelaire2004",
                    t2_7="jordan2013", t2_star="assumed", adc="assumed", spectrum="hamilton2011"),
       notes="pd 0.9 (fat proton density relative to water) and the very low ADC of lipids "
             "are assumptions; T2* of fat assumed (dominated by the multi-peak spectrum, "
             "which is modelled explicitly)."),
    _t("muscle", 0.80, (1.008, 1.412, 1.553), (0.044, 0.050, 0.023), (0.030, 0.028, 0.017), 1.5e-9,
       aliases=("skeletal_muscle",),
       sources=_src(pd="assumed", t1="stanisz2005", t1_7="jordan2013", t2="stanisz2005",
                    t2_7="jordan2013", t2_star="assumed", adc="assumed")),
    _t("skin", 0.70, (0.700, 0.900, 1.100), (0.040, 0.035, 0.030), (0.030, 0.025, 0.018), 1.0e-9,
       aliases=("dermis", "scalp", "dura", "dura_mater"),
       sources=_src(pd="assumed", t1="assumed", t2="assumed", t2_star="assumed", adc="assumed"),
       notes="Dense collagenous connective tissue (dermis; also used for dura mater): "
             "approximate values assumed between muscle and tendon; no single in vivo source."),
    _t("skull", 0.15, (0.200, 0.223, 0.260), (0.00050, 0.00050, 0.00045), (0.00039, 0.00039, 0.00030), 0.0,
       aliases=("bone", "cortical_bone", "skull_bone"),
       sources=_src(pd="techawiboonwong2008", t1="du2010", t1_15="assumed", t1_7="assumed",
                    t2="assumed", t2_star="du2010", t2_star_15="assumed", t2_star_7="assumed",
                    adc="assumed"),
       notes="Cortical bone: ~15% water by volume, T2* ~0.4 ms at 3 T (invisible at "
             "clinical echo times); 1.5 T / 7 T values and T2 assumed."),
    _t("marrow", 0.90, (0.288, 0.365, 0.550), (0.165, 0.133, 0.060), (0.030, 0.025, 0.012), 0.1e-9,
       spectrum=_MARROW_SPECTRUM, aliases=("bone_marrow", "yellow_marrow"),
       sources=_src(pd="assumed", t1="gold2004", t1_7="assumed", t2="gold2004", t2_7="assumed",
                    t2_star="assumed", adc="assumed", spectrum="karampinos2018"),
       notes="Yellow marrow: one water peak (35 %) plus the Hamilton fat spectrum (65 %), "
             "all sharing one T1/T2."),
    _t("blood", 0.85, (1.441, 1.932, 2.587), (0.290, 0.275, 0.068), (0.050, 0.040, 0.020), 1.6e-9,
       aliases=("arterial_blood",),
       sources=_src(pd="assumed", t1="stanisz2005", t1_7="rooney2007", t2="stanisz2005",
                    t2_7="krishnamurthy2014", t2_star="assumed", adc="assumed"),
       notes="Blood at rest (no flow); T2* assumed."),
    _t("vessels", 0.85, (1.441, 1.932, 2.587), (0.290, 0.275, 0.068), (0.050, 0.040, 0.020), 1.6e-9,
       aliases=("vessel", "vein", "sinus"),
       sources=_src(pd="assumed", t1="stanisz2005", t1_7="rooney2007", t2="stanisz2005",
                    t2_7="krishnamurthy2014", t2_star="assumed", adc="assumed"),
       notes="Vessel lumen modelled as blood at rest (same values as 'blood')."),
    _t("ms_lesion", 0.80, (1.200, 1.450, 1.700), (0.120, 0.110, 0.075), (0.080, 0.065, 0.035), 1.1e-9,
       aliases=("lesion", "wm_lesion", "white_matter_lesion"),
       sources=_src(pd="assumed", t1_15="vrenken2006", t1_3="assumed", t1_7="assumed",
                    t2="assumed", t2_star="assumed", adc="assumed"),
       notes="Chronic MS lesion example; lesion values vary widely. T1 at 1.5 T from "
             "Vrenken 2006, other values assumed (longer T1/T2 and higher ADC than WM)."),
    _t("edema", 0.88, (1.400, 1.750, 2.100), (0.160, 0.150, 0.100), (0.090, 0.075, 0.040), 1.5e-9,
       aliases=("oedema", "vasogenic_edema"),
       sources=_src(pd="assumed", t1="assumed", t2="assumed", t2_star="assumed", adc="assumed"),
       notes="Vasogenic edema example (assumed: between WM and CSF)."),
    _t("tumor", 0.85, (1.300, 1.650, 1.950), (0.110, 0.100, 0.070), (0.060, 0.050, 0.028), 1.0e-9,
       aliases=("tumour", "glioma"),
       sources=_src(pd="assumed", t1="assumed", t2="assumed", t2_star="assumed", adc="assumed"),
       notes="Solid tumour example (assumed values)."),
)

#: The built-in tissues. Immutable: derive variants with ``DEFAULT_LIBRARY.add`` / ``override``.
DEFAULT_LIBRARY = TissueLibrary(_DEFAULT_TISSUES)


def tissue_parameters(name: str, b0: float = 3.0, *, library: TissueLibrary | None = None) -> dict:
    """Tissue parameters at field ``b0`` [T], in SI units.

    Args:
        name: tissue name or alias (``"white_matter"``/``"wm"``, ``"gray_matter"``/
            ``"grey_matter"``/``"gm"``, ``"csf"``, ``"fat"``, ``"muscle"``, ``"skin"``,
            ``"skull"``, ``"marrow"``, ``"blood"``, ``"vessels"``, ``"ms_lesion"``,
            ``"edema"``, ``"tumor"``).
        b0: main field [T]; 1.5, 3 or 7 (± `FIELD_TOLERANCE`) for the built-in tissues.
        library: the library to look in (default `DEFAULT_LIBRARY`).

    Returns:
        dict with at least ``pd`` [a.u.], ``t1``, ``t2``, ``t2_star``, ``t2_prime`` [s],
        ``adc`` [m²/s], ``chemical_shift_ppm`` and the spectrum (see `Tissue.parameters`).

    Raises:
        ValueError: unknown tissue, or no values at ``b0``.

    Example:
        >>> tissue_parameters("csf", b0=3.0)["t2"]
        1.65
    """
    return (DEFAULT_LIBRARY if library is None else library).parameters(name, b0)
