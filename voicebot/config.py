"""Configuration from the environment (12-factor).

Every setting voicebot reads is declared once in ``SETTINGS``, with its
default and meaning; the README's configuration table is written from it.
``from_environ`` turns the environment into a mapping for ``app.config``, and
rejects values that would only fail later, in the middle of a call.
"""

from __future__ import annotations

import ipaddress
import os
import textwrap
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import urlsplit

from .deadline import RESPONSE_BUDGET
from .exceptions import ConfigError
from .placeholders import names as placeholder_names

# The newest Haiku that the pinned anthropic SDK lists: fast and cheap enough
# for a turn of a phone call.
DEFAULT_MODEL = "claude-haiku-5-5"

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful support agent on a phone call. Keep responses brief, "
    "under two sentences, because they are spoken aloud. Use plain spoken "
    "words only: no lists, markdown, emoji or links."
)


def text(value: str) -> str:
    return value


def credential(value: str) -> str:
    """A key or token sent in a header: one word of printable ASCII (surrounding whitespace, as pasted, goes)."""
    value = value.strip()
    if any(not 32 < ord(char) < 127 or char == ";" for char in value):
        raise ValueError("must be one word of printable ASCII, with no space, control character or ';' in it")
    return value


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError("must be 1 or more")
    return number


def non_negative_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError("must be 0 or more")
    return number


def _port(value: str) -> int:
    number = int(value)
    if not 1 <= number <= 65535:
        raise ValueError("must be a TCP port, 1 to 65535")
    return number


def non_negative_float(value: str) -> float:
    number = float(value)
    if not number >= 0:
        raise ValueError("must be 0 or more")
    return number


def positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError("must be more than 0")
    return number


def flag(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be 1 or 0")


def redacted(value: str) -> str:
    """A URL with its password masked: ``redis://:***@host:6379/0``."""
    try:
        parts = urlsplit(value)
    except ValueError:
        return "(unreadable)"
    if not parts.password:
        return value
    user = parts.username or ""
    return value.replace(f"{user}:{parts.password}@", f"{user}:***@", 1)


def http_url(value: str) -> str:
    """A base URL voicebot sends requests to: ``http(s)://host[:port][/path]``, or empty (the default's)."""
    value = value.strip()
    if not value:
        return value
    try:
        parts = urlsplit(value)
        parts.port  # a port that is not a number raises here, not at the first request
    except ValueError:
        raise ValueError("must be an http:// or https:// URL, such as https://api.example.com") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in value):
        raise ValueError("must be an http:// or https:// URL, such as https://api.example.com")
    return value


