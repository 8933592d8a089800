"""The sync job's log summary: one INFO line a minute at most, only when something was stored."""

from transfer_daemon.ingest.activity import Activity


def test_cycles_within_a_minute_make_no_line() -> None:
    activity = Activity()
    assert activity.note(0.0, 10, 10, 3, 0) is None
    assert activity.note(59.9, 11, 11, 2, 0) is None


def test_the_first_cycle_a_minute_on_sums_every_cycle_since() -> None:
    activity = Activity()
    activity.note(0.0, 10, 10, 3, 0)
    activity.note(30.0, 11, 12, 2, 1)
    summary = activity.note(60.0, 13, 13, 0, 0)
    assert summary == {"cycles": 3, "rows": 5, "quarantined": 1, "first_block": 10, "last_block": 13,
                       "seconds": 60.0}
    assert activity.note(61.0, 14, 14, 9, 0) is None  # the next minute starts at the summary


def test_an_idle_minute_writes_nothing_and_keeps_counting() -> None:
    activity = Activity()
    assert activity.note(0.0, 10, 10, 0, 0) is None
    assert activity.note(120.0, 11, 11, 0, 0) is None
    summary = activity.note(121.0, 12, 12, 1, 0)
    assert summary is not None and (summary["cycles"], summary["rows"], summary["first_block"]) == (3, 1, 10)
