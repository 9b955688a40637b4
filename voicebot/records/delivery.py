"""Sending records to CALL_REPORT_URL: signed like VoIPBin's events, at least once, retried with back-off."""

from __future__ import annotations

from typing import Any

import json
import logging
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from .. import metrics
from ..exceptions import StoreError
from ..egress import HTTP, EgressError
from ..signing import VOICEBOT_HEADER as SIGNATURE_HEADER, sign
from .outbox import Entry, Outbox

log = logging.getLogger(__name__)

RECORD_ID_HEADER = "X-Voicebot-Record-Id"
# One attempt's whole time, from connecting to the receiver's status line.
ATTEMPT_SECONDS = 10.0
# Records on their way at once from one worker: a receiver slow to answer one
# record holds one of these, not the delivery of every other.
PARALLEL_DELIVERIES = 4


class RecordSender:
    """One attempt to hand a record over: its receiver's 2xx status counts, and nothing else does.

    A redirect is not followed (the signed record, transcript included, would
    go wherever the ``Location`` points) and counts as a failure, to retry. The
    answer's body is not read: a receiver that says 200 and then trickles its
    body has taken the record, and holds nothing up.
    """

    def __init__(self, url: str, secret: str, timeout: float = ATTEMPT_SECONDS) -> None:
        self.url = url
        self.secret = secret
        self.timeout = timeout
        # Only the host in log lines: a receiver's URL may carry a token.
        self.where = urlsplit(url).netloc
        self.http = HTTP(pool_size=PARALLEL_DELIVERIES)

    def send(self, record: dict[str, Any]) -> bool:
        body = json.dumps(record, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(body, self.secret),
                   RECORD_ID_HEADER: record["id"]}
        try:
            # The body is never read (the connection goes with it): the status is the receiver's word.
            with self.http.stream("POST", self.url, body=body, headers=headers, limit=0,
                                  cutoff=self.http.cutoff(self.timeout)) as answer:
                status, ok, redirect = answer.status, answer.ok, answer.redirect
        except EgressError as exc:
            log.warning("call record %s not delivered to %s: %s", record["id"], self.where, exc)
            return False
        if ok:
            return True
        what = "a redirect, which is not followed" if redirect else "an error"
        log.warning("call record %s not delivered to %s: HTTP %d (%s)", record["id"], self.where, status, what)
        return False

    def close(self) -> None:
        self.http.close()


class DeliveryLoop(threading.Thread):
    """One per worker process: takes due records from the outbox and sends them, a few at a time."""

    def __init__(self, outbox: Outbox, sender: RecordSender, *, give_up_after: float,
                 idle_wait: float = 0.5, parallel: int = PARALLEL_DELIVERIES) -> None:
        super().__init__(name="call-record-delivery", daemon=True)
        self.outbox = outbox
        self.sender = sender
        self.give_up_after = give_up_after
        self.idle_wait = idle_wait
        self.parallel = parallel
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{id(self):x}"
        self.stopping = threading.Event()
        self._free = threading.Semaphore(parallel)
        self._pool = ThreadPoolExecutor(parallel, thread_name_prefix="call-record-send")

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                worked = self.deliver_due()
            except StoreError as exc:
                log.warning("call record delivery paused: %s", exc)
                worked = False
            if not worked:
                self.stopping.wait(self.idle_wait)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def deliver_due(self) -> bool:
        """Start sending what is due, as many as there are free places; False when nothing was due."""
        free = self._take_free_places()
        try:
            entries = self.outbox.due(self.consumer, free) if free else []
        except StoreError:
            self._give_back(free)
            raise
        self._give_back(free - len(entries))
        for entry in entries:
            self._pool.submit(self._deliver, entry)
        return bool(entries)

    def _take_free_places(self) -> int:
        # Wait for one place (a slow delivery frees it by its deadline), then take any others free now.
        if not self._free.acquire(timeout=self.idle_wait):
            return 0
        taken = 1
        while taken < self.parallel and self._free.acquire(blocking=False):
            taken += 1
        return taken

    def _give_back(self, places: int) -> None:
        for _ in range(places):
            self._free.release()

    def _deliver(self, entry: Entry) -> None:
        try:
            if entry.attempts:
                metrics.RECORDS.labels("retried").inc()
            if self.sender.send(entry.record):
                self.outbox.done(entry)
                metrics.RECORDS.labels("delivered").inc()
            elif self.sender_gave_up(entry):
                self.outbox.done(entry)
            else:
                self.outbox.release(entry)
        except StoreError as exc:  # it stays pending, and is tried again after its back-off
            log.warning("call record %s: the outbox failed: %s", entry.record.get("id"), exc)
        except Exception:
            log.exception("call record %s: delivery failed unexpectedly", entry.record.get("id"))
        finally:
            self._give_back(1)

    def sender_gave_up(self, entry: Entry) -> bool:
        if time.time() - entry.added_at < self.give_up_after:
            return False
        log.error("call record %s given up after %d attempts over %.0f s (CALL_REPORT_RETRY_SECONDS); "
                  "it stays in the archive: voicebot calls export", entry.record["id"], entry.attempts + 1,
                  self.give_up_after)
        metrics.RECORDS.labels("failed").inc()
        return True

    def stop(self) -> None:
        self.stopping.set()
        self.sender.close()  # sends in flight are cut off; their records stay queued, for the next attempt
