"""What one live call costs in memory (in-memory store) and in Redis, typical and at the settings' bounds.

    .venv/bin/python bench/call_memory.py [calls]

Each call is written as the conversation core writes it: a session holding
the history the model sees (MAX_HISTORY_TURNS exchanges) and the transcript
kept beside it (MAX_TRANSCRIPT_LINES lines). "typical": 20 turns of a
60-character utterance and a 150-character reply. "bounds": every utterance
MAX_TRANSCRIPT_CHARS long, every reply MAX_REPLY_CHARS, the call long enough
that the history and the transcript are full. The in-memory figure is the
process's RSS growth per call; the Redis figure is MEMORY USAGE of the call's
keys (a private redis-server is started for it).
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from voicebot.platforms import DEFAULTS  # noqa: E402
from voicebot.conversation import new_session  # noqa: E402
from voicebot_testing.processes import RedisServer  # noqa: E402
from voicebot.stores import MemoryStore, RedisStore  # noqa: E402


def shapes() -> dict[str, tuple[int, int, int]]:
    """name -> (turns, utterance characters, reply characters)."""
    history, lines = DEFAULTS["MAX_HISTORY_TURNS"], DEFAULTS["MAX_TRANSCRIPT_LINES"]
    return {"typical": (20, 60, 150),
            "bounds": (max(history, lines // 2) + 5, DEFAULTS["MAX_TRANSCRIPT_CHARS"], DEFAULTS["MAX_REPLY_CHARS"])}


def fill(store, call_id: str, turns: int, said: int, reply: int) -> None:
    session = dict(new_session(call_id, "+15551230000"))
    for n in range(turns):
        with store.locked(call_id, 5.0) as record:
            caller, bot = (f"{n} " + "x" * said)[:said], (f"{n} " + "y" * reply)[:reply]
            session["messages"] = (session["messages"] + [{"role": "user", "content": caller},
                                                          {"role": "assistant", "content": bot}])
            session["messages"] = session["messages"][-2 * DEFAULTS["MAX_HISTORY_TURNS"]:]
            session["turns"] = n + 1
            stamp = "2026-12-01T00:00:00.000Z"
            record.save(session, release=True, event_id=f"e{n}",
                        lines=[{"at": stamp, "speaker": "caller", "text": caller},
                               {"at": stamp, "speaker": "bot", "text": bot, "fallback": False}])


def rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    lines = DEFAULTS["MAX_TRANSCRIPT_LINES"]
    print(f"defaults: MAX_HISTORY_TURNS={DEFAULTS['MAX_HISTORY_TURNS']} MAX_TRANSCRIPT_LINES={lines} "
          f"MAX_TRANSCRIPT_CHARS={DEFAULTS['MAX_TRANSCRIPT_CHARS']} MAX_REPLY_CHARS={DEFAULTS['MAX_REPLY_CHARS']}")
    redis_server = RedisServer().start()
    try:
        for name, (turns, said, reply) in shapes().items():
            memory = MemoryStore(3600, max_lines=lines)
            before = rss_kib()
            started = time.monotonic()
            for n in range(calls):
                fill(memory, f"{name}-{n}", turns, said, reply)
            per_call = (rss_kib() - before) / calls
            redis = RedisStore(redis_server.url, ttl_seconds=3600, lease_seconds=5, prefix="bench",
                               max_lines=lines)
            fill(redis, f"{name}-r", turns, said, reply)
            keys = redis.client.keys(f"bench:call:{{{name}-r}}:*")
            in_redis = sum(redis.client.memory_usage(key) or 0 for key in keys)
            print(f"{name:8} {turns} turns, {said}/{reply} characters: in memory {per_call:.1f} KiB per call "
                  f"(RSS, {calls} calls, {time.monotonic() - started:.1f} s); in Redis {in_redis / 1024:.1f} KiB "
                  f"in {len(keys)} keys")
            redis.close()
    finally:
        redis_server.stop()


if __name__ == "__main__":
    main()
