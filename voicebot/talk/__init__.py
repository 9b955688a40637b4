"""A page to talk to the bot from a browser: ``GET /talk``.

Plain HTML and JavaScript, shipped in the package (no build step, no CDN). It
speaks the article's contract from the browser, so it is guarded like those
endpoints: on this machine only without WEBHOOK_TOKEN, with ``?token=`` (which
the page then sends as the bearer token) when it is set, and off with
TALK_PAGE=0.
"""

from __future__ import annotations

import hmac
from pathlib import Path

from flask import Blueprint, Response, current_app, request
from flask.typing import ResponseReturnValue

from ..web.errors import json_error
from ..web.access import local_trial_refusal

bp = Blueprint("talk", __name__)

PAGE = Path(__file__).with_name("page.html")


@bp.get("/talk")
def page() -> ResponseReturnValue:
    if not current_app.config["TALK_PAGE"]:
        return json_error(404, "not_found", "the talk page is off (TALK_PAGE=0)")
    token = current_app.config["WEBHOOK_TOKEN"]
    if token:
        given = request.args.get("token", "")
        if not hmac.compare_digest(given.encode("utf-8", "surrogatepass"), token.encode()):
            return json_error(401, "unauthorized", "open /talk?token=<WEBHOOK_TOKEN>")
    else:
        refusal = local_trial_refusal(request)
        if refusal is not None:
            return json_error(*refusal)
    response = Response(PAGE.read_bytes(), content_type="text/html; charset=utf-8")
    # The page's only script is its own; it talks to this origin only.
    response.headers["Content-Security-Policy"] = ("default-src 'none'; script-src 'unsafe-inline'; "
                                                   "style-src 'unsafe-inline'; connect-src 'self'")
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
