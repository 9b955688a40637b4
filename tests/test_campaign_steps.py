"""A campaign's rules, step by step, on its head and contacts: the cap, the pace, the window, retries, crashes."""

from __future__ import annotations

from collections import Counter
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
    assert campaign["state"] == "done" and campaign.contact(0)["outcome"] == "no_answer"
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
    assert campaign.contact(0)["state"] == "pending" and campaign.contact(0)["attempts"] == 1


def test_a_call_that_ends_before_its_dial_returns_is_not_lost():
    campaign = make(1)
    steps.claim(campaign, T0 + 1, most=1)
    assert not steps.finished(campaign, "call-fast", "busy", T0 + 1.1)  # its id not known yet
    steps.placed(campaign, 0, "call-fast", T0 + 1.2)
    assert campaign.contact(0)["outcome"] == "busy" and campaign["state"] == "done"


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
    assert campaign.contact(0)["attempts"] == 0 and campaign.contact(0)["state"] == "pending"
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
            head, contacts = self._campaigns[campaign_id]
            step(steps.Campaign(copy.deepcopy(head), contacts))  # a run whose write lost the race: thrown away
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
    assert [c["state"] for _, c in book.get(campaign["id"]).every()] == ["live", "live", "pending", "pending"]


def test_a_call_placed_by_an_instance_killed_before_it_knew_the_call_is_still_its_contacts():
    """The dial reached the platform, the instance died before recording it: the call's end finds its contact
    by number, so its outcome counts and the contact is not called again for that attempt."""
    campaign = make(2, attempts=2, retry_gap=0)
    steps.claim(campaign, T0 + 1, most=2)  # both claimed; the instance placed them and died
    assert steps.finished(campaign, "lost-call", "human", T0 + 20, phone="+15550000001")
    assert campaign.contact(1)["state"] == "done" and campaign.contact(1)["outcome"] == "human"
    assert steps.results(campaign)[1]["attempts"] == 1  # not dialled again


class CountedContacts(steps.ContactList):
    """A campaign's contacts that count what a step reads of them."""

    def __init__(self, contacts):
        super().__init__(contacts)
        self.read = 0

    def contact(self, index):
        self.read += 1
        return super().contact(index)


def big(n: int, **rules) -> tuple[steps.Campaign, CountedContacts]:
    rules.setdefault("pace", 20.0)
    source = CountedContacts([steps.new_contact(phone, variables) for phone, variables in contacts(n)])
    return steps.Campaign(steps.new_head("voipbin", steps.Rules(**rules), n, now=T0), source), source


def test_a_step_on_a_20000_contact_campaign_reads_only_the_contacts_it_names():
    campaign, source = big(20_000, concurrency=5, attempts=3, retry_gap=60)
    picked = steps.claim(campaign, T0 + 1, most=4)
    assert len(picked) == 4 and source.read == 4
    for index, _ in picked:
        steps.placed(campaign, index, f"call-{index}", T0 + 1)
    steps.finished(campaign, "call-0", "busy", T0 + 2)  # to be tried again
    assert source.read == 4  # what a step names was read once, and kept with the step
    source.read = 0
    assert len(steps.claim(campaign, T0 + 3, most=4)) == 2 and source.read == 2  # 3 live of 5: two places
    steps.set_state(campaign, "pause")
    assert steps.claim(campaign, T0 + 100, most=4) == [] and source.read == 2  # paused: nothing read at all
    steps.set_state(campaign, "resume")
    ((index, contact),) = steps.claim(campaign, T0 + 100, most=1)  # the one due again comes first
    assert index == 0 and contact["attempts"] == 2
    assert len(campaign.head["flight"]) <= 5  # the head holds the calls in flight, not the contacts
    summary = steps.summary(campaign)
    assert summary["contacts"] == 20_000 and summary["pending"] + summary["live"] + summary["done"] == 20_000


def test_the_head_counts_agree_with_the_contacts_through_retries_and_a_cancel():
    campaign = make(8, concurrency=3, attempts=2, retry_gap=10)
    now = T0 + 1
    outcomes = iter(["busy", "human", "no_answer", "voicemail", "failed", "busy"])
    for round_ in range(3):
        for index, _ in steps.claim(campaign, now, most=3):
            steps.placed(campaign, index, f"call-{round_}-{index}", now)
            outcome = next(outcomes, "human")
            steps.finished(campaign, f"call-{round_}-{index}", outcome, now + 1)
        now += 11
    assert steps.set_state(campaign, "cancel") in ("cancelled", "done")
    rows = steps.results(campaign)
    summary = steps.summary(campaign)
    finals = Counter(r["outcome"] for r in rows if r["final"])
    assert summary["state"] == "done" and summary["done"] == 8 == sum(finals.values())
    assert summary["outcomes"] == dict(finals)
    assert all(r["final"] for r in rows)
    assert finals["not_dialled"] == sum(1 for r in rows if r["attempts"] == 0)


