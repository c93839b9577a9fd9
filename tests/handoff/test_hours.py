"""AGENT_HOURS parsing and arithmetic (time zones, overnight windows, DST, closed time)."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from bot.errors import ConfigError
from bot.hours import AgentHours
from bot.settings import load_settings

BERLIN = ZoneInfo("Europe/Berlin")


def at(text: str, zone: ZoneInfo | None = None) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=zone or UTC).timestamp()


def test_weekday_hours_in_a_time_zone() -> None:
    hours = AgentHours.parse("Mon-Fri 09:00-18:00 Europe/Berlin")
    assert hours.is_open(at("2026-11-20 09:00", BERLIN))  # a Friday
    assert hours.is_open(at("2026-11-20 17:59", BERLIN))
    assert not hours.is_open(at("2026-11-20 18:00", BERLIN))
    assert not hours.is_open(at("2026-11-21 12:00", BERLIN))  # Saturday
    assert hours.next_open(at("2026-11-21 12:00", BERLIN)) == datetime(2026, 11, 23, 9, 0, tzinfo=BERLIN)
    assert hours.describe_next(at("2026-11-21 12:00", BERLIN)) == "on Monday at 09:00 (Europe/Berlin time)"
    assert hours.describe_next(at("2026-11-19 20:00", BERLIN)) == "tomorrow at 09:00 (Europe/Berlin time)"
    assert hours.describe_next(at("2026-11-19 07:00", BERLIN)) == "today at 09:00 (Europe/Berlin time)"


def test_several_groups_overnight_windows_and_default_utc() -> None:
    hours = AgentHours.parse("Mon-Fri 22:00-06:00, Sat+Sun 10:00-14:00")
    assert hours.is_open(at("2026-11-20 23:30"))  # Friday night
    assert hours.is_open(at("2026-11-21 05:59"))  # ... into Saturday morning
    assert not hours.is_open(at("2026-11-21 06:00"))
    assert hours.is_open(at("2026-11-22 13:00"))  # Sunday
    assert hours.describe_next(at("2026-11-21 07:00")) == "today at 10:00"


def test_only_open_time_counts_toward_a_wait() -> None:
    hours = AgentHours.parse("Mon-Fri 09:00-18:00 UTC")
    # 15 minutes asked for at 17:55 on Friday: 5 minutes on Friday, 10 on Monday morning.
    deadline = hours.after_open_seconds(at("2026-11-20 17:55"), 900)
    assert deadline == at("2026-11-23 09:10")
    assert hours.after_open_seconds(at("2026-11-23 10:00"), 900) == at("2026-11-23 10:15")


def test_daylight_saving_keeps_the_wall_clock() -> None:
    hours = AgentHours.parse("Daily 09:00-10:00 Europe/Berlin")
    # Berlin moves from CET (UTC+1) to CEST (UTC+2) in the night to Sunday 2026-03-29.
    saturday = hours.next_open(at("2026-03-28 07:00", BERLIN))
    sunday = hours.next_open(at("2026-03-28 12:00", BERLIN))
    assert saturday.timestamp() == at("2026-03-28 08:00")
    assert sunday.timestamp() == at("2026-03-29 07:00")
    assert (sunday.hour, sunday.minute) == (9, 0)
    # Half an hour on Saturday plus half an hour on Sunday; the lost night hour changes nothing.
    assert hours.after_open_seconds(at("2026-03-28 09:30", BERLIN), 3600) == at("2026-03-29 09:30", BERLIN)


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "Mon-Fri",
        "Someday 09:00-10:00",
        "Mon 09:00-09:00",
        "Mon 25:00-26:00",
        "Mon 9-17",
        "Mon 09:00-10:00 Mars/Base",
    ],
)
def test_malformed_hours_are_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        AgentHours.parse(spec)


def test_settings_name_a_malformed_agent_hours() -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(None, agent_hours="Mon-Fri 9 to 5")
    assert any(line.startswith("AGENT_HOURS is malformed") for line in refused.value.lines)
    assert load_settings(None, agent_hours="Mon-Fri 09:00-18:00 Europe/Berlin").agent_hours
