"""The soak's short variant (benchmarks/soak.py --quick): faults everywhere, then DESIGN.md's invariants."""

from __future__ import annotations

import pytest

from benchmarks.soak import SoakConfig, run_soak


@pytest.mark.timeout(180)
async def test_short_soak_delivers_every_answer_once_and_never_over_a_human() -> None:
    report = await run_soak(SoakConfig.quick())
    table = report.table()
    assert report.messages > 100, table
    assert report.faults["worker_kill9"] >= 1 and report.faults["redis_restart"] == 1, table
    assert report.faults["takeover"] >= 1, table
    assert report.duplicates == 0, table
    assert report.never_answered == 0, table
    assert report.after_takeover == 0, table
    assert all(verdict == "ok" for verdict in report.invariants.values()), table
