"""``voicebot serve --check-config --connect``: reach each configured dependency once, and say what answered.

``--check-config`` alone checks the settings only (types, ranges, the tools
file, combinations), as a start would. ``--connect`` also reaches:

- the session store (a Redis PING, on any shape of REDIS_URL);
- the model's API: the key and LLM_MODEL, by reading the model's entry
  (``GET /v1/models/{model}``; an OpenAI-compatible server's ``GET /models``), which spends no tokens;
- each platform's own API, as its ``Platform.reach`` says (VoIPBin: one page
  of one number; Twilio: said to be unchecked).

Each check is bounded by a few seconds and never prints a secret.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class Found:
    """What one dependency answered to ``--check-config --connect``."""

    what: str  # the dependency, as the operator knows it
    ok: bool | None  # None: nothing to reach, or not checked
    detail: str

    def line(self) -> str:
        mark = {True: "ok", False: "FAILED", None: "-"}[self.ok]
        return f"  {mark:6} {self.what}: {self.detail}"


Reach = Callable[[Mapping[str, Any]], "Found | None"]


def connect_all(settings: Mapping[str, Any], platforms: Sequence[Reach] = ()) -> list[Found]:
    """The core's dependencies, then what each platform reaches of its own (``Platform.reach``)."""
    found = [_store(settings), _model(settings)]
    return found + [f for f in (reach(settings) for reach in platforms) if f is not None]


def _store(settings: Mapping[str, Any]) -> Found:
    from .stores.settings import store_description

    what = f"session store, {store_description(settings)}"
    if not settings["REDIS_URL"]:
        return Found(what, None, "in this process's memory: nothing to reach")
    from .exceptions import StoreError
    from .stores.redis import connect, redis_errors

    try:
        client = connect(settings["REDIS_URL"], timeout=min(TIMEOUT_SECONDS, settings["REDIS_TIMEOUT_SECONDS"]),
                         max_connections=2, tls_verify=settings["REDIS_TLS_VERIFY"])
        try:
            with redis_errors():
                client.ping()
        finally:
            client.close()
    except StoreError as exc:
        return Found(what, False, f"does not answer ({exc})")
    except Exception as exc:  # a Sentinel that names no master, a refused TLS handshake
        return Found(what, False, f"does not answer ({type(exc).__name__}: {exc})")
    return Found(what, True, "answers PING")


def _model(settings: Mapping[str, Any]) -> Found:
    if settings["LLM_PROVIDER"] == "openai":
        return _openai_model(settings)
    model = settings["LLM_MODEL"]
    if not settings["ANTHROPIC_API_KEY"]:
        return Found("model", None, "the offline responder (ANTHROPIC_API_KEY is not set): nothing to reach")
    import anthropic

    client = anthropic.Anthropic(api_key=settings["ANTHROPIC_API_KEY"], base_url=settings["ANTHROPIC_BASE_URL"] or None,
                                 max_retries=0, timeout=TIMEOUT_SECONDS)
    what = f"model {model}"
    try:
        client.models.retrieve(model)
    except anthropic.AuthenticationError:
        return Found(what, False, "the API rejected ANTHROPIC_API_KEY (401)")
    except anthropic.PermissionDeniedError:
        return Found(what, False, "the key may not use this model (403)")
    except anthropic.NotFoundError:
        return Found(what, False, "the API knows no such model (404): check LLM_MODEL")
    except anthropic.APIStatusError as exc:
        return Found(what, False, f"the API answered HTTP {exc.status_code}")
    except anthropic.APIError as exc:
        return Found(what, False, f"the API cannot be reached ({type(exc).__name__})")
    finally:
        client.close()
    return Found(what, True, "the key is accepted and the model exists (no tokens spent)")


def _openai_model(settings: Mapping[str, Any]) -> Found:
    """An OpenAI-compatible server: ``GET {base}/models`` with the key (no tokens spent), and whether it lists
    LLM_MODEL (a server that lists none, some proxies, is taken at its word)."""
    from .deadline import within
    from .egress import HTTP, EgressError

    model, base = settings["LLM_MODEL"], settings["OPENAI_BASE_URL"].rstrip("/")
    what = f"model {model} at {base}"
    headers = {"Authorization": f"Bearer {settings['OPENAI_API_KEY']}"} if settings["OPENAI_API_KEY"] else {}
    http = HTTP()
    try:
        with within(TIMEOUT_SECONDS):
            answer = http.request("GET", f"{base}/models", headers=headers, limit=8 * 1024 * 1024)
    except EgressError as exc:
        return Found(what, False, f"the server cannot be reached ({exc})")
    finally:
        http.close()
    if answer.status in (401, 403):
        return Found(what, False, f"the server rejected OPENAI_API_KEY ({answer.status})")
    if answer.status != 200:
        return Found(what, False, f"GET /models answered HTTP {answer.status}")
    try:
        listed = [m.get("id") for m in answer.json().get("data") or () if isinstance(m, dict)]
    except (ValueError, AttributeError):
        return Found(what, False, "GET /models did not answer a model list")
    if listed and model not in listed:
        shown = ", ".join(str(m) for m in listed[:5]) + (", ..." if len(listed) > 5 else "")
        return Found(what, False, f"the server lists no such model (it lists {shown}): check LLM_MODEL")
    return Found(what, True, "the key is accepted and the model is listed (no tokens spent)")
