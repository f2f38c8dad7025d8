"""Rolling-element bearing geometry and its characteristic defect frequencies.

With shaft rotation frequency f_r (Hz), n rolling elements of diameter d on pitch diameter D and
contact angle phi, the standard kinematic formulas (no slip) are

    BPFO = (n / 2) * f_r * (1 - (d / D) cos phi)          ball pass frequency, outer race
    BPFI = (n / 2) * f_r * (1 + (d / D) cos phi)          ball pass frequency, inner race
    BSF  = (D / (2 d)) * f_r * (1 - ((d / D) cos phi)^2)  ball spin frequency
    FTF  = (1 / 2) * f_r * (1 - (d / D) cos phi)          fundamental train (cage) frequency
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class BearingGeometry:
    """Dimensions that fix the defect frequencies, in millimetres and degrees."""

    name: str
    n_balls: int
    ball_diameter_mm: float
    pitch_diameter_mm: float
    contact_angle_deg: float = 0.0

    def _ratio(self) -> float:
        return self.ball_diameter_mm / self.pitch_diameter_mm * math.cos(math.radians(self.contact_angle_deg))

    def orders(self) -> dict[str, float]:
        """Defect frequencies in shaft orders (multiples of the shaft rotation frequency)."""
        r = self._ratio()
        return {
            "bpfo": self.n_balls / 2.0 * (1.0 - r),
            "bpfi": self.n_balls / 2.0 * (1.0 + r),
            "bsf": self.pitch_diameter_mm / (2.0 * self.ball_diameter_mm) * (1.0 - r * r),
            "ftf": 0.5 * (1.0 - r),
        }

    def frequencies(self, shaft_hz: float) -> dict[str, float]:
        """Defect frequencies in Hz at a given shaft speed."""
        return {k: v * shaft_hz for k, v in self.orders().items()}


# SKF 6205-2RS JEM: the drive-end bearing of the CWRU test rig.
BEARING_6205 = BearingGeometry("6205", n_balls=9, ball_diameter_mm=7.94, pitch_diameter_mm=39.04)
# SKF 6203-2RS JEM: the fan-end bearing of the CWRU test rig.
BEARING_6203 = BearingGeometry("6203", n_balls=8, ball_diameter_mm=6.746, pitch_diameter_mm=28.5)

GEOMETRIES: dict[str, BearingGeometry] = {g.name: g for g in (BEARING_6205, BEARING_6203)}
