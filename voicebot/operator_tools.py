"""The operator's own tools: declared in TOOLS_FILE, called over HTTP, answered back to the model.

A tool is a JSON object in ``{"tools": [...]}``: ``name``, ``description``,
``input_schema`` (as the Messages API takes them), ``url``, and optionally
``timeout_seconds`` and ``filler`` (what the caller hears while a slow tool
works, where the platform can say it at once). When the model uses one,
voicebot POSTs ``{id, call_id, platform, caller, tool, input}`` to its URL,
signed like the end-of-call records, and the JSON answer becomes the
``tool_result``. Anything else (a timeout, a refused connection, a non-2xx,
an answer that is not JSON or too large) becomes a ``tool_result`` with
``is_error``, so the model can tell the caller plainly: never a lost turn.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import re
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from .exceptions import ConfigError
from .tools import LIFECYCLE_TOOLS, Tool

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Voicebot-Signature"
CALL_ID_HEADER = "X-Voicebot-Tool-Call-Id"
MAX_ANSWER_BYTES = 16_384
_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


@dataclass(frozen=True)
class HttpTool(Tool):
    url: str = ""
    timeout: float = 3.0
    filler: str = ""


@dataclass(frozen=True)
class ToolResult:
    content: str
    is_error: bool = False

    def block(self, tool_use_id: str) -> dict[str, Any]:
        block: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_use_id, "content": self.content}
        if self.is_error:
            block["is_error"] = True
        return block


def load_tools(path: str, *, allow_loopback: bool) -> list[HttpTool]:
    """The tools of ``path``; a ConfigError listing every mistake, one line each, otherwise."""
    try:
        declared = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"TOOLS_FILE={path!r} cannot be read: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(f"TOOLS_FILE={path!r} is not valid JSON: {exc}") from None
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
        url_problem = _url_problem(item.get("url"), allow_loopback)
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


def _url_problem(url: object, allow_loopback: bool) -> str:
    if not isinstance(url, str):
        return "is missing"
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return ""
    if parts.scheme == "http" and parts.hostname:
        if _is_loopback(parts.hostname):
            return "" if allow_loopback else "is http:// to loopback: set TOOLS_ALLOW_LOOPBACK=1 (local trials only)"
        return "must be https:// (http:// only to loopback, with TOOLS_ALLOW_LOOPBACK=1)"
    return "must be an https:// URL"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class ToolCaller:
    """Calls the operator's tools: signed, bounded in time and size, in a small pool of threads."""

    secret: str
    max_workers: int = 32
    _pool: ThreadPoolExecutor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._session = requests.Session()

    def start(self, tool: HttpTool, tool_use_id: str, tool_input: dict, *, call_id: str, platform: str,
              caller: str | None, timeout: float) -> "Future[ToolResult]":
        if self._pool is None:  # made on first use, in the worker process
            self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="tool")
        body = {"id": tool_use_id, "call_id": call_id, "platform": platform, "caller": caller,
                "tool": tool.name, "input": tool_input}
        return self._pool.submit(self._call, tool, tool_use_id, body, timeout)

    def _call(self, tool: HttpTool, tool_use_id: str, body: dict, timeout: float) -> ToolResult:
        if timeout < 0.05:
            return ToolResult("The tool could not be asked: no time was left in this turn.", True)
        raw = json.dumps(body, separators=(",", ":")).encode()
        signature = "sha256=" + hmac.new(self.secret.encode(), raw, hashlib.sha256).hexdigest()
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signature, CALL_ID_HEADER: tool_use_id}
        try:
            with self._session.post(tool.url, data=raw, headers=headers, timeout=(min(1.0, timeout), timeout),
                                    stream=True) as answer:
                data = answer.raw.read(MAX_ANSWER_BYTES + 1, decode_content=True)
                status = answer.status_code
        except requests.Timeout:
            return self._failed(tool, body, "did not answer in time")
        except requests.RequestException:
            return self._failed(tool, body, "could not be reached")
        if not 200 <= status < 300:
            return self._failed(tool, body, f"answered with an error (HTTP {status})")
        if len(data) > MAX_ANSWER_BYTES:
            return self._failed(tool, body, f"answered with more than {MAX_ANSWER_BYTES} bytes")
        try:
            json.loads(data)
        except ValueError:
            return self._failed(tool, body, "answered with something that is not JSON")
        log.debug("tool %s call_id=%s answered %s", tool.name, body["call_id"], data[:500])
        return ToolResult(data.decode())

    def _failed(self, tool: HttpTool, body: dict, what: str) -> ToolResult:
        log.warning("tool %s %s call_id=%s", tool.name, what, body["call_id"])
        return ToolResult(f"The {tool.name} tool {what}; tell the caller you could not check this right now.",
                          True)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._session.close()
