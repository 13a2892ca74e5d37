"""Patient context of a twin: body size and vital signs (SI), e.g. read from a FHIR
bundle by `mritwin.io.fhir.read_fhir_bundle`.

It feeds the SAR model (`PatientContext.body_model`) and gives the cardiac and
respiratory periods that periodic motion models use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["PatientContext", "PLAUSIBLE_RANGES", "SEXES"]

#: Accepted ranges (inclusive, SI) of the patient quantities: values outside are
#: rejected as absurd (a wrong unit or a typo), never clamped.
PLAUSIBLE_RANGES = {
    "mass": (0.5, 500.0),  # [kg]
    "height": (0.2, 3.0),  # [m]
    "heart_rate": (10.0 / 60.0, 400.0 / 60.0),  # [Hz] = 10 to 400 beats/min
    "respiratory_rate": (1.0 / 60.0, 150.0 / 60.0),  # [Hz] = 1 to 150 breaths/min
    "age": (0.0, 150.0),  # [years]
}

#: FHIR ``AdministrativeGender`` codes.
SEXES = ("female", "male", "other", "unknown")

_UNITS = {"mass": "kg", "height": "m", "heart_rate": "Hz", "respiratory_rate": "Hz", "age": "years"}


def check_plausible(name: str, value) -> float:
    """Return ``value`` as a float if it is a finite number inside `PLAUSIBLE_RANGES`.

    Raises:
        ValueError: not a real number, not finite, or outside the range (the message
            names the quantity, the value and the accepted range, in SI).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number [{_UNITS[name]}], got {value!r} ({type(value).__name__})")
    v = float(value)
    lo, hi = PLAUSIBLE_RANGES[name]
    if not math.isfinite(v) or not lo <= v <= hi:
        raise ValueError(f"{name} = {v:g} {_UNITS[name]} is outside the plausible range "
                         f"[{lo:g}, {hi:g}] {_UNITS[name]}")
    return v


@dataclass(frozen=True)
class PatientContext:
    """Body size and vital signs of one patient (SI; ``None`` where unknown).

    Args:
        mass: body mass [kg] (0.5 to 500).
        height: body height [m] (0.2 to 3).
        heart_rate: heart rate [Hz] (beats per second; 72 beats/min = 1.2 Hz).
        respiratory_rate: respiratory rate [Hz] (breaths per second).
        age: age in completed years [years].
        sex: FHIR administrative gender: ``"female"``, ``"male"``, ``"other"`` or
            ``"unknown"``.
        patient_id: identifier of the source record (e.g. the FHIR ``Patient.id``).

    Raises:
        ValueError: a value is not a finite number or outside `PLAUSIBLE_RANGES`, or
            ``sex`` is not one of `SEXES`.

    Example:
        >>> ctx = PatientContext(mass=80.0, height=1.8, heart_rate=1.2, respiratory_rate=0.25)
        >>> round(ctx.cardiac_period, 4), ctx.respiratory_period
        (0.8333, 4.0)
        >>> ctx.body_model().patient_mass
        80.0
    """

    mass: float | None = None
    height: float | None = None
    heart_rate: float | None = None
    respiratory_rate: float | None = None
    age: float | None = None
    sex: str | None = None
    patient_id: str | None = None

    def __post_init__(self):
        for name in PLAUSIBLE_RANGES:
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, check_plausible(name, v))
        if self.sex is not None and self.sex not in SEXES:
            raise ValueError(f"sex must be one of {', '.join(SEXES)} (FHIR AdministrativeGender), got {self.sex!r}")
        if self.patient_id is not None and not isinstance(self.patient_id, str):
            raise ValueError(f"patient_id must be a string, got {type(self.patient_id).__name__}")

    def _require(self, name: str, use: str) -> float:
        v = getattr(self, name)
        if v is None:
            who = f"patient {self.patient_id!r}" if self.patient_id else "the patient"
            raise ValueError(f"{use} needs {name}, which is not known for {who}")
        return v

    @property
    def cardiac_period(self) -> float:
        """Duration of one heart beat, ``1 / heart_rate`` [s].

        Raises:
            ValueError: the heart rate is not known.
        """
        return 1.0 / self._require("heart_rate", "cardiac_period")

    @property
    def respiratory_period(self) -> float:
        """Duration of one breath, ``1 / respiratory_rate`` [s].

        Raises:
            ValueError: the respiratory rate is not known.
        """
        return 1.0 / self._require("respiratory_rate", "respiratory_period")

    def body_model(self, **overrides):
        """The SAR `BodyModel` of this patient (its mass and, when known, its height).

        Args:
            **overrides: other `BodyModel` fields (``coil``, ``conductivity``, ...);
                ``patient_mass`` and ``patient_height`` come from the patient.

        Returns:
            A `mritwin.sequence.safety.BodyModel` (height 1.75 m, the model's default,
            when the height is unknown).

        Raises:
            ValueError: the mass is not known, or an override names the patient's mass or
                height.
        """
        # Imported here: the twin stage does not import the sequence stage at module level.
        from ..sequence.safety import BodyModel

        for k in ("patient_mass", "patient_height"):
            if k in overrides:
                raise ValueError(f"body_model() takes {k} from the patient; do not pass it")
        mass = self._require("mass", "body_model()")
        if self.height is not None:
            overrides["patient_height"] = self.height
        return BodyModel(patient_mass=mass, **overrides)