def test_a_campaign_kept_as_one_document_by_an_earlier_voicebot_goes_on_where_it_was(redis_url, redis_prefix):
    """An upgrade mid-campaign: the one-document form (every contact inside) is split once, on first read."""
    import json

    import redis

    from voicebot.outbound.book import RedisBook

    client = redis.Redis.from_url(redis_url)
    book = RedisBook(redis.Redis.from_url(redis_url), redis_prefix, 3600)
    contacts_ = [{"phone": f"+1555000{i:04d}", "variables": {}, "attempts": a, "state": st, "next_at": T0,
                  "call_id": cid, "outcome": out, "record_id": None, "duration_seconds": None,
                  **({"claimed_at": T0} if st == "live" else {})}
                 for i, (a, st, cid, out) in enumerate([(1, "done", "c0", "human"), (1, "live", "c1", None),
                                                        (1, "pending", None, "busy"), (0, "pending", None, None)])]
    document = {**steps.new_head("voipbin", steps.Rules(concurrency=2, attempts=2, pace=20), 4, now=T0),
                "contacts": contacts_, "calls": {"c0": 0, "c1": 1}}
    for key in ("total", "fresh", "undialled_from", "counts", "outcomes", "flight", "early", "version"):
        del document[key]
    try:
        client.set(book._keys(document["id"])[0], json.dumps(document))
        campaign = book.get(document["id"])
        summary = steps.summary(campaign)
        assert (summary["done"], summary["live"], summary["pending"], summary["outcomes"]) == (1, 1, 2, {"human": 1})
        assert book.update(document["id"], lambda c: steps.finished(c, "c1", "voicemail", T0 + 5))
        claimed = book.update(document["id"], lambda c: steps.claim(c, T0 + 6, most=2))
        assert [i for i, _ in claimed] == [2, 3]  # the one tried before, then the one never dialled
        assert [r["outcome"] for r in steps.results(book.get(document["id"]))] == ["human", "voicemail", "busy", None]
    finally:
        client.delete(*book._keys(document["id"]))
        client.close()
        book.close()


def test_an_outcome_told_while_the_store_fails_for_a_moment_still_frees_its_place():
    """The store fails twice (a failover, a race lost 20 times): the outcome is told again, not lost."""
    from voicebot.exceptions import StoreError
    from voicebot.outbound.book import MemoryBook
    from voicebot.outbound.runner import outcome_listener

    class Faltering(MemoryBook):
        failures = 2

        def update(self, campaign_id, step):
            if self.failures:
                self.failures -= 1
                raise StoreError("changed by others 20 times in a row")
            return super().update(campaign_id, step)

    book = Faltering(3600)
    campaign = make(2, concurrency=1)
    book.create(campaign)
    book.failures = 0
    ((index, _),) = book.update(campaign["id"], lambda c: steps.claim(c, T0 + 1, most=1))
    book.update(campaign["id"], lambda c: steps.placed(c, index, "call-a", T0 + 1))
    book.failures = 2
    outcome_listener(book, clock=lambda: T0 + 5)({"campaign_id": campaign["id"], "call_id": "call-a",
                                                  "outcome": "human", "id": "rec-a"})
    assert book.failures == 0
    assert steps.summary(book.get(campaign["id"]))["live"] == 0  # its place is free for the next dial


def test_a_cancel_finishing_20000_contacts_that_wait_for_a_retry_is_one_write(redis_url, redis_prefix):
    """Every contact tried once, busy, and waiting for its second attempt: the cancel's write carries them all."""
    import redis

    from voicebot.outbound.book import RedisBook

    n = 20_000
    book = RedisBook(redis.Redis.from_url(redis_url), redis_prefix, 3600)
    campaign = steps.new_campaign("voipbin", steps.Rules(concurrency=1000, attempts=2, retry_gap=3600, pace=20),
                                  contacts(n), now=T0)
    try:
        book.create(campaign)

        def everyone_busy(c):  # as after a first round where every call ended busy: one write of them all
            for index in range(n):
                c.contact(index).update(state="pending", attempts=1, outcome="busy")
                c.wait(index, T0 + 3600)
            c["fresh"] = n

        book.update(campaign["id"], everyone_busy)
        assert steps.summary(book.get(campaign["id"]))["pending"] == n
        assert book.update(campaign["id"], lambda c: steps.set_state(c, "cancel")) == "done"
        status = steps.summary(book.get(campaign["id"]))
        assert status["done"] == n and status["outcomes"] == {"busy": n}
    finally:
        book.client.delete(*book._keys(campaign["id"]))
        book.close()
