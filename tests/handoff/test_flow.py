"""The handoff state machine end to end: keyword -> waiting -> claimed -> reply -> release -> bot."""

from __future__ import annotations

import asyncio

import aiohttp

from prompts import load_prompts
from tests.fakes.llm import completion
from tests.handoff.helpers import agent_call, conv_path, detail, listen, wait_transcript
from tests.harness import AGENT2_TOKEN, AGENT_TOKEN, REPLY_CAMPAIGN, Broker, start_broker

TEXTS = load_prompts()
HANDOFF = TEXTS.text("handoff")
JOINED = TEXTS.text("agent_joined", agent="Alice")
LEFT = TEXTS.text("agent_left")


async def test_keyword_puts_the_conversation_in_the_waiting_queue_and_tells_agents(broker: Broker) -> None:
    async with listen(broker) as agent:
        status, _ = await broker.say("Agent!")
        assert status == 202
        assert await broker.replies("u-123") == [HANDOFF]
        note = await agent.wait_for("waiting", lambda d: d["id"] == "u-123")
        assert note["trigger"] == "keyword"
        await agent.wait_for("status", lambda d: d["id"] == "u-123" and d["status"] == "waiting")

    code, body = await agent_call(broker, "GET", "/agent/conversations?status=waiting")
    assert code == 200
    [conv] = body["conversations"]
    assert conv["id"] == "u-123" and conv["status"] == "waiting"
    assert conv["user_id"] == "u-123" and conv["phone_number"] == "+15551234567"
    assert conv["assigned_agent"] is None and conv["waiting_since"].endswith("Z")
    assert conv["last_message_at"]
    code, body = await agent_call(broker, "GET", "/agent/conversations?status=bot")
    assert body["conversations"] == []

    await broker.settle()
    assert broker.braze.messages_for("u-123") == [HANDOFF], "exactly one handoff message"
    assert broker.llm.requests == [], "a handoff keyword never reaches the model"
    audit = (await detail(broker, "u-123"))["audit"]
    assert [(a["from"], a["to"], a["by"]) for a in audit if a["event"] == "status"] == [
        ("bot", "waiting", "keyword")
    ]
    assert audit[0]["reason"] == "customer asked for a person" and audit[0]["at"].endswith("Z")


async def test_claim_reply_silence_then_release_hands_back_to_the_bot(broker: Broker) -> None:
    await broker.say("agent")
    await broker.replies("u-123", 1)

    code, body = await agent_call(broker, "POST", conv_path("u-123", "/claim"))
    assert code == 200 and body["status"] == "with_agent" and body["assigned_agent"] == "alice"
    code, body = await agent_call(
        broker, "POST", conv_path("u-123", "/messages"), body={"text": "Hi, I'm Alice. How can I help?"}
    )
    assert code == 202 and body["campaign"] == "reply" and len(body["message_ids"]) == 1
    assert await broker.replies("u-123", 3) == [HANDOFF, JOINED, "Hi, I'm Alice. How can I help?"]
    sends = broker.braze.trigger_requests()
    assert sends[-1]["body"]["campaign_id"] == REPLY_CAMPAIGN

    # While the agent holds it, the user's messages are recorded and the bot stays silent.
    await broker.say("my order 123 is late")
    await wait_transcript(broker, "u-123", "my order 123 is late")
    await broker.settle()
    assert len(broker.braze.messages_for("u-123")) == 3
    assert broker.llm.requests == []

    code, body = await agent_call(broker, "POST", conv_path("u-123", "/release"))
    assert code == 200 and body["status"] == "bot" and body["assigned_agent"] is None
    assert (await broker.replies("u-123", 4))[-1] == LEFT

    await broker.say("thanks! what are your opening hours?")
    replies = await broker.replies("u-123", 5)
    assert replies[-1] == "Echo: thanks! what are your opening hours?"
    # The model sees where the human stretch ended, so old context does not re-trigger a handoff.
    system = [m["content"] for m in broker.llm.requests[-1]["messages"] if m["role"] == "system"]
    assert any("human agent's part of the conversation is over" in s for s in system)
    assert any(
        "(human agent) Hi, I'm Alice" in str(m["content"]) for m in broker.llm.requests[-1]["messages"]
    )

    view = await detail(broker, "u-123")
    markers = [m["marker"] for m in view["messages"] if m["marker"]]
    assert markers == ["human_start", "human_end"]
    agent_lines = [m for m in view["messages"] if m["role"] == "agent"]
    assert agent_lines == [{**agent_lines[0], "text": "Hi, I'm Alice. How can I help?", "agent": "alice"}]
    moves = [(a["from"], a["to"], a["by"]) for a in view["audit"] if a["event"] == "status"]
    assert moves == [
        ("bot", "waiting", "keyword"),
        ("waiting", "with_agent", "agent:alice"),
        ("with_agent", "bot", "agent:alice"),
    ]


