"""End-of-call records: made when a call ends for any reason, kept, delivered at least once."""

from .outbox import MemoryOutbox, Outbox, RedisOutbox, build_outbox
from .record import build_record, record_id

__all__ = ["MemoryOutbox", "Outbox", "RedisOutbox", "build_outbox", "build_record", "record_id"]
