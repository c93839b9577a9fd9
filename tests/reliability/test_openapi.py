"""The OpenAPI document: in step with the router, served by the live app, and schemathesis against it:
no input gives a 5xx, every protected endpoint answers 401 without credentials, and every answer
(error bodies included) matches the document."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from bot.app import create_app
from bot.settings import Settings
from bot.web.openapi import build_openapi

ROOT = Path(__file__).resolve().parents[2]
SECRET, AGENT, ADMIN, REGAL, ZENDESK = "wh-secret", "agent-tok", "admin-tok", "regal-secret", "zd-secret"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
STREAMS = {"/agent/events"}  # Server-Sent Events never end: checked without credentials only

DOC = build_openapi()
schema = schemathesis.openapi.from_dict(DOC)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Live:
    url: str


@pytest.fixture(scope="module")
def live(redis_server: str) -> Iterator[Live]:
    """`python -m bot serve` as in production, with the conversation the document's examples name."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BRAZE_", "OPENAI_", "REDIS_"))}
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "REDIS_URL": redis_server,
            "BRAZE_REST_ENDPOINT": "http://127.0.0.1:9",
            "BRAZE_API_KEY": "braze-key",
            "BRAZE_REPLY_CAMPAIGN_ID": "reply",
            "WEBHOOK_SECRET": SECRET,
            "AGENT_API_TOKENS": f"alice:{AGENT}",
            "ADMIN_API_TOKENS": f"ops:{ADMIN}",
            "REGAL_API_KEY": "regal-key",
            "REGAL_WEBHOOK_SECRET": REGAL,
            "ZENDESK_URL": "http://127.0.0.1:9",
            "ZENDESK_EMAIL": "bot@example.com",
            "ZENDESK_API_TOKEN": "zd-token",
            "ZENDESK_WEBHOOK_SECRET": ZENDESK,
            "LLM_BACKEND": "faq",
            "LOG_LEVEL": "WARNING",
            "ROUTES_FILE": "",
        }
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bot",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--env-file",
            "/nonexistent",
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if requests.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except requests.RequestException:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            pytest.fail(f"the broker did not start: {err[-800:]}")
        time.sleep(0.05)
    # u-123 (the examples' conversation) exists, so agent actions get past 404 with it
    seeded = requests.post(
        url + "/webhooks/braze/whatsapp",
        json={"user_id": "u-123", "phone_number": "+15551234567", "message": "hello"},
        headers={"Authorization": f"Bearer {SECRET}"},
        timeout=5,
    )
    assert seeded.status_code == 202, seeded.text
    while (
        requests.get(
            url + "/agent/conversations/u-123", headers={"Authorization": f"Bearer {AGENT}"}, timeout=5
        ).status_code
        != 200
    ):
        assert time.monotonic() < deadline + 20, "the seeded conversation never appeared"
        time.sleep(0.05)
    try:
        yield Live(url)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def credentials(path: str, kwargs: dict[str, Any]) -> dict[str, str]:
    """Valid credentials for the operation's security scheme (None needed: {})."""
    if path == "/webhooks/braze/whatsapp":
        return {"Authorization": f"Bearer {SECRET}"}
    if path == "/webhooks/regal":
        return {"Authorization": f"Bearer {REGAL}"}
    if path.startswith("/admin/"):
        return {"Authorization": f"Bearer {ADMIN}"}
    if path.startswith("/agent/"):
        return {"Authorization": f"Bearer {AGENT}"}
    if path == "/webhooks/zendesk":
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        raw: bytes = kwargs["data"]
        digest = hmac.new(ZENDESK.encode(), stamp.encode() + raw, hashlib.sha256).digest()
        return {
            "X-Zendesk-Webhook-Signature": base64.b64encode(digest).decode(),
            "X-Zendesk-Webhook-Signature-Timestamp": stamp,
        }
    return {}


def protected(path: str, method: str) -> bool:
    return bool(DOC["paths"][path][method.lower()]["security"])


def request_kwargs(case: Any, live: Live) -> dict[str, Any]:
    """The request schemathesis generated, with the body as the exact bytes sent (Zendesk signs them)."""
    kwargs = dict(case.as_transport_kwargs(base_url=live.url))
    if "json" in kwargs:
        kwargs["data"] = json.dumps(kwargs.pop("json")).encode()
        kwargs["headers"] = {**(kwargs.get("headers") or {}), "Content-Type": "application/json"}
    elif isinstance(kwargs.get("data"), str):
        kwargs["data"] = kwargs["data"].encode()
    kwargs.setdefault("data", b"")
    kwargs["timeout"] = 10
    return kwargs


def test_the_document_names_every_route_of_the_app() -> None:
    app = create_app(Settings(_env_file=None), "redis://127.0.0.1:9/0")
    routes = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    documented = {(method, path) for path, ops in DOC["paths"].items() for method in ops}
    assert routes == documented


def test_every_operation_loads_and_every_error_answer_is_the_contracts_shape() -> None:
    operations = list(schema.get_all_operations())
    assert all(isinstance(result, Ok) for result in operations), operations
    assert len(operations) == sum(len(ops) for ops in DOC["paths"].values())
    for path, ops in DOC["paths"].items():
        for method, op in ops.items():
            for status, answer in op["responses"].items():
                if int(status) >= 400:
                    ref = answer["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("/Error"), (method, path, status)


def test_the_live_app_serves_this_document(live: Live) -> None:
    answer = requests.get(live.url + "/openapi.json", timeout=5)
    assert answer.status_code == 200 and answer.json() == DOC


@schema.exclude(path=list(STREAMS)).parametrize()
@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_no_input_gives_a_5xx_and_answers_match_the_document(case: Any, live: Live) -> None:
    kwargs = request_kwargs(case, live)
    kwargs["headers"] = {**(kwargs.get("headers") or {}), **credentials(case.path, kwargs)}
    response = requests.request(**kwargs)
    case.validate_response(response, checks=CHECKS)


@schema.parametrize()
@settings(max_examples=5, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_protected_endpoints_answer_401_without_credentials(case: Any, live: Live) -> None:
    if case.method.upper() != case.operation.method.upper() or not protected(case.path, case.method):
        return  # schemathesis also tries other methods (405): not this test's concern
    kwargs = request_kwargs(case, live)
    headers = {
        k: v
        for k, v in (kwargs.get("headers") or {}).items()
        if k.lower()
        not in {"authorization", "x-zendesk-webhook-signature", "x-zendesk-webhook-signature-timestamp"}
    }
    kwargs["headers"] = headers
    kwargs["params"] = {k: v for k, v in (kwargs.get("params") or {}).items() if k != "token"}
    response = requests.request(**kwargs)
    assert response.status_code == 401, (case.method, case.path, response.status_code, response.text[:200])
    body = response.json()
    assert body["error"]["code"] == "unauthorized" and body["error"]["message"]
    case.validate_response(response, checks=CHECKS)
