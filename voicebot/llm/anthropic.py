"""Replies from Claude: the official anthropic SDK's headers and errors, a lean wire, a wall-clock deadline."""

from __future__ import annotations

import json
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import anthropic
import httpx2

from .. import compact_json
from ..exceptions import LLMError, LLMKeyRejected, LLMRejected, LLMTimeout, LLMUnavailable
from ..tools import Tool
from .base import LLM, Message, OnText, Reply, ToolUse
from .streaming import HelperPool, NotSaid, Sentences, events, wire_errors
from ..wire import Answer, Wire, WireError, proxy_configured, wall_clock_deadline

MESSAGES = "/v1/messages"

# The SDK's errors, most specific first, and what each means to a turn.
# Retrying inside a phone turn is left to the next turn: the caller hears the
# fallback line now rather than silence while we back off.
_ERRORS: tuple[tuple[type[Exception], type[LLMError]], ...] = (
    (anthropic.APITimeoutError, LLMTimeout),
    (anthropic.APIConnectionError, LLMUnavailable),
    (anthropic.AuthenticationError, LLMKeyRejected),
    (anthropic.PermissionDeniedError, LLMKeyRejected),
    (anthropic.RateLimitError, LLMUnavailable),
    (anthropic.InternalServerError, LLMUnavailable),  # 5xx, 529 overloaded
    (anthropic.APIStatusError, LLMRejected),
    (anthropic.AnthropicError, LLMUnavailable),
)


