"""Agent business hours (`AGENT_HOURS`, e.g. `Mon-Fri 09:00-18:00 Europe/Berlin`).

Grammar: one or more `<days> <HH:MM>-<HH:MM>` groups separated by commas, then an optional IANA time
zone (default UTC). Days are `Mon`..`Sun`, ranges (`Mon-Fri`, `Fri-Mon` wraps), lists joined by `+`
(`Mon+Wed`), or `Daily`. An end time before the start time runs past midnight; `24:00` ends a day.

    Mon-Fri 09:00-18:00, Sat 10:00-14:00 Europe/Berlin
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TIME_RANGE = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")
# How far ahead to look for the next opening; a spec always opens at least once a week.
_HORIZON_DAYS = 8


@dataclass(frozen=True)
class Window:
    """Open on `day` (0 = Monday) from `start` minutes after local midnight, for `minutes`."""

    day: int
    start: int
    minutes: int


def _day(name: str) -> int:
    key = name.strip().lower()[:3]
    if key not in DAYS:
        raise ValueError(f"unknown day {name!r} (use Mon, Tue, Wed, Thu, Fri, Sat, Sun)")
    return DAYS.index(key)


def _days(spec: str) -> list[int]:
    if spec.lower() in {"daily", "everyday", "mon-sun"}:
        return list(range(7))
    days: list[int] = []
    for part in spec.split("+"):
        first, sep, last = part.partition("-")
        if not sep:
            days.append(_day(first))
            continue
        start, end = _day(first), _day(last)
        days += [(start + i) % 7 for i in range((end - start) % 7 + 1)]
    return days


def _minutes(hours: str, minutes: str) -> int:
    h, m = int(hours), int(minutes)
    if m > 59 or h > 24 or (h == 24 and m):
        raise ValueError(f"{hours}:{minutes} is not a time of day")
    return h * 60 + m


@dataclass(frozen=True)
class AgentHours:
    windows: tuple[Window, ...]
    zone: ZoneInfo
    spec: str

    @classmethod
    def parse(cls, spec: str) -> AgentHours:
        return _parse(spec.strip())

    def _intervals(self, ts: float, days: int) -> list[tuple[float, float]]:
        """Open intervals as epoch seconds, from the local day before `ts` to `days` after it, merged."""
        first = datetime.fromtimestamp(ts, self.zone).date() - timedelta(days=1)
        spans: list[tuple[float, float]] = []
        for offset in range(days + 2):
            day = first + timedelta(days=offset)
            midnight = datetime.combine(day, time(0), self.zone)
            for window in self.windows:
                if window.day != day.weekday():
                    continue
                # Wall-clock arithmetic in the zone (a DST change keeps "09:00" at 09:00), then epoch
                # seconds, because aware datetimes sharing a zone compare and subtract by wall clock.
                opens = (midnight + timedelta(minutes=window.start)).timestamp()
                closes = (midnight + timedelta(minutes=window.start + window.minutes)).timestamp()
                spans.append((opens, closes))
        spans.sort()
        merged: list[tuple[float, float]] = []
        for opens, closes in spans:
            if merged and opens <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], closes))
            else:
                merged.append((opens, closes))
        return merged

    def is_open(self, ts: float) -> bool:
        return any(opens <= ts < closes for opens, closes in self._intervals(ts, 1))

    def next_open(self, ts: float) -> datetime:
        """When agents are (next) available: `ts` itself while open, else the next opening (local time)."""
        for opens, closes in self._intervals(ts, _HORIZON_DAYS):
            if closes > ts:
                return datetime.fromtimestamp(max(opens, ts), self.zone)
        raise AssertionError("a parsed spec opens at least once a week")  # pragma: no cover

    def after_open_seconds(self, ts: float, seconds: float) -> float:
        """The instant at which `seconds` of open time have passed since `ts` (closed time does not count)."""
        now, left = ts, seconds
        while True:
            for opens, closes in self._intervals(now, _HORIZON_DAYS):
                if closes <= now:
                    continue
                begin = max(opens, now)
                if closes - begin >= left:
                    return begin + left
                left -= closes - begin
                now = closes

    def describe_next(self, ts: float) -> str:
        """`today at 09:00`, `tomorrow at 09:00` or `on Monday at 09:00`, in the agents' time zone."""
        when = self.next_open(ts)
        today = datetime.fromtimestamp(ts, self.zone).date()
        clock = when.strftime("%H:%M")
        zone = "" if self.zone.key == "UTC" else f" ({self.zone.key} time)"
        if when.date() == today:
            return f"today at {clock}{zone}"
        if when.date() == today + timedelta(days=1):
            return f"tomorrow at {clock}{zone}"
        return f"on {when.strftime('%A')} at {clock}{zone}"


@functools.lru_cache(maxsize=32)
def _parse(spec: str) -> AgentHours:
    if not spec:
        raise ValueError("empty; expected e.g. 'Mon-Fri 09:00-18:00 Europe/Berlin'")
    tokens = spec.replace(",", " , ").split()
    zone = ZoneInfo("UTC")
    if tokens and not _TIME_RANGE.match(tokens[-1]) and ("/" in tokens[-1] or tokens[-1].upper() == "UTC"):
        name = tokens.pop()
        try:
            zone = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {name!r}") from None
    groups: list[list[str]] = [[]]
    for token in tokens:
        if token == ",":
            groups.append([])
        else:
            groups[-1].append(token)
    windows: list[Window] = []
    for group in groups:
        if len(group) != 2:
            raise ValueError(f"expected '<days> <HH:MM>-<HH:MM>', got {' '.join(group)!r}")
        days, hours = group
        match = _TIME_RANGE.match(hours)
        if not match:
            raise ValueError(f"expected a time range like 09:00-18:00, got {hours!r}")
        start = _minutes(match[1], match[2])
        end = _minutes(match[3], match[4])
        if start in (end, 24 * 60):
            raise ValueError(f"empty time range {hours!r}")
        length = end - start if end > start else end + 24 * 60 - start
        windows += [Window(day, start, length) for day in _days(days)]
    return AgentHours(tuple(windows), zone, spec)
