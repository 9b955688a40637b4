"""A campaign's rules, step by step, on its document: the cap, the pace, the window, retries, crashes."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from voicebot.outbound import campaign as steps

T0 = datetime(2026, 12, 7, 10, 0, tzinfo=ZoneInfo("Europe/Paris")).timestamp()  # a Monday, 10:00 in Paris


def contacts(n: int) -> list[tuple[str, dict[str, str]]]:
    return [(f"+1555000{i:04d}", {"name": f"c{i}"}) for i in range(n)]


def make(n: int = 5, **rules) -> steps.Campaign:
    rules.setdefault("pace", 20.0)
    return steps.new_campaign("voipbin", steps.Rules(**rules), contacts(n), now=T0)


def test_the_cap_holds_whatever_is_asked():
    campaign = make(10, concurrency=3)
    assert len(steps.claim(campaign, T0 + 1, most=10)) == 3
    assert steps.claim(campaign, T0 + 2, most=10) == []  # three are dialling: no place is free
    steps.placed(campaign, 0, "call-0", T0 + 2)
    steps.finished(campaign, "call-0", "human", T0 + 3)
    (again,) = steps.claim(campaign, T0 + 4, most=10)  # one place freed, one dial
    assert again[0] == 3


def test_the_pace_spreads_dials_over_time():
    campaign = make(10, concurrency=10, pace=2.0)
    firsts = steps.claim(campaign, T0 + 5, most=10)  # the bucket holds at most a second's dials
    assert len(firsts) == 2
    assert steps.claim(campaign, T0 + 5.2, most=10) == []
    assert len(steps.claim(campaign, T0 + 6, most=10)) == 2


def test_the_window_is_the_campaigns_local_time():
    campaign = make(2, window=("09:00", "18:00"), timezone="Europe/Paris")
    at_night = datetime(2026, 12, 7, 20, 0, tzinfo=ZoneInfo("Europe/Paris")).timestamp()
    assert steps.claim(campaign, at_night, most=5) == []
    assert len(steps.claim(campaign, T0 + 1, most=5)) == 2
    new_york = make(1, window=("09:00", "18:00"), timezone="America/New_York")
    assert steps.claim(new_york, T0 + 1, most=5) == []  # 10:00 in Paris is 04:00 in New York


def test_busy_is_tried_again_after_the_gap_up_to_the_attempts():
    campaign = make(1, attempts=2, retry_gap=600)
    ((index, _),) = steps.claim(campaign, T0 + 1, most=1)
    steps.placed(campaign, index, "call-a", T0 + 1)
    steps.finished(campaign, "call-a", "busy", T0 + 10)
    assert steps.claim(campaign, T0 + 100, most=1) == []  # not before the gap
    ((index, contact),) = steps.claim(campaign, T0 + 611, most=1)
    assert contact["attempts"] == 2
    steps.placed(campaign, index, "call-b", T0 + 611)
    steps.finished(campaign, "call-b", "no_answer", T0 + 640)
    assert campaign["state"] == "done" and campaign["contacts"][0]["outcome"] == "no_answer"
    assert steps.results(campaign)[0]["attempts"] == 2


@pytest.mark.parametrize("outcome", ["human", "voicemail"])
def test_a_person_or_a_voicemail_ends_the_contacts_turn(outcome):
    campaign = make(1, attempts=3, retry_gap=0)
    steps.claim(campaign, T0 + 1, most=1)
    steps.placed(campaign, 0, "call-a", T0 + 1)
    steps.finished(campaign, "call-a", outcome, T0 + 5)
    assert campaign["state"] == "done" and steps.claim(campaign, T0 + 9, most=1) == []


def test_a_record_told_twice_counts_once():
    campaign = make(1, attempts=2, retry_gap=0)
    steps.claim(campaign, T0 + 1, most=1)
    steps.placed(campaign, 0, "call-a", T0 + 1)
    assert steps.finished(campaign, "call-a", "busy", T0 + 2)
    assert not steps.finished(campaign, "call-a", "busy", T0 + 3)
    assert campaign["contacts"][0]["state"] == "pending" and campaign["contacts"][0]["attempts"] == 1


def test_a_call_that_ends_before_its_dial_returns_is_not_lost():
    campaign = make(1)
    steps.claim(campaign, T0 + 1, most=1)
    assert not steps.finished(campaign, "call-fast", "busy", T0 + 1.1)  # its id not known yet
    steps.placed(campaign, 0, "call-fast", T0 + 1.2)
    assert campaign["contacts"][0]["outcome"] == "busy" and campaign["state"] == "done"


def test_a_dial_lost_with_its_instance_is_a_failed_attempt_never_a_second_dial():
    campaign = make(1, attempts=2, retry_gap=0)
    steps.claim(campaign, T0 + 1, most=1)  # claimed, and the instance dies before it knows the call
    assert steps.claim(campaign, T0 + 30, most=1) == []  # still held: maybe dialled
    ((_, contact),) = steps.claim(campaign, T0 + 1 + steps.DIAL_STALE + 1, most=1)
    assert contact["attempts"] == 2  # the lost one counted: the next is another attempt


def test_a_429_gives_the_attempt_back_and_holds_the_campaign():
    campaign = make(2, concurrency=2)
    claimed = steps.claim(campaign, T0 + 1, most=2)
    steps.not_placed(campaign, claimed[0][0], T0 + 1, hold=3.0)
    assert campaign["contacts"][0]["attempts"] == 0 and campaign["contacts"][0]["state"] == "pending"
    assert steps.claim(campaign, T0 + 2, most=2) == []  # held
    assert [i for i, _ in steps.claim(campaign, T0 + 5, most=2)] == [0]


def test_pause_resume_and_cancel():
    campaign = make(3, concurrency=1)
    steps.claim(campaign, T0 + 1, most=3)
    steps.placed(campaign, 0, "call-0", T0 + 1)
    assert steps.set_state(campaign, "pause") == "paused"
    assert steps.claim(campaign, T0 + 5, most=3) == []
    assert steps.set_state(campaign, "resume") == "running"
    assert steps.set_state(campaign, "cancel") == "cancelled"
    assert [r["outcome"] for r in steps.results(campaign)] == [None, "not_dialled", "not_dialled"]
    steps.finished(campaign, "call-0", "human", T0 + 9)  # the live call goes on to its end
    assert campaign["state"] == "done" and steps.results(campaign)[0]["outcome"] == "human"


@pytest.mark.parametrize("rules, words", [
    ({"concurrency": 0}, "concurrency"), ({"attempts": 11}, "attempts"), ({"pace": 0}, "pace"),
    ({"timezone": "Mars/Olympus"}, "IANA time zone"),
])
def test_rules_that_cannot_work_are_named(rules, words):
    assert any(words in p for p in steps.Rules(**rules).problems())


@pytest.mark.parametrize("text", ["9-18", "18:00-09:00", "25:00-26:00", "09:00"])
def test_a_window_is_one_span_of_a_day(text):
    with pytest.raises(ValueError):
        steps.parse_window(text)


def test_a_claim_that_lost_its_race_dials_nobody():
    """The book runs a step again when another worker wrote first: only the run that landed may dial."""
    import copy

    from voicebot.outbound.book import MemoryBook
    from voicebot.outbound.runner import CampaignRunner
    from voicebot.speaker import Dialler

    class RacyBook(MemoryBook):
        def update(self, campaign_id, step):
            step(copy.deepcopy(self._campaigns[campaign_id]))  # a run whose write lost the race: thrown away
            return super().update(campaign_id, step)

    class Recorder(Dialler):
        platform = "voipbin"

        def __init__(self):
            self.dialled = []

        def place_call(self, to, variables, *, campaign_id=None, leave_voicemail=True):
            self.dialled.append(to)
            return f"call-{len(self.dialled)}"

    book, dialler = RacyBook(3600), Recorder()
    campaign = make(4, concurrency=2)
    book.create(campaign)
    runner = CampaignRunner(book, {"voipbin": dialler}, clock=lambda: T0 + 1)
    assert runner.run_once() == 2
    assert dialler.dialled == ["+15550000000", "+15550000001"]  # once each, the two the kept run claimed
    assert [c["state"] for c in book.get(campaign["id"])["contacts"]] == ["live", "live", "pending", "pending"]


def test_a_call_placed_by_an_instance_killed_before_it_knew_the_call_is_still_its_contacts():
    """The dial reached the platform, the instance died before recording it: the call's end finds its contact
    by number, so its outcome counts and the contact is not called again for that attempt."""
    campaign = make(2, attempts=2, retry_gap=0)
    steps.claim(campaign, T0 + 1, most=2)  # both claimed; the instance placed them and died
    assert steps.finished(campaign, "lost-call", "human", T0 + 20, phone="+15550000001")
    assert campaign["contacts"][1]["state"] == "done" and campaign["contacts"][1]["outcome"] == "human"
    assert steps.results(campaign)[1]["attempts"] == 1  # not dialled again
