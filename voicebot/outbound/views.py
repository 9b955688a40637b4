"""``POST /calls`` places one call (``{"to": "+15551234567", "variables": {"name": "Ana"}}``);
``/campaigns`` places many, carried by every worker of every instance (``voicebot campaign``)."""

from __future__ import annotations

import logging
from typing import Any, cast

from flask import Blueprint, Response, current_app, g, jsonify, request
from werkzeug.exceptions import NotFound

from .. import placeholders
from ..exceptions import InvalidEvent
from ..runtime import runtime
from ..speaker import Dialler
from ..web import json_body
from . import campaign as steps
from .book import CampaignBook, UnknownCampaign
from ..web.access import bearer_matches
from ..web.errors import json_error
from ..web.validation import optional_text, required_text
from ..web.openapi import documented
from . import api
from .destinations import Destinations
from .runner import wait_for_dials
from .settings import E164

log = logging.getLogger(__name__)

bp = Blueprint("outbound", __name__)


@bp.before_request
def check_access() -> Response | None:
    token = current_app.config["OUTBOUND_TOKEN"] or current_app.config["WEBHOOK_TOKEN"]
    if not token:
        return json_error(404, "outbound_disabled", "POST /calls is off: set OUTBOUND_TOKEN (or WEBHOOK_TOKEN); "
                                                    "nothing places a call for an anonymous caller")
    if not bearer_matches(request, token):
        return json_error(401, "unauthorized", "send Authorization: Bearer <OUTBOUND_TOKEN or WEBHOOK_TOKEN>",
                          **{"WWW-Authenticate": "Bearer"})
    if not runtime().diallers:
        return json_error(404, "outbound_disabled", "no platform places calls: set OUTBOUND_NUMBER, PUBLIC_URL and "
                                                    "the platform's keys (see docs/outbound.md)")
    return None


@bp.post("/calls")
@documented(api.PLACE_CALL)
def place_call() -> tuple[Response, int]:
    body = json_body()
    to = required_text(body, "to", 32)
    if not E164.match(to):
        raise InvalidEvent("'to' must be a number in E.164 form, such as +15551234567")
    refusal = _destinations().refusal(to)
    if refusal:
        return _not_allowed(refusal)
    try:
        variables = placeholders.clean_variables(body.get("variables"), "variables")
    except ValueError as exc:
        raise InvalidEvent(str(exc)) from None
    dialler = _dialler(optional_text(body, "platform", 16))
    _check_placeholders(variables)
    voicemail = optional_text(body, "voicemail", 16) or "message"
    if voicemail not in ("message", "hangup"):
        raise InvalidEvent("'voicemail' must be message or hangup")
    call_id = dialler.place_call(to, variables, leave_voicemail=voicemail == "message")
    g.call_id = call_id
    log.info("call placed call_id=%s platform=%s", call_id, dialler.platform)
    answer: dict[str, Any] = {"call_id": call_id, "platform": dialler.platform, "status": "placed"}
    return jsonify(answer), 201


def _destinations() -> Destinations:
    return Destinations.from_settings(current_app.config)


def _not_allowed(why: str) -> tuple[Response, int]:
    log.warning("call refused: %s", why)
    return json_error(403, "destination_not_allowed", why), 403


def _dialler(asked: str | None) -> Dialler:
    diallers = runtime().diallers
    name = asked or current_app.config["OUTBOUND_PLATFORM"] or (next(iter(diallers)) if len(diallers) == 1 else "")
    if not name:
        raise InvalidEvent(f"say which platform places the call: 'platform' is one of {', '.join(sorted(diallers))} "
                           "(or set OUTBOUND_PLATFORM)")
    if name not in diallers:
        raise InvalidEvent(f"'platform' must be one of {', '.join(sorted(diallers))}; got {name!r}")
    return diallers[name]


def _check_placeholders(variables: dict[str, str], where: str = "'variables'") -> None:
    cfg = current_app.config
    lacking = placeholders.missing((cfg["OUTBOUND_GREETING"], cfg["OUTBOUND_SYSTEM_PROMPT"] or cfg["SYSTEM_PROMPT"],
                                    cfg["VOICEMAIL_MESSAGE"]), variables)
    if lacking:
        raise InvalidEvent(f"{where} has no value for {', '.join(lacking)}, which the call's greeting, prompt "
                           "or voicemail message needs")