def comma_list(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def networks(value: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """``10.0.0.0/8, fd00::/8`` as networks; ValueError naming the first that is not one."""
    found = []
    for item in comma_list(value):
        try:
            found.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"must be comma-separated networks such as 10.0.0.0/8; {item!r} is not one") from None
    return tuple(found)


def choice(*allowed: str) -> Callable[[str], str]:
    """A parser for one of ``allowed`` words (case and surrounding space ignored)."""
    def parse(value: str) -> str:
        word = value.strip().lower()
        if word not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return word
    return parse


def _log_level(value: str) -> str:
    level = value.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
    return level


@dataclass(frozen=True)
class Setting:
    """One setting of the registry: its name, default, parser and meaning (the README's table row)."""

    name: str
    default: Any
    parse: Callable[[str], Any]
    meaning: str
    secret: bool = False
    shown: str | None = None  # the default as the README shows it, where the value itself would not do

    def default_text(self) -> str:
        if self.shown is not None:
            return self.shown
        if isinstance(self.default, bool):
            return "1" if self.default else "0"
        if self.default in ("", ()):
            return "(empty)"
        return str(self.default)


SETTINGS: tuple[Setting, ...] = (
    Setting("MAX_LIVE_CALLS", 5000, positive_int,
            "In-memory store only: the most calls one process holds at once; a new call past it is answered 503 "
            "with `Retry-After` (Twilio: busy). A call takes about 23 KiB (20 short turns), at most about 320 KiB "
            "at the default MAX_HISTORY_TURNS, MAX_TRANSCRIPT_LINES and MAX_TRANSCRIPT_CHARS (measured: "
            "`bench/call_memory.py`). With Redis, bound memory with its `maxmemory`."),
    Setting("SESSION_TTL_SECONDS", 1800, positive_int,
            "A call idle this long is forgotten; every event restarts the clock."),
    Setting("MAX_HISTORY_TURNS", 20, positive_int,
            "Caller/bot exchanges kept per call and sent to the model (older ones are dropped)."),
    Setting("GREETING", "Hello! How can I help you today?", text,
            "What the bot says when a call starts."),
    Setting("SYSTEM_PROMPT", DEFAULT_SYSTEM_PROMPT, text,
            "The model's instructions.", shown="a brief, plain-spoken support agent"),
    Setting("FALLBACK_REPLY", "Sorry, I'm having trouble right now. Could you say that again?", text,
            "Said when the model fails or misses its deadline."),
    Setting("MAX_REPLY_CHARS", 300, positive_int,
            "Replies are cut at a sentence boundary below this length."),
    Setting("MAX_TRANSCRIPT_CHARS", 2000, positive_int,
            "Longest caller utterance accepted."),
    Setting("MAX_TRANSCRIPT_LINES", 200, positive_int,
            "Lines of a call's transcript kept for its record (caller, bot and tool lines; a tool's line "
            "keeps at most MAX_TRANSCRIPT_CHARS of its answer). Past it the oldest go, and the record says "
            "how many (`transcript_dropped`): a call's memory stays bounded however long it runs."),
    Setting("MAX_BODY_BYTES", 65536, positive_int,
            "Largest webhook body accepted (413 above it)."),
    Setting("LLM_PROVIDER", "anthropic", choice("anthropic", "openai"),
            "Who answers: `anthropic` (Claude, with ANTHROPIC_API_KEY) or `openai`: any server that speaks "
            "OpenAI's Chat Completions (OpenAI, Azure OpenAI, Groq, Together, vLLM, Ollama, llama.cpp), at "
            "OPENAI_BASE_URL, with the model LLM_MODEL names."),
    Setting("ANTHROPIC_API_KEY", "", credential,
            "Claude API key. Unset: an offline responder answers (for trying voicebot out).",
            secret=True),
    Setting("ANTHROPIC_BASE_URL", "", http_url,
            "Messages API base URL (a proxy, or a local fake in tests). Unset: Anthropic's."),
    Setting("OPENAI_API_KEY", "", credential,
            "With LLM_PROVIDER=openai: the key sent as `Authorization: Bearer` (a local server may need none).",
            secret=True),
    Setting("OPENAI_BASE_URL", "https://api.openai.com/v1", http_url,
            "With LLM_PROVIDER=openai: the Chat Completions server's base URL, up to `/chat/completions` "
            "(`https://api.groq.com/openai/v1`, `http://127.0.0.1:11434/v1` for Ollama, vLLM's `/v1`)."),
    Setting("TRANSFER_NUMBER", "", text,
            "Where the humans are: with it set, the model may hand a caller to a person (`transfer_call`). "
            "Unset: it can only end calls (`end_call`)."),
    Setting("GOODBYE_LINE", "Thank you for calling. Goodbye!", text,
            "Said when the model ends the call without words of its own."),
    Setting("TRANSFER_LINE", "Please hold while I connect you with a person.", text,
            "Said when the model hands the call to a person without words of its own."),
    Setting("CALL_REPORT_URL", "", http_url,
            "Where each end-of-call record is POSTed (JSON, signed), at least once. Unset: records are "
            "only kept (`voicebot calls export`)."),
    Setting("CALL_REPORT_SECRET", "", text,
            "Key of the records' `X-Voicebot-Signature: sha256=<hex HMAC-SHA256 of the body>`; needed "
            "with CALL_REPORT_URL.", secret=True),
    Setting("CALL_REPORT_RETRY_SECONDS", 86400.0, positive_float,
            "How long a record's delivery is retried (backing off from 1 s to a minute) before it is given up "
            "(it stays in the archive)."),
    Setting("CALL_RECORD_RETENTION_SECONDS", 604800.0, positive_float,
            "How long records are kept for `voicebot calls export` (with Redis; in memory, while the "
            "process lives)."),
    Setting("MAX_QUEUED_RECORDS", 1000, positive_int,
            "In-memory store only: records one process keeps waiting for CALL_REPORT_URL. Past it, while the "
            "receiver stays down, the oldest is given up on, logged and counted "
            "(`voicebot_call_records_total{event=\"dropped\"}`). With Redis the queue is a stream in Redis."),
    Setting("TOOLS_FILE", "", text,
            "A JSON file declaring the operator's tools the model may use mid-call (each an HTTPS endpoint "
            "voicebot POSTs to). Unset: no such tools."),
    Setting("TOOLS_SECRET", "", text,
            "Key of the tool calls' `X-Voicebot-Signature: sha256=<hex HMAC-SHA256 of the body>`; needed "
            "with TOOLS_FILE.", secret=True),
    Setting("TOOLS_ALLOW_LOOPBACK", False, flag,
            "1: tools may be on loopback, `http://` too (local trials and tests); otherwise only `https://` "
            "to public addresses."),
    Setting("TOOLS_ALLOW_NETWORKS", (), networks,
            "Comma-separated networks (`10.0.0.0/8, fd00::/8`) tools may reach although they are not public. "
            "Otherwise a tool whose host resolves to a private, link-local (cloud metadata), shared or "
            "reserved address is refused at every connection, whatever its URL says."),
    Setting("TOOLS_MAX_IN_FLIGHT", 32, positive_int,
            "Calls to one tool that one worker makes at once; past it a call fails at once (the model hears "
            "the tool is busy), so a slow tool never holds back the others or is called late."),
    Setting("CONTEXT_URL", "", http_url,
            "Where voicebot asks, as each call starts, who is calling: it POSTs `{call_id, platform, caller, "
            "called, direction, variables}` (JSON, signed) and takes back `{\"variables\": {...}, "
            "\"instructions\": \"...\"}`: the variables fill `{{name}}` placeholders in GREETING and "
            "SYSTEM_PROMPT, the instructions are added to the system prompt for that call. Asked once per call; "
            "slow, failing or malformed, the call goes on with the defaults. `https://` (`http://` to loopback "
            "with TOOLS_ALLOW_LOOPBACK=1). Unset: not asked."),
    Setting("CONTEXT_SECRET", "", text,
            "Key of the context requests' `X-Voicebot-Signature: sha256=<hex HMAC-SHA256 of the body>`; needed "
            "with CONTEXT_URL.", secret=True),
    Setting("CONTEXT_TIMEOUT_SECONDS", 2.0, positive_float,
            "How long a call's start waits for CONTEXT_URL before greeting with the defaults (at most 5)."),
    Setting("ANALYSIS_FILE", "", text,
            "A JSON plan for a post-call analysis in every record: `summary` (true/false), `data` (a JSON "
            "schema of what to extract), `success` (`{\"scale\": \"pass_fail\"|\"1-10\"|\"1-5\"|\"likert\", "
            "\"criteria\": \"...\"}`). Done by a record worker after the call, before the record is "
            "delivered or exported. Unset: no analysis."),
    Setting("ANALYSIS_TIMEOUT_SECONDS", 60.0, positive_float,
            "Time one record's analysis may take (two model answers at most); past it the record goes out with "
            "`analysis: null` and the reason."),
    Setting("ANALYSIS_MAX_TOKENS", 1024, positive_int,
            "Output token cap of an analysis (the summary and the structured data)."),
    Setting("MAX_TOOL_ROUNDS", 3, positive_int,
            "Most rounds of tool calls in one turn before the model must answer in words."),
    Setting("LLM_MODEL", DEFAULT_MODEL, text,
            "The model for replies: a Claude model, or with LLM_PROVIDER=openai the name the server serves "
            "(`gpt-4o-mini`, `llama-3.1-8b-instant`, `qwen2.5:7b`), which must then be set."),
    Setting("LLM_MAX_TOKENS", 160, positive_int, "Reply length cap in tokens; short for voice."),
    Setting("PROMPT_CACHING", True, flag,
            "1: cache breakpoints after the system prompt and the newest message, so each turn of a long "
            "call bills its earlier turns as cache reads (a tenth of the input price)."),
    Setting("LLM_TIMEOUT_SECONDS", 5.0, positive_float,
            "Deadline for the model's reply; past it the caller hears FALLBACK_REPLY."),
    Setting("LOCK_LEASE_SECONDS", 0.0, non_negative_float,
            "How long a turn may hold its call's lock before it is presumed dead. "
            "0: LLM_TIMEOUT_SECONDS + 2.", shown="0 (derived)"),
    Setting("LOCK_WAIT_SECONDS", 0.0, non_negative_float,
            "How long a turn waits for a busy call before answering 503. "
            "0: the lease + 1, so a dead worker's lock always runs out first. Never longer than the "
            "webhook's time budget allows.", shown="0 (derived)"),
    Setting("WEBHOOK_TOKEN", "", text,
            "Bearer token the article's endpoints (`/webhook/call-started`, `/webhook/transcript`) require "
            "(`Authorization: Bearer <token>`). Unset: they answer only requests made on this machine, "
            "for a local trial.",
            secret=True),
    Setting("TALK_PAGE", True, flag,
            "1: serve `/talk`, a page to talk to the bot from a browser (guarded like the article's "
            "endpoints: this machine only, or `?token=<WEBHOOK_TOKEN>`). 0: off."),
    Setting("METRICS_TOKEN", "", credential,
            "Bearer token `/metrics` requires. Unset: `/metrics` answers only requests made on this machine "
            "directly (and `voicebot serve` on a public bind says so at start): call counts and timings are "
            "nobody else's business.",
            secret=True),
    Setting("LOG_LEVEL", "INFO", _log_level,
            "DEBUG also logs what callers and the bot said; other levels never do."),
    Setting("PORT", 8000, _port,
            "TCP port gunicorn listens on, on 127.0.0.1 (the Procfile binds 0.0.0.0, as platforms need)."),
    Setting("WEB_CONCURRENCY", 0, non_negative_int,
            "gunicorn worker processes. 0/unset: 1 with the memory store, else one per core (at least 2).",
            shown="0 (derived)"),
    Setting("WEB_THREADS", 512, positive_int,
            "Threads per worker: turns one worker holds at once while the model thinks. With 32 or more, "
            "past all but 4 of them webhooks are answered 503 with `Retry-After` at once instead of queueing."),
    Setting("MAX_SOCKET_CALLS", 0, non_negative_int,
            "Call WebSockets one worker holds at once, of every kind (Twilio's and Telnyx's ConversationRelay, "
            "Retell's custom LLM): each holds a thread for its whole call, so past it a call's socket is refused "
            "(503) rather than starve the webhooks. 0: a quarter of WEB_THREADS."),
)

Check = Callable[[Mapping[str, Any]], None]


def markdown_table(settings: Sequence[Setting] = SETTINGS) -> str:
    """The README's configuration table, written from the settings registry."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    rows += [f"| `{s.name}` | {s.default_text()} | {s.meaning} |" for s in settings]
    return "\n".join(rows)


def env_example(settings: Sequence[Setting] = SETTINGS) -> str:
    """``.env.example``, written from the settings registry: every setting, commented out at its default."""
    lines = ["# voicebot's settings, each at its default (commented out). Copy to .env, set what you need,",
             "# and load it into the environment (systemd's EnvironmentFile, docker compose, `set -a; . ./.env`).",
             "# Written from the settings registry: python -c 'from voicebot.platforms import env_example; "
             "print(env_example(), end=\"\")' > .env.example", ""]
    for setting in settings:
        meaning = setting.meaning.replace("`", "")
        lines += ["# " + line for line in textwrap.wrap(meaning, 100)]
        value = "" if setting.secret or setting.default in ("", ()) else setting.default_text()
        if setting.shown is not None:  # "0 (derived)" sets 0; a description of a long default sets nothing
            first = setting.shown.split(" ")[0]
            value = first if first.lstrip("-").isdigit() else ""
        lines += [f"# {setting.name}={value}", ""]
    return "\n".join(lines)


def from_environ(environ: Mapping[str, str] | None = None, settings: Sequence[Setting] = SETTINGS) -> dict[str, Any]:
    """The settings that the environment sets, parsed; unset ones are left out."""
    environ = os.environ if environ is None else environ
    found: dict[str, Any] = {}
    for setting in settings:
        raw = environ.get(setting.name)
        if raw is None:
            continue
        try:
            found[setting.name] = setting.parse(raw)
        except ValueError as exc:
            shown = "(hidden)" if setting.secret else repr(redacted(raw))
            reason = str(exc) if str(exc).startswith(("must", "has")) else "must be a number"
            raise ConfigError(f"{setting.name}={shown} is not valid: {reason}") from None
    return found


def load(environ: Mapping[str, str] | None, overlay: Mapping[str, Any] | None, *,
         registry: Sequence[Setting], checks: Sequence[Check] = ()) -> dict[str, Any]:
    """Every setting: defaults, then the environment, then ``overlay``; checked as a whole.

    ``registry`` and ``checks`` add to the core's those of the features and
    the platforms (``voicebot.platforms.load_config`` passes them all): each
    feature checks its own settings, and this module knows none of them.
    """
    defaults = {s.name: s.default for s in registry}
    settings = {**defaults, **from_environ(environ, registry), **(overlay or {})}
    check(settings)
    for platform_check in checks:
        platform_check(settings)
    return settings


def check(settings: Mapping[str, Any]) -> None:
    """Refuse settings that only fail later, in the middle of a call."""
    lease, llm = settings["LOCK_LEASE_SECONDS"], settings["LLM_TIMEOUT_SECONDS"]
    if lease and lease <= llm + 0.5:
        raise ConfigError(f"LOCK_LEASE_SECONDS ({lease:g}) must be longer than LLM_TIMEOUT_SECONDS ({llm:g}) "
                          "plus half a second: a turn must never outlive its hold on the call")
    if llm + 1.0 > RESPONSE_BUDGET:
        raise ConfigError(f"LLM_TIMEOUT_SECONDS ({llm:g}) must leave a second of the {RESPONSE_BUDGET:g} s "
                          "a webhook may take (platforms wait 15 s, then send the event again)")
    if settings["LLM_PROVIDER"] == "openai" and settings["LLM_MODEL"] == DEFAULT_MODEL:
        raise ConfigError("LLM_PROVIDER=openai needs LLM_MODEL: the name of a model the server at OPENAI_BASE_URL "
                          "serves (gpt-4o-mini, llama-3.1-8b-instant, qwen2.5:7b)")
    if settings["CALL_REPORT_URL"] and not settings["CALL_REPORT_SECRET"]:
        raise ConfigError("CALL_REPORT_URL needs CALL_REPORT_SECRET: records carry a signature a receiver checks")


def check_placeholders(settings: Mapping[str, Any], variables_from: Sequence[str] = ()) -> None:
    """GREETING's and SYSTEM_PROMPT's placeholders need a source: CONTEXT_URL, or ``variables_from`` (the
    platforms on whose calls variables arrive: Retell's dynamic variables, Vapi's and ElevenLabs' metadata)."""
    if settings["CONTEXT_URL"] or variables_from:
        return
    for name in ("GREETING", "SYSTEM_PROMPT"):
        used = sorted(placeholder_names(settings[name]))
        if used:
            raise ConfigError(f"{name} uses {{{{{used[0]}}}}}, and nothing gives an inbound call a value for it: "
                              "set CONTEXT_URL (or turn on a front end whose calls carry variables: RETELL_API_KEY, "
                              "COMPLETIONS_TOKEN), or take the placeholder out")


def lock_lease_seconds(config: Mapping[str, Any]) -> float:
    lease: float = config["LOCK_LEASE_SECONDS"]
    return lease if lease > 0 else float(config["LLM_TIMEOUT_SECONDS"]) + 2.0


def lock_wait_seconds(config: Mapping[str, Any]) -> float:
    wait: float = config["LOCK_WAIT_SECONDS"]
    return wait if wait > 0 else lock_lease_seconds(config) + 1.0


def worker_count(config: Mapping[str, Any], cpu_count: int | None = None) -> int:
    workers: int = config["WEB_CONCURRENCY"]
    if workers > 0:
        return workers
    if not config["REDIS_URL"]:
        return 1
    return max(2, cpu_count or os.cpu_count() or 1)


def check_worker_model(config: Mapping[str, Any], workers: int) -> None:
    """Refuse a worker layout that would split calls across unrelated memories."""
    if workers > 1 and not config["REDIS_URL"]:
        raise ConfigError(
            f"{workers} worker processes with the in-memory session store would give each "
            "worker its own memory, and a call's turns would land in unrelated histories. "
            "Set REDIS_URL to share sessions between workers, or run one worker "
            "(WEB_CONCURRENCY=1) and raise WEB_THREADS for concurrency."
        )
