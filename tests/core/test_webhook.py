"""The inbound webhook's contract: every answer it gives, and what reaches Braze."""

from __future__ import annotations

import json
from pathlib import Path

from tests.harness import REPLY_CAMPAIGN, Broker, inbound

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures"


def fixture(name: str) -> dict[str, str]:
    path = FIXTURES / name
    if path.exists():
        return dict(json.loads(path.read_text()))
    # The contract's example bodies, for a checkout without ../shared beside it.
    return {
        "braze_inbound.json": {
            "user_id": "u-123",
            "phone_number": "+15551234567",
            "message": "Hi, where is my order?",
            "message_id": "5f1c2a9e0b7d4c1e",
            "profile_name": "Jane",
            "media_urls": "",
            "sent_at": "2026-11-20T10:15:00Z",
        },
        "braze_inbound_unknown_number.json": {
            "user_id": "",
            "phone_number": "+447700900123",
            "message": "hello",
            "message_id": "8a2b3c4d5e6f7081",
            "profile_name": "",
            "media_urls": "",
            "sent_at": "",
        },
    }[name]


async def test_contract_body_yields_exactly_one_trigger_send(broker: Broker) -> None:
    status, body = await broker.post(fixture("braze_inbound.json"))
    assert status == 202 and body["status"] == "accepted" and body["id"]
    await broker.replies("u-123")
    await broker.settle()
    sends = broker.braze.trigger_requests()
    assert len(sends) == 1
    request = sends[0]["body"]
    assert request == {
        "campaign_id": REPLY_CAMPAIGN,
        "recipients": [
            {
                "external_user_id": "u-123",
                "trigger_properties": {"external_system_msg_body": "Echo: Hi, where is my order?"},
            }
        ],
    }
    assert sends[0]["auth"] == "Bearer test-braze-key"


async def test_unknown_number_is_addressed_by_phone_alias(broker: Broker) -> None:
    status, _ = await broker.post(fixture("braze_inbound_unknown_number.json"))
    assert status == 202
    await broker.replies("+447700900123")
    recipient = broker.braze.trigger_requests()[0]["body"]["recipients"][0]
    assert recipient == {
        "user_alias": {"alias_name": "+447700900123", "alias_label": "phone"},
        "trigger_properties": {"external_system_msg_body": "Echo: hello"},
    }


async def test_wrong_or_missing_secret_is_401_and_changes_nothing(broker: Broker) -> None:
    for secret in (None, "wrong", ""):
        status, body = await broker.post(inbound(), secret=secret)
        assert status == 401
        assert body["error"]["code"] == "unauthorized"
    assert await broker.runtime.store.queue_depth() == 0


async def test_not_json_is_400(broker: Broker) -> None:
    status, body = await broker.post(None, raw=b"{not json")
    assert status == 400 and body["error"]["code"] == "invalid_json"


async def test_wrong_shape_is_422_naming_each_field(broker: Broker) -> None:
    status, body = await broker.post({"user_id": "", "phone_number": "", "message": ""})
    assert status == 422
    assert "user_id" in body["error"]["message"]
    status, body = await broker.post({"user_id": "u", "phone_number": "12ab", "message": 5})
    assert status == 422
    assert set(body["error"]["fields"]) == {"phone_number", "message"}
    status, body = await broker.post([1, 2])
    assert status == 422
    assert await broker.runtime.store.queue_depth() == 0


async def test_body_over_64_kib_is_413(broker: Broker) -> None:
    status, body = await broker.post(None, raw=b'{"message": "' + b"x" * 70_000 + b'"}')
    assert status == 413 and body["error"]["code"] == "too_large"


async def test_redelivery_is_a_duplicate_and_yields_one_reply(broker: Broker) -> None:
    body = inbound("where is my order", message_id="dispatch-1")
    answers = [await broker.post(body) for _ in range(3)]
    assert [s for s, _ in answers] == [202, 200, 200]
    assert answers[1][1] == {"status": "duplicate"}
    await broker.replies("u-123")
    await broker.settle(0.5)
    assert broker.braze.messages_for("u-123") == ["Echo: where is my order"]
    assert len(broker.llm.requests) == 1


async def test_same_dispatch_id_with_other_text_is_not_a_duplicate(broker: Broker) -> None:
    assert (await broker.post(inbound("first", message_id="d-1")))[0] == 202
    await broker.replies("u-123")
    assert (await broker.post(inbound("second", message_id="d-1")))[0] == 202


async def test_without_message_id_identical_body_is_a_duplicate(broker: Broker) -> None:
    assert (await broker.post(inbound("same")))[0] == 202
    assert (await broker.post(inbound("same")))[0] == 200
