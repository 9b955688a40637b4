"""Sending records to CALL_REPORT_URL: signed like VoIPBin's events, at least once, retried with back-off."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import socket
import threading
import time
from urllib.parse import urlsplit

import requests

from .. import metrics
from ..exceptions import StoreError
from .outbox import Outbox

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Voicebot-Signature"
RECORD_ID_HEADER = "X-Voicebot-Record-Id"


def signature(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class RecordSender:
    def __init__(self, url: str, secret: str, timeout: float = 5.0) -> None:
        self.url = url
        self.secret = secret
        self.timeout = timeout
        # Only the host in log lines: a receiver's URL may carry a token.
        self.where = urlsplit(url).netloc
        self._session = requests.Session()

    def send(self, record: dict) -> bool:
        body = json.dumps(record, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signature(body, self.secret),
                   RECORD_ID_HEADER: record["id"]}
        try:
            answer = self._session.post(self.url, data=body, headers=headers, timeout=(2.0, self.timeout))
        except requests.RequestException as exc:
            log.warning("call record %s not delivered to %s: %s", record["id"], self.where, type(exc).__name__)
            return False
        if 200 <= answer.status_code < 300:
            return True
        log.warning("call record %s not delivered to %s: HTTP %d", record["id"], self.where, answer.status_code)
        return False

    def close(self) -> None:
        self._session.close()


class DeliveryLoop(threading.Thread):
    """One per worker process: takes due records from the outbox and sends them."""

    def __init__(self, outbox: Outbox, sender: RecordSender, *, give_up_after: float,
                 idle_wait: float = 0.5) -> None:
        super().__init__(name="call-record-delivery", daemon=True)
        self.outbox = outbox
        self.sender = sender
        self.give_up_after = give_up_after
        self.idle_wait = idle_wait
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{id(self):x}"
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                worked = self.deliver_due()
            except StoreError as exc:
                log.warning("call record delivery paused: %s", exc)
                worked = False
            if not worked:
                self.stopping.wait(self.idle_wait)

    def deliver_due(self) -> bool:
        entries = self.outbox.due(self.consumer, 20)
        for entry in entries:
            if entry.attempts:
                metrics.RECORDS.labels("retried").inc()
            if self.sender.send(entry.record):
                self.outbox.done(entry)
                metrics.RECORDS.labels("delivered").inc()
            elif self.sender_gave_up(entry):
                self.outbox.done(entry)
            else:
                self.outbox.release(entry)
        return bool(entries)

    def sender_gave_up(self, entry) -> bool:
        if time.time() - entry.added_at < self.give_up_after:
            return False
        log.error("call record %s given up after %d attempts over %.0f s (CALL_REPORT_RETRY_SECONDS); "
                  "it stays in the archive: voicebot calls export", entry.record["id"], entry.attempts + 1,
                  self.give_up_after)
        metrics.RECORDS.labels("failed").inc()
        return True

    def stop(self) -> None:
        self.stopping.set()