async def test_takeover_while_the_model_is_answering_discards_the_bot_reply(broker: Broker) -> None:
    await broker.say("hi")
    await broker.replies("u-123", 1)
    broker.llm.latency_s = 1.0
    asked = len(broker.llm.requests)
    await broker.say("tell me about returns")
    await broker.wait_for(lambda: len(broker.llm.requests) > asked, what="the model to be asked")

    code, body = await agent_call(broker, "POST", conv_path("u-123", "/claim"))
    assert code == 200 and body["status"] == "with_agent"
    # The model answers after the claim; the turn's commit is fenced and recomputed as a relay.
    view = await wait_transcript(broker, "u-123", "tell me about returns")
    assert len(broker.llm.requests) == asked + 1, "the relay does not ask the model again"
    await broker.settle(0.5)
    received = broker.braze.messages_for("u-123")
    assert received == ["Echo: hi", JOINED]
    assert not any("returns" in text for text in received)
    registry = broker.runtime.metrics.registry
    fenced = registry.get_sample_value("broker_replies_discarded_total", {"reason": "human_took_over"})
    assert fenced == 1, "the bot's draft was computed and then fenced at commit"
    assert view["status"] == "with_agent"


async def test_agent_api_authentication_and_errors(broker: Broker) -> None:
    await broker.say("agent", user_id="", phone="+15550001111")
    await broker.replies("+15550001111", 1)
    for method, suffix in [("GET", ""), ("POST", "/claim"), ("POST", "/messages"), ("POST", "/release")]:
        code, body = await agent_call(broker, method, conv_path("+15550001111", suffix), token=None)
        assert code == 401 and body["error"]["code"] == "unauthorized"
        code, _ = await agent_call(broker, method, conv_path("+15550001111", suffix), token="wrong")
        assert code == 401
        code, body = await agent_call(broker, method, conv_path("nobody", suffix), body={"text": "x"})
        assert code == 404 and body["error"]["code"] == "not_found"
    code, _ = await agent_call(broker, "GET", "/agent/conversations", token="wrong")
    assert code == 401
    code, _ = await agent_call(broker, "GET", f"/agent/conversations?token={AGENT_TOKEN}", token=None)
    assert code == 401, "the query-string token is for the event stream only"
    code, body = await agent_call(broker, "GET", "/agent/conversations?status=nope")
    assert code == 422

    # A phone-only conversation's id is percent-encoded in the path (%2B15550001111).
    assert conv_path("+15550001111") == "/agent/conversations/%2B15550001111"
    view = await detail(broker, "+15550001111")
    assert view["id"] == "+15550001111" and view["user_id"] is None and view["window_open"] is True

    code, _ = await agent_call(broker, "POST", conv_path("+15550001111", "/claim"))
    assert code == 200
    code, _ = await agent_call(broker, "POST", conv_path("+15550001111", "/claim"))
    assert code == 200, "claiming again is harmless"
    for suffix, body in [("/claim", None), ("/messages", {"text": "hello"}), ("/release", None)]:
        code, answer = await agent_call(
            broker, "POST", conv_path("+15550001111", suffix), token=AGENT2_TOKEN, body=body
        )
        assert code == 409 and answer["error"]["code"] == "claimed_by_other"
        assert answer["error"]["agent"] == "alice"
    code, answer = await agent_call(
        broker, "POST", conv_path("+15550001111", "/messages"), body={"text": "  "}
    )
    assert code == 422
    async with broker.http.post(
        broker.url + conv_path("+15550001111", "/messages"),
        data=b"not json",
        headers={"Authorization": f"Bearer {AGENT_TOKEN}"},
    ) as resp:
        assert resp.status == 400
    # The claim's notice arrives (on a loaded cluster it can take longer than a fixed pause) …
    assert await broker.replies("+15550001111", 2) == [HANDOFF, JOINED]
    # … and none of the refused calls sent anything after it.
    await broker.settle()
    assert broker.braze.messages_for("+15550001111") == [HANDOFF, JOINED]


