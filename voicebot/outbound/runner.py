"""Carrying campaigns: every worker of every instance claims what is due, dials it, and hears how it went.

The campaign documents decide (``voicebot.outbound.campaign``) and the book
keeps each change atomic (``voicebot.outbound.book``), so the loops of many
workers add up to one concurrency cap and one pace per campaign, and a
worker killed at any point loses at most the attempt it was dialling.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, TypeVar

from ..exceptions import PlatformError, PlatformRateLimited, StoreError
from ..speaker import Dialler
from . import campaign as steps
from .book import CampaignBook, UnknownCampaign

log = logging.getLogger(__name__)
T = TypeVar("T")

TICK_SECONDS = 0.25
# Dials one worker starts per campaign per tick, at most (the pace and the cap limit them further).
DIALS_PER_TICK = 4
# A 429 without Retry-After holds the campaign this long.
DEFAULT_HOLD = 1.0


class CampaignRunner(threading.Thread):
    """A worker's campaign loop: every tick, dial what is due of every active campaign, within its cap."""

    def __init__(self, book: CampaignBook, diallers: dict[str, Dialler], *,
                 clock: Callable[[], float] = time.time, tick: float = TICK_SECONDS) -> None:
        super().__init__(name="campaign-runner", daemon=True)
        self.book = book
        self.diallers = diallers
        self.clock = clock
        self.tick = tick
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.tick):
            try:
                self.run_once()
            except StoreError as exc:
                log.warning("campaigns paused on this worker: the store failed: %s", exc)
            except Exception:
                log.exception("campaign runner failed unexpectedly")

    def run_once(self) -> int:
        """One round over the campaigns not yet done; the dials it started."""
        started = 0
        for campaign_id in self.book.active():
            try:
                started += self._dial_due(campaign_id)
            except UnknownCampaign:
                continue
        return started

    def _dial_due(self, campaign_id: str) -> int:
        """Claim one contact and dial it, and again, up to DIALS_PER_TICK: a pause or a cancel landing between
        two dials stops the next, and waits (``wait_for_dials``) for the one under way alone."""
        started = 0
        while started < DIALS_PER_TICK and not self.stopping.is_set():
            claimed, platform, leave_voicemail = self.book.update(campaign_id, self._claim_one)
            if not claimed:
                break
            ((index, contact),) = claimed
            started += 1
            dialler = self.diallers.get(platform)
            if dialler is None:
                log.error("campaign %s: %s cannot place calls on this worker", campaign_id, platform)
                self._not_placed(campaign_id, index)
                continue
            self._dial(campaign_id, dialler, index, contact, leave_voicemail)
        return started

    def _claim_one(self, campaign: steps.Campaign) -> tuple[list[tuple[int, steps.Contact]], str, bool]:
        # Returned, never kept aside: the book runs this again when another worker wrote first, and only the run
        # whose write landed claimed anything.
        picked = steps.claim(campaign, self.clock(), 1)
        return picked, str(campaign["platform"]), campaign.get("voicemail", "message") == "message"

    def _dial(self, campaign_id: str, dialler: Dialler, index: int, contact: dict[str, Any],
              leave_voicemail: bool) -> None:
        try:
            call_id = dialler.place_call(contact["phone"], contact.get("variables") or {}, campaign_id=campaign_id,
                                         leave_voicemail=leave_voicemail)
        except PlatformRateLimited as exc:
            hold = max(DEFAULT_HOLD, float(exc.retry_after or 0))
            log.warning("campaign %s: the platform asks to slow down; holding %.1f s", campaign_id, hold)
            self.book.update(campaign_id, lambda c: steps.not_placed(c, index, self.clock(), hold=hold))
            return
        except PlatformError as exc:
            log.warning("campaign %s: a dial failed: %s", campaign_id, exc)
            self._not_placed(campaign_id, index)
            return
        log.info("campaign %s: placed call_id=%s attempt=%d", campaign_id, call_id, contact["attempts"])
        # Told again if the store fails for a moment: a placed call the campaign never heard of would be
        # swept as a failed dial, and its contact dialled again while the call is up.
        insisting(lambda: self.book.update(campaign_id, lambda c: steps.placed(c, index, call_id, self.clock())))

    def _not_placed(self, campaign_id: str, index: int) -> None:
        self.book.update(campaign_id, lambda c: steps.not_placed(c, index, self.clock()))

    def stop(self) -> None:
        self.stopping.set()


def insisting(change: Callable[[], T], pauses: tuple[float, ...] = (0.05, 0.2, 1.0)) -> T:
    """``change()``, tried again after each of ``pauses`` while the store fails (a failover, a race lost 20
    times in a row); the last failure is raised."""
    for pause in pauses:
        try:
            return change()
        except StoreError as exc:
            log.warning("a campaign change failed, trying again in %.2f s: %s", pause, exc)
            time.sleep(pause)
    return change()


def wait_for_dials(book: CampaignBook, campaign_id: str, clock: Callable[[], float] = time.time) -> int:
    """Wait (at most ``steps.DIAL_RETURNS``) until no dial of the campaign is under way, so that a pause or a
    cancel answers only once nothing more can reach the platform; the dials still under way (0 unless an
    instance died mid-dial)."""
    deadline = time.monotonic() + steps.DIAL_RETURNS
    pause = 0.01
    while True:
        under_way = steps.dialling(book.get(campaign_id), clock())
        if under_way == 0 or time.monotonic() >= deadline:
            return under_way
        time.sleep(pause)
        pause = min(0.1, pause * 2)


def outcome_listener(book: CampaignBook, clock: Callable[[], float] = time.time) -> Callable[[dict[str, Any]], None]:
    """Told each end-of-call record: a campaign call's outcome goes to its campaign."""

    def told(record: dict[str, Any]) -> None:
        campaign_id = record.get("campaign_id")
        if not campaign_id or not record.get("outcome"):
            return
        try:
            # Told again if the store fails for a moment: an outcome lost holds its place in the campaign's
            # concurrency until LIVE_LONGEST sweeps it.
            insisting(lambda: book.update(campaign_id, lambda c: steps.finished(
                c, record["call_id"], record["outcome"], clock(), record_id=record.get("id"),
                duration=record.get("duration_seconds"), phone=record.get("caller"))))
        except UnknownCampaign:
            log.warning("a call of campaign %s ended, and the campaign is gone", campaign_id)

    return told
