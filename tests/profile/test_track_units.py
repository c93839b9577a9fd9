"""Pure parts of the profile loop: the pacing bucket, and mapping Braze `errors` to objects."""

from __future__ import annotations

import pytest

from bot.store.keys import partition_of
from bot.track import TokenBucket, TrackEntry, partition_for, rejected_objects


def test_no_3_second_window_carries_more_than_the_limit() -> None:
    now = [0.0]
    bucket = TokenBucket(30, clock=lambda: now[0])
    # 100 requests asked for at once: when may each go?
    starts = [bucket.reserve() for _ in range(100)]
    assert starts[:3] == [0.0, 0.0, 0.0]  # a small burst (a tenth of the limit)
    for first in starts:
        in_window = [t for t in starts if first <= t < first + 3.0]
        assert len(in_window) <= 30
    # ... and the steady rate uses the rest of the budget.
    assert len([t for t in starts if t <= 3.0 + 1e-9]) == 30


def test_the_bucket_refills_with_time_and_never_beyond_its_burst() -> None:
    now = [0.0]
    bucket = TokenBucket(3000, clock=lambda: now[0])
    assert all(bucket.reserve() == 0 for _ in range(300))
    assert bucket.reserve() > 0
    now[0] = 100.0  # a long idle time refills only up to the burst
    assert all(bucket.reserve() == 0 for _ in range(300))
    assert bucket.reserve() > 0


def test_a_smaller_share_of_partitions_lowers_the_rate() -> None:
    bucket = TokenBucket(3000)
    full = bucket.rate
    bucket.set_limit(3000 / 4)
    assert bucket.rate == pytest.approx(full / 4)


COUNTS = {"attributes": 2, "events": 10, "purchases": 1}  # positions: a 0-1, e 2-11, p 12


def test_documented_errors_count_inside_their_array() -> None:
    errors = [
        {"type": "bad", "input_array": "attributes", "index": 1},
        {"type": "bad", "input_array": "purchases", "index": 0},
    ]
    assert rejected_objects(errors, COUNTS) == ({1, 12}, set(), [])


def test_errors_without_an_array_count_over_the_whole_request() -> None:
    assert rejected_objects([{"type": "bad", "index": 7}], COUNTS) == ({7}, set(), [])
    assert rejected_objects([{"type": "bad", "index": "3"}], COUNTS) == ({3}, set(), [])


def test_an_index_only_one_reading_can_explain_is_read_that_way() -> None:
    # events index 11: inside "events" only when counted over the whole request.
    assert rejected_objects([{"type": "x", "input_array": "events", "index": 11}], COUNTS) == (
        {11},
        set(),
        [],
    )
    # events index 1: the whole-request reading would name an attribute, so it counts inside "events".
    assert rejected_objects([{"type": "x", "input_array": "events", "index": 1}], COUNTS) == ({3}, set(), [])


def test_an_index_both_readings_explain_differently_marks_both_candidates() -> None:
    rejected, ambiguous, unattributed = rejected_objects(
        [{"type": "x", "input_array": "events", "index": 5}], COUNTS
    )
    assert (rejected, ambiguous, unattributed) == (set(), {7, 5}, [])


def test_errors_naming_no_object_are_set_aside() -> None:
    errors = [
        {"type": "no index"},
        {"type": "out of range", "index": 13},
        {"type": "negative", "index": -1},
        {"type": "unknown array", "input_array": "things", "index": 0},
        {"type": "bool", "index": True},
        "a bare string",
    ]
    rejected, ambiguous, unattributed = rejected_objects(errors, COUNTS)
    assert (rejected, ambiguous) == (set(), set())
    assert unattributed == errors


def test_objects_must_name_a_user() -> None:
    with pytest.raises(ValueError, match="names no user"):
        TrackEntry(type="event", obj={"name": "x", "time": "2024-01-01T00:00:00Z"})


def test_an_outside_update_lands_in_its_conversations_partition() -> None:
    for conv in ("u-123", "+15551234567", "someone@example.com"):
        for partitions in (4, 16):
            expected = partition_of(conv, partitions)
            assert partition_for({"external_id": conv}, partitions) == expected
    alias = {"user_alias": {"alias_name": "+15551234567", "alias_label": "phone"}}
    assert partition_for(alias, 16) == partition_of("+15551234567", 16)
    assert partition_for({"external_id": "u-123"}, 16) == partition_of("u-123", 16)