class AnthropicLLM(LLM):
    """The model as Anthropic's Messages API serves it: a reply (streamed where asked) within a deadline,
    its errors mapped to voicebot's (``LLMTimeout``, ``LLMUnavailable``, ``LLMRejected``, ``LLMKeyRejected``)."""

    name = "anthropic"

    def __init__(self, *, api_key: str, model: str, max_tokens: int, base_url: str | None = None,
                 client: anthropic.Anthropic | None = None, max_concurrency: int = 64,
                 prompt_caching: bool = True) -> None:
        self.model = model
        self.max_tokens = max_tokens
        self.prompt_caching = prompt_caching
        # The SDK's client gives the headers, the base URL and the typed errors. It also carries the calls
        # itself when given from outside, or behind an HTTP proxy (which only httpx honours): then a call
        # runs on a pool thread and the turn waits for it. Otherwise a turn's bytes go over the wire, in
        # the turn's own thread, every read held to the deadline (see voicebot/wire.py).
        self._client = client or anthropic.Anthropic(
            api_key=api_key,
            base_url=base_url or None,
            max_retries=0,
            # The SDK's client follows redirects by default; the API never redirects, and the key must
            # not follow a Location header anywhere.
            http_client=anthropic.DefaultHttpxClient(follow_redirects=False),
        )
        self._helpers = HelperPool(max_concurrency)
        self._wire = (Wire(str(self._client.base_url), self._client.default_headers, self._helpers,
                           httpx2.create_ssl_context)
                      if client is None and not proxy_configured() else None)
        # The raw response, read as plain JSON: building the SDK's typed
        # Message costs about a fifth of the SDK's CPU per call, and a turn
        # needs only the text blocks.
        self._create = self._client.messages.with_raw_response.create

    @property
    def _deadline_in_sockets(self) -> bool:
        return self._wire is not None

    def reply(self, system: str, messages: Sequence[Message], timeout: float,
              tools: Sequence[Tool] = (), allow_tools: bool = True, *, force_tool: str | None = None) -> Reply:
        """Within ``timeout`` seconds of wall time, however the model trickles its answer.

        An HTTP client's timeout bounds each read, not the call. The wire
        holds every read to the deadline; through the SDK's client instead,
        the call runs on a pool thread and the turn waits for it ``timeout``
        seconds at most.
        """
        if timeout <= 0.01:
            raise LLMTimeout(f"{self.model}: no time left for the model in this turn")
        body = self._body(system, list(messages), [tool.spec() for tool in tools], allow_tools, force_tool)
        if self._wire is not None:
            with wall_clock_deadline(timeout):
                return self._mapped(lambda: self._call(body), timeout)
        future = self._helpers().submit(self._mapped, lambda: self._call_sdk(body, timeout), timeout)
        try:
            return future.result(timeout)
        except FutureTimeout:
            future.cancel()
            raise LLMTimeout(f"{self.model}: no reply within {timeout:.1f}s") from None

    def stream_reply(self, system: str, messages: Sequence[Message], timeout: float, on_text: OnText,
                     tools: Sequence[Tool] = (), allow_tools: bool = True) -> Reply:
        """The Messages API's streaming, read in the turn's own thread.

        Each sentence goes to ``on_text`` as soon as the model has finished
        it (sentences finished by one read of the stream, together). While a
        piece is being said, the model's next words wait in the socket, and
        no thread hands anything to another. The stream is read one chunk at
        a time, so sentences that queued during a say are said one by one,
        not merged. The wall-clock deadline holds every read, as in
        ``reply``; behind an HTTP proxy, where it cannot, the reply comes
        whole instead.
        """
        if timeout <= 0.01:
            raise LLMTimeout(f"{self.model}: no time left for the model in this turn")
        if self._wire is None:
            return self.reply(system, messages, timeout, tools, allow_tools)
        body = self._body(system, list(messages), [tool.spec() for tool in tools], allow_tools)
        body["stream"] = True
        try:
            with wall_clock_deadline(timeout):
                return self._mapped(lambda: self._read_stream(body, on_text), timeout)
        except NotSaid as failed:
            raise failed.error from None  # the platform's own error, for the turn to answer as it does

    def _body(self, system: str, messages: list[Message], tools: list[dict[str, Any]],
              allow_tools: bool, force_tool: str | None = None) -> dict[str, Any]:
        # Plain JSON-able dicts: the SDK's TypedDicts add nothing to what the strict fake checks.
        sent_system: Any = system
        sent_messages: Any = messages
        if self.prompt_caching:
            sent_system, sent_messages = _with_cache_breakpoints(system, messages)
        body: dict[str, Any] = {"model": self.model, "max_tokens": self.max_tokens, "system": sent_system,
                                "messages": sent_messages}
        if tools:
            body["tools"] = tools
            if not allow_tools:
                body["tool_choice"] = {"type": "none"}
            elif force_tool:
                body["tool_choice"] = {"type": "tool", "name": force_tool}
        return body

    def _mapped(self, call: Callable[[], Reply], timeout: float) -> Reply:
        """The call, with the wire's and the SDK's errors mapped to ours."""
        try:
            with wire_errors(self.model, timeout):
                return call()
        except (LLMError, NotSaid):
            raise
        except ValueError as exc:
            raise LLMUnavailable(f"{self.model}: the answer is not JSON") from exc
        except Exception as exc:
            mapped = self._ours(exc)
            raise (mapped if isinstance(mapped, LLMError)
                   else LLMUnavailable(f"{self.model}: {type(exc).__name__}")) from exc

    def _ours(self, exc: Exception) -> Exception:
        for vendor_error, ours in _ERRORS:
            if isinstance(exc, vendor_error):
                status = getattr(exc, "status_code", None)
                detail = f"HTTP {status}" if status else type(exc).__name__
                return ours(f"{self.model}: {detail}")
        return exc

    @contextmanager
    def _answer(self, body: dict[str, Any]) -> Iterator[Answer]:
        """The API's answer to ``body`` on the wire; a status other than 200 raises the SDK's own error for it."""
        assert self._wire is not None
        # Never sent twice: a POST that may have reached the API may have been billed (again=False).
        with self._wire.request("POST", MESSAGES, compact_json.dumps(body), again=False) as answer:
            if answer.status != 200:
                # The SDK's error for this status and body, built as the SDK builds it from its own answer.
                response = httpx2.Response(answer.status, headers=list(answer.headers.items()), content=answer.read(),
                                           request=httpx2.Request("POST", self._wire.base_url + MESSAGES))
                raise self._client._make_status_error_from_response(response)
            yield answer

    def _call(self, body: dict[str, Any]) -> Reply:
        with self._answer(body) as answer:
            return _reply_of(json.loads(answer.read()), self.model)

    def _call_sdk(self, body: dict[str, Any], timeout: float) -> Reply:
        extra = {name: body[name] for name in ("tools", "tool_choice") if name in body}
        # As raw JSON (extra_body), not typed params: the SDK walks typed params
        # through its transform on every call, and tool schemas are deep.
        response = self._create(model=body["model"], max_tokens=body["max_tokens"], system=body["system"],
                                messages=body["messages"], extra_body=extra or None, timeout=timeout)
        return _reply_of(json.loads(response.http_response.content), self.model)

    def _read_stream(self, body: dict[str, Any], on_text: OnText) -> Reply:
        """Server-sent events as plain JSON (the SDK's typed events cost CPU per token)."""
        sentences, finished = Sentences(on_text), False
        blocks: dict[int, dict[str, Any]] = {}
        usage: dict[str, Any] = {}
        with self._answer(body) as answer:
            if answer.encoded:
                raise WireError(f"the stream came {answer.encoded}-encoded, which was not asked for")
            for read in events(answer.body):
                for event in read:
                    kind = event.get("type") if isinstance(event, dict) else None
                    if kind == "content_block_delta":
                        delta = event.get("delta") or {}
                        if delta.get("type") == "text_delta":
                            sentences.add(delta.get("text", ""))
                        elif delta.get("type") == "input_json_delta":
                            block = blocks.setdefault(event.get("index", -1), {})
                            block["json"] = block.get("json", "") + delta.get("partial_json", "")
                    elif kind == "content_block_start":
                        block = event.get("content_block") or {}
                        if block.get("type") == "tool_use":
                            blocks[event.get("index", -1)] = {"id": block.get("id"), "name": block.get("name"),
                                                              "json": ""}
                    elif kind == "message_start":
                        usage.update((event.get("message") or {}).get("usage") or {})
                    elif kind == "message_delta":
                        usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
                    elif kind == "message_stop":
                        finished = True
                    elif kind == "error":
                        raise LLMUnavailable(f"{self.model}: {(event.get('error') or {}).get('type', 'error')} "
                                             "while streaming")
                if not sentences.hand_on():
                    return Reply(sentences.text)  # the caller talked: let go of the model
        if not finished:
            raise LLMUnavailable(f"{self.model}: the stream ended before the reply did")
        sentences.finish()
        uses = []
        for block in blocks.values():
            try:
                arguments = json.loads(block["json"]) if block.get("json") else {}
            except ValueError:
                arguments = {}
            if isinstance(block.get("id"), str) and isinstance(block.get("name"), str):
                uses.append(ToolUse(block["id"], block["name"], arguments if isinstance(arguments, dict) else {}))
        return Reply(sentences.text, uses, _usage(usage))

    def close(self) -> None:
        self._helpers.shutdown()
        if self._wire is not None:
            self._wire.close()
        self._client.close()


