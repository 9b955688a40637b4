"""The account's own resources (customer, numbers, flows), as VoIPBin's code answers them: what
``voicebot voipbin setup`` reads and writes. Mixed into ``FakeVoipbin``, which holds the state."""

from __future__ import annotations

import uuid
from typing import Any

from .base import CUSTOMER_FIELDS, CUSTOMER_ID, NIL_UUID, ApiError, Json, now, page


class AccountResources:
    """``/customer``, ``/numbers``, ``/flows``; every write is listed in ``writes`` (idempotency checks)."""

    customer: Json
    numbers: dict[str, Json]
    flows: dict[str, Json]
    writes: list[str]

    def _get_customer(self, body: Any, query: Json) -> tuple[int, Json]:
        return 200, dict(self.customer)

    def _put_customer(self, body: Json, query: Json) -> tuple[int, Json]:
        missing = [f for f in CUSTOMER_FIELDS if not isinstance(body.get(f), str)]
        if missing:
            raise ApiError(400, f"missing fields: {', '.join(missing)}")
        if body["webhook_method"] not in ("POST", "PUT", "GET", "DELETE"):
            raise ApiError(400, "webhook_method must be POST, PUT, GET or DELETE")
        self.customer.update({f: body[f] for f in CUSTOMER_FIELDS})
        self.writes.append("PUT /customer")
        return 200, dict(self.customer)

    def _list_numbers(self, body: Any, query: Json) -> tuple[int, Json]:
        return 200, page([dict(n) for n in self.numbers.values()], query)

    def _put_number_flows(self, body: Json, query: Json, number_id: str) -> tuple[int, Json]:
        number = self.numbers.get(number_id)
        if number is None:
            raise ApiError(404, "number not found")
        number["call_flow_id"] = body.get("call_flow_id") or NIL_UUID
        number["message_flow_id"] = body.get("message_flow_id") or NIL_UUID
        self.writes.append(f"PUT /numbers/{number_id}/flow_ids")
        return 200, dict(number)

    def _list_flows(self, body: Any, query: Json) -> tuple[int, Json]:
        return 200, page([dict(f) for f in self.flows.values()], query)

    def _create_flow(self, body: Json, query: Json) -> tuple[int, Json]:
        flow = {"id": str(uuid.uuid4()), "customer_id": CUSTOMER_ID, "type": "flow", "tm_create": now()}
        flow.update(_flow_fields(body))
        self.flows[flow["id"]] = flow
        self.writes.append("POST /flows")
        return 200, dict(flow)

    def _put_flow(self, body: Json, query: Json, flow_id: str) -> tuple[int, Json]:
        flow = self.flows.get(flow_id)
        if flow is None:
            raise ApiError(404, "flow not found")
        flow.update(_flow_fields(body))
        self.writes.append(f"PUT /flows/{flow_id}")
        return 200, dict(flow)


def _flow_fields(body: Json) -> Json:
    actions = body.get("actions")
    if not isinstance(actions, list) or not all(isinstance(a, dict) and a.get("type") for a in actions):
        raise ApiError(400, "actions must be a list of actions with a type")
    return {"name": str(body.get("name", "")), "detail": str(body.get("detail", "")),
            "actions": [{"id": str(uuid.uuid4()), "next_id": NIL_UUID, **a} for a in actions]}
