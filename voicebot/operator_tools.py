"""The operator's own tools: declared in TOOLS_FILE, called over HTTP, answered back to the model.

A tool is a JSON object in ``{"tools": [...]}``: ``name``, ``description``,
``input_schema`` (as the Messages API takes them), ``url``, and optionally
``timeout_seconds`` and ``filler`` (what the caller hears while a slow tool
works, where the platform can say it at once). When the model uses one,
voicebot POSTs ``{id, call_id, platform, caller, variables, context, tool, input}`` to its URL
(``variables``: the call's, filled in by CONTEXT_URL; ``context``: what that answered),
signed like the end-of-call records, and the JSON answer becomes the
``tool_result``. Anything else (a timeout, a refused connection, a non-2xx,
an answer that is not JSON or too large) becomes a ``tool_result`` with
``is_error``, so the model can tell the caller plainly: never a lost turn.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .jsonfile import read_json_file
from .exceptions import ConfigError
from .egress import (HTTP, AddressPolicy, AddressRefused, BodyTooLarge, Cutoff, EgressError, EgressTimeout, Response,
                     operator_url_problem)
from .signing import VOICEBOT_HEADER as SIGNATURE_HEADER, sign
from .tools import LIFECYCLE_TOOLS, Tool

log = logging.getLogger(__name__)

CALL_ID_HEADER = "X-Voicebot-Tool-Call-Id"
MAX_ANSWER_BYTES = 16_384
_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def check_settings(settings: Mapping[str, Any]) -> None:
    """TOOLS_FILE must declare tools that can be called, with the secret that signs their calls."""
    if settings["TOOLS_FILE"]:
        load_tools(settings["TOOLS_FILE"], address_policy(settings))
        if not settings["TOOLS_SECRET"]:
            raise ConfigError("TOOLS_FILE needs TOOLS_SECRET: tool calls carry a signature the tool checks")


def address_policy(config: Mapping[str, Any]) -> AddressPolicy:
    """Where tools (and anything else of the operator's that a call reaches) may be: public addresses,
    loopback with TOOLS_ALLOW_LOOPBACK, and the networks TOOLS_ALLOW_NETWORKS names."""
    return AddressPolicy(allow_loopback=config["TOOLS_ALLOW_LOOPBACK"],
                         allowed_networks=config["TOOLS_ALLOW_NETWORKS"])


@dataclass(frozen=True)
class HttpTool(Tool):
    """An operator's tool from TOOLS_FILE: an endpoint voicebot POSTs the model's input to, signed."""

    url: str = ""
    timeout: float = 3.0
    filler: str = ""


@dataclass(frozen=True)
class ToolResult:
    """What a tool call gave the model: its content, and whether it failed."""

    content: str
    is_error: bool = False

    def block(self, tool_use_id: str) -> dict[str, Any]:
        block: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_use_id, "content": self.content}
        if self.is_error:
            block["is_error"] = True
        return block


def load_tools(path: str, policy: AddressPolicy) -> list[HttpTool]:
    """The tools of ``path``; a ConfigError listing every mistake, one line each, otherwise."""
    declared = read_json_file("TOOLS_FILE", path)
    items = declared.get("tools") if isinstance(declared, dict) else None
    if not isinstance(items, list):
        raise ConfigError(f'TOOLS_FILE={path!r} must be {{"tools": [...]}}')
    mistakes: list[str] = []
    tools: list[HttpTool] = []
    for index, item in enumerate(items):
        where = f"TOOLS_FILE tools[{index}]"
        if not isinstance(item, dict):
            mistakes.append(f"{where} must be an object")
            continue
        name = item.get("name")
        where = f"TOOLS_FILE tool {name!r}" if isinstance(name, str) else where
        before = len(mistakes)
        if not isinstance(name, str) or not _NAME.match(name):
            mistakes.append(f"{where}: name must be 1-64 letters, digits, '_' or '-'")
        elif name in LIFECYCLE_TOOLS or any(t.name == name for t in tools):
            mistakes.append(f"{where}: the name is taken")
        if not isinstance(item.get("description"), str) or not item["description"].strip():
            mistakes.append(f"{where}: description is missing (the model decides from it when to use the tool)")
        schema = item.get("input_schema")
        if not isinstance(schema, dict) or schema.get("type") != "object":
            mistakes.append(f'{where}: input_schema must be a JSON schema with "type": "object"')
        url_problem = operator_url_problem(item.get("url"), policy)
        if url_problem:
            mistakes.append(f"{where}: url {url_problem}")
        timeout = item.get("timeout_seconds", 3)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 10:
            mistakes.append(f"{where}: timeout_seconds must be a number of seconds, more than 0 and at most 10")
        filler = item.get("filler", "")
        if not isinstance(filler, str):
            mistakes.append(f"{where}: filler must be text")
        if len(mistakes) == before:
            tools.append(HttpTool(str(name), item["description"], dict(schema or {}), url=item["url"],
                                  timeout=float(timeout), filler=filler.strip()))
    if mistakes:
        raise ConfigError("\n".join(mistakes))
    return tools


class ToolCall:
    """A tool call under way: its result within its deadline, never an exception."""

    def __init__(self, tool: HttpTool, future: "Future[ToolResult]", cutoff: Cutoff | None = None) -> None:
        self.tool = tool
        self._future = future
        self._cutoff = cutoff

    @classmethod
    def finished(cls, tool: HttpTool, result: "ToolResult") -> "ToolCall":
        """A call settled before it started (no time left, no slot free)."""
        done: Future[ToolResult] = Future()
        done.set_result(result)
        return cls(tool, done)

    def wait(self, seconds: float) -> bool:
        """True once the call is over (answered or failed) within ``seconds``."""
        try:
            self._future.result(timeout=max(0.0, seconds))
        except FutureTimeout:
            return False
        except Exception:
            return True
        return True

    def result(self, timeout: float) -> "ToolResult":
        """The tool's result; past ``timeout`` the call is cut off (and never sent, if it was not yet)."""
        try:
            return self._future.result(timeout=max(0.0, timeout))
        except FutureTimeout:
            if self._cutoff is not None:
                self._cutoff.cancel()
            return ToolResult(f"The {self.tool.name} tool did not answer in time.", True)
        except Exception:  # the call itself catches everything; this is the last guard
            log.exception("tool %s failed unexpectedly", self.tool.name)
            return ToolResult(f"The {self.tool.name} tool failed.", True)


class ToolCaller:
    """Calls the operator's tools: signed, never redirected, one deadline each, a bounded number at a time.

    Each tool has its own ``per_tool`` slots in this worker: a tool that is
    slow or down fills only its own, and a call to it past them fails at once
    (an ``is_error`` result) instead of queueing to be sent late; other tools
    keep working.
    """

    def __init__(self, secret: str, tools: Sequence[HttpTool], *, policy: AddressPolicy | None = None,
                 per_tool: int = 32) -> None:
        self.secret = secret
        self.per_tool = per_tool
        self.http = HTTP(policy=policy or AddressPolicy(), pool_size=per_tool)
        self._slots = {tool.name: threading.BoundedSemaphore(per_tool) for tool in tools}
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def start(self, tool: HttpTool, tool_use_id: str, tool_input: dict[str, Any], *, call_id: str, platform: str,
              caller: str | None, timeout: float, variables: Mapping[str, str] | None = None,
              context: Mapping[str, Any] | None = None) -> ToolCall:
        body = {"id": tool_use_id, "call_id": call_id, "platform": platform, "caller": caller,
                "variables": dict(variables or {}), "context": dict(context) if context else None,
                "tool": tool.name, "input": tool_input}
        if timeout < 0.05:
            return ToolCall.finished(tool, self._failed(tool, body, "could not be asked: no time was left in "
                                                                    "this turn"))
        slots = self._slots.get(tool.name)
        if slots is None or not slots.acquire(blocking=False):
            return ToolCall.finished(tool, self._failed(tool, body, "is busy with other calls"))
        cutoff = self.http.cutoff(timeout)
        try:
            future = self._executor().submit(self._call_and_free, tool, tool_use_id, body, cutoff, slots)
        except RuntimeError:  # shut down: the worker is stopping
            slots.release()
            return ToolCall.finished(tool, self._failed(tool, body, "could not be asked: the service is stopping"))
        return ToolCall(tool, future, cutoff)

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:  # made on first use, in the worker process
                self._pool = ThreadPoolExecutor(self.per_tool * max(1, len(self._slots)),
                                                thread_name_prefix="tool")
            return self._pool

    def _call_and_free(self, tool: HttpTool, tool_use_id: str, body: dict[str, Any], cutoff: Cutoff,
                       slots: threading.BoundedSemaphore) -> ToolResult:
        try:
            return self._call(tool, tool_use_id, body, cutoff)
        except Exception:
            log.exception("tool %s failed unexpectedly call_id=%s", tool.name, body["call_id"])
            return self._failed(tool, body, "failed")
        finally:
            slots.release()

    def _call(self, tool: HttpTool, tool_use_id: str, body: dict[str, Any], cutoff: Cutoff) -> ToolResult:
        raw = json.dumps(body, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(raw, self.secret),
                   CALL_ID_HEADER: tool_use_id}
        try:
            answer = self.http.request("POST", tool.url, body=raw, headers=headers, limit=MAX_ANSWER_BYTES,
                                       cutoff=cutoff)
        except EgressTimeout:
            return self._failed(tool, body, "did not answer in time")
        except AddressRefused as exc:
            return self._failed(tool, body, "could not be reached", why=f"refused: {exc}")
        except BodyTooLarge:
            return self._failed(tool, body, f"answered with more than {MAX_ANSWER_BYTES} bytes")
        except EgressError as exc:
            why = str(exc)
            return self._failed(tool, body, "answered with a broken or cut-off body" if exc.sent
                                else "could not be reached", why=why)
        problem = _answer_problem(answer)
        if problem:
            return self._failed(tool, body, problem)
        text = answer.body.decode("utf-8")
        log.debug("tool %s call_id=%s answered %s", tool.name, body["call_id"], text[:500])
        return ToolResult(text)

    def _failed(self, tool: HttpTool, body: dict[str, Any], what: str, why: str = "") -> ToolResult:
        log.warning("tool %s %s call_id=%s%s", tool.name, what, body["call_id"], f" ({why})" if why else "")
        return ToolResult(f"The {tool.name} tool {what}; tell the caller you could not check this right now.",
                          True)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self.http.close()


def _answer_problem(answer: Response) -> str:
    """What is wrong with a tool's answer, in words for the model; empty when it is a JSON answer."""
    if answer.redirect:
        return f"answered with a redirect (HTTP {answer.status}), which is not followed"
    if not answer.ok:
        return f"answered with an error (HTTP {answer.status})"
    try:
        json.loads(answer.body.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return "answered with something that is not JSON (in UTF-8)"
    return ""