def _reply_of(message: Any, model: str) -> Reply:
    """A Messages API answer, read as plain JSON: its words, its tool uses and what it billed."""
    blocks = message.get("content") if isinstance(message, dict) else None
    if not isinstance(blocks, list):
        raise LLMUnavailable(f"{model}: the answer has no content")
    blocks = [b for b in blocks if isinstance(b, dict)]
    text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
    uses = [ToolUse(b["id"], b["name"], b.get("input") if isinstance(b.get("input"), dict) else {})
            for b in blocks if b.get("type") == "tool_use" and isinstance(b.get("id"), str)
            and isinstance(b.get("name"), str)]
    return Reply(text, uses, _usage(message.get("usage")))


_EPHEMERAL: dict[str, Any] = {"type": "ephemeral"}


def _with_cache_breakpoints(system: str, messages: list[Message]) -> tuple[list[dict[str, Any]], list[Any]]:
    """Two cache breakpoints, as the Messages API documents: after the system prompt (which caches the
    tools before it too) and after the newest message, so each turn of a call re-bills only what is
    new. The call's stored history is left as it is."""
    cached_system: list[dict[str, Any]] = [{"type": "text", "text": system, "cache_control": _EPHEMERAL}]
    if not messages:
        return cached_system, []
    last = messages[-1]
    content = last["content"]
    blocks: list[dict[str, Any]] = ([{"type": "text", "text": content}] if isinstance(content, str)
                                    else [dict(b) for b in content])
    blocks[-1] = {**blocks[-1], "cache_control": _EPHEMERAL}
    # The earlier messages go as they are (nothing changes them): copying a 20-turn history cost every turn.
    return cached_system, [*messages[:-1], {"role": last["role"], "content": blocks}]


def _usage(raw: object) -> dict[str, int]:
    if not isinstance(raw, dict):
        return {}
    names = {"input": "input_tokens", "cache_write": "cache_creation_input_tokens",
             "cache_read": "cache_read_input_tokens", "output": "output_tokens"}
    return {ours: int(raw.get(theirs) or 0) for ours, theirs in names.items()}
