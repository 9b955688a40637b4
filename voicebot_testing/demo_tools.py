"""``voicebot demo-tools``: a small service of the operator's to try TOOLS_FILE and CONTEXT_URL with.

It checks each request's ``X-Voicebot-Signature`` as a real one should,
answers ``lookup_order`` from a few fake orders, and at ``/context`` says who
a caller is (a few fake customers, by number). ``tools_file()`` is the
TOOLS_FILE that points voicebot at it.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

from voicebot.signing import VOICEBOT_HEADER, verify
from .loopback import JSONHandler, LoopbackServer

# Who calls from where, for /context (``voicebot chat`` calls from +15550000000).
CUSTOMERS = {
    "+15550000000": ({"name": "Ana", "topic": "your order 1001"},
                     "Ana's order 1001 shipped with UPS and is expected Thursday."),
    "+15551230000": ({"name": "Ben", "topic": "your order 1002"}, "Ben's order 1002 is being packed."),
}
ORDERS = {
    "1001": {"status": "shipped", "carrier": "UPS", "expected": "Thursday"},
    "1002": {"status": "being packed", "expected": "next Monday"},
    "1003": {"status": "delivered", "delivered": "yesterday, left at the front door"},
}


def tools_file(url: str) -> dict[str, Any]:
    return {"tools": [{
        "name": "lookup_order",
        "description": "Look up an order's status by its order number (four digits). Use it when the caller "
                       "asks where their order is.",
        "input_schema": {"type": "object", "properties": {"order_number": {"type": "string"}},
                         "required": ["order_number"]},
        "url": url, "timeout_seconds": 3, "filler": "One moment while I check that.",
    }]}


class DemoTools(LoopbackServer):
    """A small order-status tool service on loopback that checks TOOLS_SECRET's signature."""

    thread_name = "demo-tools"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, secret: str = "demo-tools-secret") -> None:
        super().__init__((host, port), _Handler)
        self.secret = secret
        self.calls: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        return self.base_url + "/lookup_order"

    @property
    def context_url(self) -> str:
        return self.base_url + "/context"


class _Handler(JSONHandler):
    server: DemoTools

    def do_POST(self) -> None:
        raw = self.read_body()
        if not verify(raw, self.headers.get(VOICEBOT_HEADER), self.server.secret):
            return self.send_json(401, {"error": "bad signature"})
        call = json.loads(raw)
        self.server.calls.append(call)
        if self.path == "/context":
            known = CUSTOMERS.get(str(call.get("caller")))
            if known is None:
                return self.send_json(200, {})
            return self.send_json(200, {"variables": known[0], "instructions": known[1]})
        given = call.get("input") or {}
        found = re.search(r"\d{4}", str(given.get("order_number") or given.get("query") or ""))
        number = found.group(0) if found else ""
        if number not in ORDERS:
            return self.send_json(200, {"found": False, "order_number": number})
        return self.send_json(200, {"found": True, "order_number": number, **ORDERS[number]})


def serve(host: str, port: int, secret: str) -> None:
    """The TOOLS_FILE to use goes to standard output (``voicebot demo-tools > tools.json``), the rest to stderr."""
    server = DemoTools(host, port, secret=secret)
    print(json.dumps(tools_file(server.url), indent=2), flush=True)
    print(f"demo tools on {server.url}; start voicebot with TOOLS_FILE=<the JSON above, saved> "
          f"TOOLS_SECRET={secret} TOOLS_ALLOW_LOOPBACK=1; caller context at CONTEXT_URL={server.context_url} "
          f"CONTEXT_SECRET={secret}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