async def test_event_stream_authentication(broker: Broker) -> None:
    async with listen(broker, token="wrong") as refused:
        assert refused.status == 401
    async with listen(broker, query=True) as agent:
        assert agent.status == 200 and agent.of("hello") == [{"agent": "alice"}]
        await broker.say("agent")
        await agent.wait_for("waiting")
        await agent_call(broker, "POST", conv_path("u-123", "/messages"), body={"text": "on it"})
        note = await agent.wait_for("message", lambda d: d["role"] == "agent")
        assert note == {**note, "id": "u-123", "agent": "alice", "text": "on it"}
        await broker.say("thanks")
        await agent.wait_for("message", lambda d: d["role"] == "user" and d["text"] == "thanks")


async def test_shutdown_ends_open_event_streams_promptly(redis_url: str) -> None:
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as http:
        async with start_broker(redis_url) as broker:
            resp = await http.get(
                broker.url + "/agent/events", headers={"Authorization": f"Bearer {AGENT_TOKEN}"}
            )
            assert resp.status == 200
            assert (await resp.content.readline()).startswith(b"retry:")
            began = loop.time()
        # Leaving the block shuts the broker down; an open stream must not hold it up.
        assert loop.time() - began < 5
        await asyncio.wait_for(resp.content.read(), 5)
        assert resp.content.at_eof()
        resp.release()


async def test_the_model_hands_off_with_its_tool_or_after_failing_twice(broker: Broker) -> None:
    broker.llm.script = lambda body: completion(None, [("handoff_to_agent", {"reason": "refund dispute"})])
    await broker.say("I want my money back for the broken blender")
    assert await broker.replies("u-123") == [HANDOFF]
    view = await detail(broker, "u-123")
    moves = [(a["to"], a["by"], a["reason"]) for a in view["audit"] if a["event"] == "status"]
    assert moves == [("waiting", "llm", "refund dispute")]

    broker.llm.script = None
    broker.llm.faults = [500, 500]
    await broker.say("hello", user_id="u-456", phone="+15550004444")
    assert await broker.replies("u-456") == [TEXTS.text("apology")]
    await broker.say("hello??", user_id="u-456", phone="+15550004444")
    assert await broker.replies("u-456", 2) == [TEXTS.text("apology"), HANDOFF]
    view = await detail(broker, "u-456")
    assert view["status"] == "waiting"
    assert [a["by"] for a in view["audit"] if a["event"] == "status"] == ["llm_failure"]


async def test_an_opted_out_customer_gets_no_notices_and_no_agent_messages(broker: Broker) -> None:
    await broker.say("agent")
    await broker.replies("u-123", 1)
    await broker.say("stop")
    await broker.replies("u-123", 2)
    code, _ = await agent_call(broker, "POST", conv_path("u-123", "/claim"))
    assert code == 200
    code, body = await agent_call(broker, "POST", conv_path("u-123", "/messages"), body={"text": "hi?"})
    assert code == 409 and body["error"]["code"] == "conflict"
    code, _ = await agent_call(broker, "POST", conv_path("u-123", "/release"))
    assert code == 200
    await broker.settle()
    assert broker.braze.messages_for("u-123") == [HANDOFF, TEXTS.text("optout_confirmation")]