def _book() -> CampaignBook:
    return cast(CampaignBook, runtime().platforms[bp.name])  # kept there by voicebot.outbound, by its name


@bp.post("/campaigns")
@documented(api.START_CAMPAIGN)
def start_campaign() -> tuple[Response, int]:
    """Start a campaign: every contact checked now (number, variables, placeholders), none dialled twice."""
    body = json_body(api.CAMPAIGN_BODY_BYTES)
    contacts: list[Any] = body["contacts"]  # a list of 1 to MAX_CONTACTS: the document's schema checked it
    checked: list[tuple[str, dict[str, str]]] = []
    seen: dict[str, int] = {}
    destinations = _destinations()
    for row, contact in enumerate(contacts, start=1):
        where = f"contact {row}"
        if not isinstance(contact, dict) or not isinstance(contact.get("phone"), str):
            raise InvalidEvent(f"{where}: give its 'phone'")
        phone = contact["phone"].strip()
        if not E164.match(phone):
            raise InvalidEvent(f"{where}: phone {phone[:32]!r} is not a number in E.164 form, such as +15551234567")
        refusal = destinations.refusal(phone)
        if refusal:
            return _not_allowed(f"{where}: {refusal}; nothing is dialled")
        if phone in seen:
            raise InvalidEvent(f"{where}: phone {phone} is contact {seen[phone]} too (each is called once)")
        seen[phone] = row
        try:
            variables = placeholders.clean_variables(contact.get("variables"), f"{where} variables")
        except ValueError as exc:
            raise InvalidEvent(str(exc)) from None
        _check_placeholders(variables, f"{where} ({phone})")
        checked.append((phone, variables))
    dialler = _dialler(optional_text(body, "platform", 16))
    try:
        window = steps.parse_window(body["window"]) if body.get("window") else None
        rules = steps.Rules(concurrency=_number(body, "concurrency", 4), attempts=_number(body, "attempts", 1),
                            retry_gap=float(_number(body, "retry_gap", 900)), window=window,
                            timezone=optional_text(body, "timezone", 64) or "UTC",
                            pace=float(_number(body, "pace", 1.0, kind=float)),
                            voicemail=optional_text(body, "voicemail", 16) or "message")
    except ValueError as exc:
        raise InvalidEvent(str(exc)) from None
    problems = rules.problems()
    if problems:
        raise InvalidEvent("; ".join(problems))
    campaign = steps.new_campaign(dialler.platform, rules, checked)
    _book().create(campaign)
    log.info("campaign %s started: %d contacts on %s, concurrency %d", campaign["id"], len(checked),
             dialler.platform, rules.concurrency)
    return jsonify(steps.summary(campaign)), 201


@bp.get("/campaigns/<campaign_id>")
@documented(api.CAMPAIGN_STATUS)
def campaign_status(campaign_id: str) -> Response:
    return jsonify(steps.summary(_campaign(campaign_id)))


@bp.get("/campaigns/<campaign_id>/results")
@documented(api.CAMPAIGN_RESULTS)
def campaign_results(campaign_id: str) -> Response:
    campaign = _campaign(campaign_id)
    return jsonify(campaign_id=campaign_id, state=campaign["state"], results=steps.results(campaign))


@bp.post("/campaigns/<campaign_id>/<any(pause, resume, cancel):action>")
@documented(api.CHANGE_CAMPAIGN)
def change_campaign(campaign_id: str, action: str) -> Response:
    try:
        _book().update(campaign_id, lambda c: steps.set_state(c, action))
        # No dial reaches the platform after a pause or a cancel answers: the one under way returns first.
        under_way = wait_for_dials(_book(), campaign_id) if action != "resume" else 0
    except UnknownCampaign:
        raise NotFound(f"no campaign {campaign_id[:40]!r}") from None
    log.info("campaign %s: %s", campaign_id, action)
    if under_way:
        log.warning("campaign %s: %d dials still under way after %.0f s (an instance died mid-dial?)",
                    campaign_id, under_way, steps.DIAL_RETURNS)
    return jsonify(steps.summary(_campaign(campaign_id)))


def _campaign(campaign_id: str) -> steps.Campaign:
    try:
        return _book().get(campaign_id)
    except UnknownCampaign:
        raise NotFound(f"no campaign {campaign_id[:40]!r}") from None


def _number(body: dict[str, Any], name: str, default: float, kind: type = int) -> Any:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
        raise ValueError(f"'{name}' must be a number")
    return kind(value)
