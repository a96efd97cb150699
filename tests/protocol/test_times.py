"""Moments with their day and zone, durations as durations: protocol/times.py."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from protocol import times
from protocol.validation import describe


@pytest.fixture
def local_zone(monkeypatch):
    """Set this process's zone (as TZ does for a person's terminal) and put it back afterwards."""

    def use(name: str) -> None:
        monkeypatch.setenv("TZ", name)
        time.tzset()

    yield use
    monkeypatch.undo()
    time.tzset()


NOW = datetime(2026, 12, 2, 8, 30, tzinfo=UTC)  # a Wednesday


@pytest.mark.parametrize(("when", "text"), [
    (datetime(2026, 12, 2, 9, 16, tzinfo=UTC), "today 09:16 UTC"),
    (datetime(2026, 12, 3, 7, 36, tzinfo=UTC), "tomorrow 07:36 UTC"),
    (datetime(2026, 12, 1, 23, 59, tzinfo=UTC), "yesterday 23:59 UTC"),
    (datetime(2026, 11, 24, 3, 44, tzinfo=UTC), "Tue 24 Nov 03:44 UTC"),
    (datetime(2025, 12, 2, 9, 16, tzinfo=UTC), "Tue 2 Dec 2025 09:16 UTC"),
    (datetime(2026, 12, 2, 9, 16), "today 09:16 UTC"),  # naive: the server's UTC
])
def test_a_moment_names_its_day_and_zone(local_zone, when, text):
    local_zone("UTC")
    assert times.moment(when, now=NOW) == text


def test_the_day_is_the_readers_day_in_the_readers_zone(local_zone):
    when = datetime(2026, 12, 2, 23, 30, tzinfo=UTC)
    local_zone("Europe/Paris")  # already Thursday there
    assert times.moment(when, now=NOW) == "tomorrow 00:30 CET"
    local_zone("America/New_York")
    assert times.moment(when, now=NOW) == "today 18:30 EST"
    # Just after midnight in Paris, 23:30 UTC the evening before is "yesterday" there.
    assert times.moment(datetime(2026, 12, 1, 22, 30, tzinfo=UTC), now=datetime(2026, 12, 1, 23, 5, tzinfo=UTC),
                        zone=ZoneInfo("Europe/Paris")) == "yesterday 23:30 CET"


def test_a_zone_without_a_name_shows_its_offset():
    when = datetime(2026, 12, 2, 9, 16, tzinfo=UTC)
    assert times.moment(when, now=NOW, zone=ZoneInfo("Asia/Kolkata")) == "today 14:46 IST"
    assert times.moment(when, now=NOW, zone=ZoneInfo("America/Sao_Paulo")) == "today 06:16 UTC-03:00"


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0 s"), (43, "43 s"), (60, "1 min"), (883, "14 min 43 s"), (3600, "1 h"), (3 * 3600 + 300, "3 h 5 min"),
    (47 * 3600, "47 h"), (48 * 3600, "2 days"), (52 * 3600, "2 days 4 h"), (24 * 3600 * 1, "24 h"), (-5, "0 s"),
])
def test_durations_read_as_durations(seconds, text):
    assert times.duration(seconds) == text
    assert times.duration(timedelta(seconds=seconds)) == text


@pytest.mark.parametrize(("seconds", "text"), [
    (20, "less than a minute"), (61, "about 2 minutes"), (883, "about 15 minutes"), (3600, "about 1 hour"),
    (3 * 3600 + 1200, "about 3 hours"), (5 * 86400, "about 5 days"),
])
def test_rounded_durations(seconds, text):
    assert times.about(seconds) == text


def test_validation_errors_are_said_plainly():
    assert describe([{"type": "string_too_short", "loc": ("body", "password"), "msg": "String should have at least 12 characters",
                      "ctx": {"min_length": 12}}]) == "The password must have at least 12 characters."
    assert describe([{"type": "greater_than", "loc": ("body", "expires_in_hours"), "msg": "x", "ctx": {"gt": 0.0}},
                     {"type": "missing", "loc": ("body", "group"), "msg": "Field required"}]) == \
        "The expires in hours must be more than 0 (and 1 more problem)."
    assert describe([{"type": "value_error", "loc": ("body", "title"), "msg": "Value error, The title is blank"}]) == "The title is blank."
    assert describe([{"type": "something_new", "loc": ("query", "limit"), "msg": "Input is odd"}]) == "The limit is not valid: input is odd."


@pytest.mark.parametrize(("before", "text"), [
    (timedelta(seconds=-90), "just now"), (timedelta(seconds=59), "just now"), (timedelta(minutes=1), "1 minute ago"),
    (timedelta(minutes=40, seconds=59), "40 minutes ago"), (timedelta(hours=1), "1 hour ago"),
    (timedelta(hours=23, minutes=59), "23 hours ago"), (timedelta(hours=24), "yesterday"),
    (timedelta(hours=47), "yesterday"), (timedelta(days=2), "2 days ago"), (timedelta(days=9, hours=3), "9 days ago"),
], ids=lambda value: str(value))
def test_how_long_ago_reads_as_people_say_it(before, text):
    now = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
    assert times.ago(now - before, now=now) == text
    assert times.ago((now - before).replace(tzinfo=None), now=now) == text  # naive moments are UTC
