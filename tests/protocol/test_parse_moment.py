"""parse_moment: the moments people type for --at, in every spelling the help names, and clear refusals."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from protocol.errors import InvalidInputError
from protocol.times import parse_duration, parse_moment

NOW = datetime(2026, 12, 3, 10, 0).astimezone()  # moments without a zone are read in this computer's zone


def at(text: str) -> datetime:
    return parse_moment(text, now=NOW)


@pytest.mark.parametrize(("text", "back"), [
    ("3h", timedelta(hours=3)), ("3H", timedelta(hours=3)), (" 3 h ", timedelta(hours=3)),
    ("90m", timedelta(minutes=90)), ("90 min", timedelta(minutes=90)), ("45 minutes ago", timedelta(minutes=45)),
    ("2d", timedelta(days=2)), ("2 days", timedelta(days=2)), ("1 day ago", timedelta(days=1)),
    ("1w", timedelta(weeks=1)), ("2 weeks", timedelta(weeks=2)), ("3h30m", timedelta(hours=3, minutes=30)),
    ("1 week, 2 days ago", timedelta(days=9)), ("1 day and 2 hours", timedelta(hours=26)), ("0h", timedelta()),
    ("now", timedelta()), ("Today", timedelta()),
])
def test_how_long_ago_in_its_spellings(text, back):
    assert at(text) == NOW - back


def test_a_date_alone_is_the_end_of_that_day_and_yesterday_is_the_end_of_yesterday():
    assert at("2026-12-01") == datetime(2026, 12, 1, 23, 59, 59).astimezone()
    assert at("20261201") == datetime(2026, 12, 1, 23, 59, 59).astimezone()
    assert at("yesterday") == datetime(2026, 12, 2, 23, 59, 59).astimezone()


def test_a_time_of_day_is_today_unless_still_to_come():
    assert at("09:30") == NOW.replace(hour=9, minute=30)
    assert at("14:00") == NOW.replace(hour=14) - timedelta(days=1)  # still to come today: yesterday's
    assert at("today 9:30") == NOW.replace(hour=9, minute=30)
    assert at("yesterday 14:00") == NOW.replace(hour=14) - timedelta(days=1)
    assert at("Yesterday at 7:05:09") == NOW.replace(hour=7, minute=5, second=9) - timedelta(days=1)


def test_a_date_and_time_with_or_without_its_zone():
    assert parse_moment("2026-12-01T14:00+01:00", now=NOW) == datetime(2026, 12, 1, 14, 0,
                                                                         tzinfo=timezone(timedelta(hours=1)))
    assert parse_moment("2026-12-01T14:00Z", now=NOW) == datetime(2026, 12, 1, 14, 0, tzinfo=timezone.utc)
    local = parse_moment("2026-12-01 14:00", now=NOW)
    assert local.tzinfo is not None and local.replace(tzinfo=None) == datetime(2026, 12, 1, 14, 0)


@pytest.mark.parametrize("text", ["", "abc", "-3h", "3 fortnights", "25:00", "12:75", "100000000000d", "2026-13-01",
                                  "tomorrow-ish", "3h ago ago"])
def test_anything_else_is_refused_in_one_line_with_the_forms(text):
    with pytest.raises(InvalidInputError) as refused:
        parse_moment(text, now=NOW)
    assert "\n" not in refused.value.message and "is not a time" in refused.value.message
    assert "3h" in refused.value.hint and "yesterday" in refused.value.hint


@pytest.mark.parametrize(("text", "seconds"), [
    ("90m", 5400), ("1h", 3600), ("1.5h", 5400), ("1h30m", 5400), ("1 hour 30 minutes", 5400), ("2 days", 172800),
    ("2w", 1209600), ("30 s", 30), ("hourly", 3600), ("Daily", 86400), ("weekly", 604800), ("1 day, and 2 hrs", 93600),
])
def test_lengths_of_time_in_their_spellings(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "3", "ago", "1 fortnight", "-1h", "1h-", "every hour"])
def test_what_is_not_a_length_of_time(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_a_group_policy_takes_the_lengths_of_time_the_agent_reads():
    from pydantic import ValidationError

    from protocol.policy import SnapshotRules

    assert SnapshotRules(interval="hourly", prune_every="1 week").interval == "hourly"
    with pytest.raises(ValidationError):
        SnapshotRules(interval="every so often")
