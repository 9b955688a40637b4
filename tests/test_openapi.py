"""/openapi.json: the API as a document, and the API fuzzed against it with schemathesis over real HTTP.

The fuzz runs every documented operation on an app with every token set and
VoIPBin (the fake) placing calls: no server error, no answer outside the
document (its status, content type and schema), no input the document calls
invalid accepted, no operation that ignores its token. Data the document
calls valid may still be refused by the rules a schema cannot say (a phone
given twice in one campaign, a placeholder with no value, an unknown
campaign id, a call named in a header or in the body): that one check,
positive_data_acceptance, is left out.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from .support import ServedApp, free_port

TOKEN = "fuzz-token-0123456789"
# No server error; every answer's status, content type, headers and body as documented; no invalid input
# accepted (413 included: see schemathesis.toml); no operation that ignores its token; a missing header
# or an undocumented method refused.
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,"
          "response_schema_conformance,negative_data_rejection,ignored_auth,missing_required_header,"
          "unsupported_method")

OPERATIONS = {
    ("post", "/webhook/call-started"), ("post", "/webhook/transcript"),
    ("post", "/calls"), ("post", "/campaigns"), ("get", "/campaigns/{campaign_id}"),
    ("get", "/campaigns/{campaign_id}/results"), ("post", "/campaigns/{campaign_id}/{action}"),
    ("post", "/openai/v1/chat/completions"), ("post", "/vapi/chat/completions"),
    ("post", "/elevenlabs/chat/completions"), ("get", "/healthz"), ("get", "/readyz"),
}


@pytest.fixture
def served(make_voipbin_app, fake_llm):
    port = free_port()
    app = make_voipbin_app(WEBHOOK_TOKEN=TOKEN, OUTBOUND_TOKEN=TOKEN, COMPLETIONS_TOKEN=TOKEN,
                           OUTBOUND_NUMBER="+15559870000", PUBLIC_URL=f"http://127.0.0.1:{port}",
                           OUTBOUND_GREETING="Hello, this is a call from voicebot.", DIAL_ALLOWED="*")
    server = ServedApp(app, port)
    yield server
    server.stop()


def test_the_document_is_openapi_3_1_and_names_every_json_endpoint(served):
    document = requests.get(served.url + "/openapi.json", timeout=10).json()
    assert document["openapi"] == "3.1.0"
    found = {(method, path) for path, item in document["paths"].items() for method in item}
    assert found == OPERATIONS
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert operation["summary"] and ({"200", "201"} & set(operation["responses"])), (method, path)
            if "security" in operation:
                assert "401" in operation["responses"], (method, path)
            if "requestBody" in operation:
                assert {"400", "413"} <= set(operation["responses"]), (method, path)
    assert set(document["components"]["securitySchemes"]) == {"webhookToken", "operatorToken", "completionsToken"}


def test_the_document_names_only_what_the_app_serves(make_app):
    app = make_app()  # no outbound platform, no front end's token: their endpoints still answer (404, 401)
    paths = app.test_client().get("/openapi.json").get_json()["paths"]
    assert "/webhook/transcript" in paths and "/healthz" in paths
    limit = paths["/webhook/transcript"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert limit["else"]["properties"]["transcript"]["maxLength"] == app.config["MAX_TRANSCRIPT_CHARS"]


@pytest.mark.parametrize("store_kind", ["redis"])  # the deployed shape; the document is the same on memory
def test_the_api_keeps_to_its_document(served):
    """schemathesis's own command, as an operator would run it: every phase, 40 examples an operation."""
    command = Path(sys.executable).with_name("schemathesis")
    out = subprocess.run([str(command), "--config-file", str(Path(__file__).with_name("schemathesis.toml")), "run",
                          served.url + "/openapi.json", "-H", f"Authorization: Bearer {TOKEN}", "--max-examples",
                          "40", "--seed", "1", "-c", CHECKS], capture_output=True, text=True, timeout=600)
    print(out.stdout[-1500:])
    assert out.returncode == 0, out.stdout[-6000:]
    assert f"{len(OPERATIONS)} selected / {len(OPERATIONS)} total" in out.stdout
    generated = re.search(r"(\d+) generated, (\d+) passed", out.stdout)
    assert generated and int(generated.group(1)) >= 40 * len(OPERATIONS) and generated.group(1) == generated.group(2)
