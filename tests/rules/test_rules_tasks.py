"""Task-order rules (B5–B8): table tests and properties."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rules.comments import comment_content_refusal, comment_refusal
from rules.deadline import in_quiet_hours, task_deadline
from rules.evidence import MAX_IMAGE_BYTES, MAX_VIDEO_BYTES, evidence_refusals, sniff_media
from rules.solution import solution_problem

SH = ZoneInfo("Asia/Shanghai")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=SH)


@pytest.mark.parametrize(
    ("created", "expected"),
    [
        ("2026-11-23 10:00:00", "2026-11-24 10:00:00"),  # daytime: 24 h
        ("2026-11-23 20:59:59", "2026-11-24 20:59:59"),
        ("2026-11-23 21:00:00", "2026-11-24 21:00:00"),  # exactly 21:00:00 stays
        ("2026-11-23 21:00:01", "2026-11-25 09:00:00"),  # after 21:00 → next morning
        ("2026-11-23 23:30:00", "2026-11-25 09:00:00"),
        ("2026-11-23 00:30:00", "2026-11-24 09:00:00"),  # before 09:00 → that morning
        ("2026-11-23 08:59:59", "2026-11-24 09:00:00"),
        ("2026-11-23 09:00:00", "2026-11-24 09:00:00"),
    ],
)
def test_deadline_moves_out_of_the_night(created: str, expected: str) -> None:
    assert task_deadline(at(created), SH) == at(expected)


@pytest.mark.parametrize(
    ("created", "expected"),
    [
        ("2026-11-23 10:00:00", "2026-11-24 10:00:00"),
        ("2026-11-23 22:00:00", "2026-11-25 10:00:00"),  # 1 h after 21:00 resumes at 09:00
        ("2026-11-23 03:00:00", "2026-11-24 15:00:00"),  # 6 h after 21:00 the evening before
    ],
)
def test_carry_over_rule(created: str, expected: str) -> None:
    assert task_deadline(at(created), SH, night_rule="carry_over") == at(expected)


NY = ZoneInfo("America/New_York")


@pytest.mark.parametrize(
    ("created_utc", "expected_local"),
    [
        # The 24 h end at 03:00 EST on the night clocks go back (01:00–02:00 runs twice): 21:00 EDT to
        # 03:00 EST is 7 h, not the 6 the wall clock shows, so the deadline is 16:00, not 15:00.
        ("2026-10-31 08:00:00", "2026-11-01 16:00:00-05:00"),
        # 03:30 EDT on the night clocks go forward (02:00–03:00 never happens): 5.5 h carried, not 6.5.
        ("2026-03-07 07:30:00", "2026-03-08 14:30:00-04:00"),
    ],
)
def test_carry_over_counts_real_hours_across_a_daylight_saving_change(created_utc: str, expected_local: str) -> None:
    created = datetime.fromisoformat(created_utc).replace(tzinfo=UTC)
    assert task_deadline(created, NY, night_rule="carry_over") == datetime.fromisoformat(expected_local)


def test_twenty_four_hours_are_real_hours_when_creation_is_given_in_a_daylight_saving_zone() -> None:
    created = datetime(2026, 10, 31, 10, 0, tzinfo=NY)  # EDT; the clocks go back before 24 h are up
    due = task_deadline(created, NY)
    assert due.astimezone(UTC) - created.astimezone(UTC) == timedelta(hours=24)
    assert due == datetime.fromisoformat("2026-11-01 09:00:00-05:00")


def test_platform_deadline_wins() -> None:
    theirs = at("2026-11-24 12:00:00")
    assert task_deadline(at("2026-11-23 23:00:00"), SH, platform_deadline=theirs) == theirs


def test_custom_quiet_hours_not_spanning_midnight() -> None:
    # quiet 01:00–06:00: a deadline at 03:00 moves to 06:00 the same morning
    assert task_deadline(at("2026-11-23 03:00:00"), SH, quiet_start=time(1), quiet_end=time(6)) == at(
        "2026-11-24 06:00:00"
    )


@given(
    st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC)),
    st.sampled_from(["Asia/Shanghai", "Europe/Berlin", "America/New_York", "UTC"]),
    st.sampled_from(["move_to_morning", "carry_over"]),
)
def test_deadline_properties(created: datetime, zone: str, rule: str) -> None:
    tz = ZoneInfo(zone)
    due = task_deadline(created, tz, night_rule=rule)  # type: ignore[arg-type]
    assert not in_quiet_hours(due.astimezone(tz), time(21), time(9)), "never inside quiet hours"
    assert due - created >= timedelta(hours=24), "never earlier than 24 h"
    assert due - created <= timedelta(hours=36, minutes=60), "never more than 36 h (plus a DST hour)"


@pytest.mark.parametrize(
    ("status", "count", "expected"),
    [
        ("pending", 0, None),
        ("pending", 9, None),
        ("pending", 10, "limit"),
        ("resolved", 0, "closed"),
        ("timed_out", 3, "closed"),
    ],
)
def test_comment_refusal(status: str, count: int, expected: str | None) -> None:
    assert comment_refusal(status, count) == expected


@pytest.mark.parametrize(
    ("in_thread", "text", "files", "evidence", "expected"),
    [
        (False, True, False, True, "outside"),  # anywhere but a task order's thread, nothing is a comment
        (False, False, True, True, "outside"),
        (True, True, False, False, None),
        (True, False, False, True, "not_text"),  # a sticker
        (True, False, True, True, "files_kept"),  # the merchant's file alone: kept as evidence, not a comment
        (True, False, True, False, "not_text"),  # the creator's photo alone goes nowhere
        (True, True, True, True, "files_kept"),  # the merchant's text is the comment, the file evidence
        (True, True, True, False, "files_not_sent"),  # the creator's text goes, the photo does not
    ],
)
def test_comment_content_refusal(
    in_thread: bool, text: bool, files: bool, evidence: bool, expected: str | None
) -> None:
    refusal = comment_content_refusal(in_task_thread=in_thread, has_text=text, has_files=files,
                                      files_kept_as_evidence=evidence)  # fmt: skip
    assert refusal == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", "empty"), ("   ", "empty"), ("ok", "placeholder"), ("1", "placeholder"), ("已处理", "placeholder"),
     ("好的！", "placeholder"), ("已补发", "short"), ("已为买家补发，顺丰单号 SF123456789", None)],
)  # fmt: skip
def test_solution_problem(text: str, expected: str | None) -> None:
    assert solution_problem(text) == expected


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 8
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 12
MP4 = b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 4
FLV = b"FLV\x01" + b"\x00" * 12
GIF = b"GIF89a" + b"\x00" * 10


def test_evidence_limits_by_content_and_size() -> None:
    files = [
        (PNG, 100),
        (JPEG, MAX_IMAGE_BYTES),
        (JPEG, MAX_IMAGE_BYTES + 1),
        (MP4, MAX_VIDEO_BYTES),
        (FLV, MAX_VIDEO_BYTES + 1),
        (GIF, 10),
    ]
    assert [(i, r.reason) for i, r in evidence_refusals(files)] == [(2, "size"), (4, "size"), (5, "type")]
    assert [(i, r.reason) for i, r in evidence_refusals([(PNG, 1)] * 7)] == [(-1, "count")]
    assert evidence_refusals([(PNG, 1)] * 6) == []


@pytest.mark.parametrize(
    ("brand", "kind"),
    [(b"isom", "mp4"), (b"mp42", "mp4"), (b"M4V ", "mp4"), (b"qt  ", "mov"),
     (b"heic", None), (b"mif1", None), (b"M4A ", None), (b"3gp4", None)],
)  # fmt: skip
def test_an_ftyp_box_is_a_video_only_by_its_brand(brand: bytes, kind: str | None) -> None:
    """An HEIC photo or an M4A recording has an ftyp box too: the brand says what it is (B7)."""
    found = sniff_media(b"\x00\x00\x00\x18ftyp" + brand + b"\x00" * 4)
    assert (found.format if found else None) == kind
