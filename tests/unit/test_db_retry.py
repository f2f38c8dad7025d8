"""Writes that wait out a database restart: transient failures are retried with a growing pause, a
bad statement fails at once, and a database that stays away fails after the stated time."""

from __future__ import annotations

import time

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from device_agents import db


def _down() -> OperationalError:
    return OperationalError("SELECT 1", {}, Exception("terminating connection due to administrator command"))


def test_transient_failures_are_retried_until_the_database_is_back() -> None:
    calls: list[float] = []

    def write() -> str:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise _down()
        return "stored"

    assert db.retrying("a write", write, within_s=10) == "stored"
    assert len(calls) == 3 and calls[2] - calls[1] > calls[1] - calls[0]  # the pause grows


def test_a_bad_statement_is_not_retried() -> None:
    calls = []

    def write() -> None:
        calls.append(1)
        raise IntegrityError("INSERT", {}, Exception("duplicate key"))

    with pytest.raises(IntegrityError):
        db.retrying("a write", write)
    assert calls == [1]


def test_a_database_that_stays_away_fails_after_the_stated_time() -> None:
    t0 = time.monotonic()

    def write() -> None:
        raise _down()

    with pytest.raises(OperationalError):
        db.retrying("a write", write, within_s=1.0)
    assert 0.5 < time.monotonic() - t0 < 3.0


def test_engines_ping_their_pooled_connections(tmp_path) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    assert engine.pool._pre_ping is True


def test_an_error_raised_while_handling_a_database_outage_counts_as_one() -> None:
    from tuner.study import db_outage

    try:
        try:
            raise _down()
        except OperationalError:
            raise UnboundLocalError("cannot access local variable 'updated_state'") from None
    except UnboundLocalError as exc:
        assert db_outage(exc) is False  # `from None` hides the context: not claimed
    try:
        try:
            raise _down()
        except OperationalError:
            raise UnboundLocalError("cannot access local variable 'updated_state'")  # noqa: B904
    except UnboundLocalError as exc:
        assert db_outage(exc) is True
    assert db_outage(ValueError("a bug")) is False
