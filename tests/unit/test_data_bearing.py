"""Characteristic defect frequencies from the standard formulas, against published values."""

from __future__ import annotations

import pytest

from harness.data.bearing import BEARING_6203, BEARING_6205, BearingGeometry


def test_6205_orders_match_published_values() -> None:
    o = BEARING_6205.orders()
    assert o["bpfo"] == pytest.approx(3.585, abs=2e-3)
    assert o["bpfi"] == pytest.approx(5.415, abs=2e-3)
    assert o["bsf"] == pytest.approx(2.357, abs=2e-3)
    assert o["ftf"] == pytest.approx(0.398, abs=2e-3)


def test_6203_orders_match_published_values() -> None:
    o = BEARING_6203.orders()
    assert o["bpfo"] == pytest.approx(3.053, abs=5e-3)
    assert o["bpfi"] == pytest.approx(4.947, abs=5e-3)
    assert o["bsf"] == pytest.approx(1.994, abs=5e-3)
    assert o["ftf"] == pytest.approx(0.382, abs=5e-3)


def test_frequencies_scale_with_speed_and_satisfy_kinematic_identities() -> None:
    f = BEARING_6205.frequencies(30.0)
    assert f["bpfo"] + f["bpfi"] == pytest.approx(BEARING_6205.n_balls * 30.0)
    assert f["bpfo"] == pytest.approx(BEARING_6205.n_balls * f["ftf"])


def test_contact_angle_moves_frequencies() -> None:
    tilted = BearingGeometry("x", 9, 7.94, 39.04, contact_angle_deg=40.0)
    assert tilted.orders()["bpfo"] > BEARING_6205.orders()["bpfo"]
