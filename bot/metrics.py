"""Prometheus metrics, in a registry of their own per process (no import-time globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.inbound = Counter(
            "broker_inbound_total",
            "Inbound webhooks by result (accepted, duplicate, rejected)",
            ["source", "result"],
            registry=r,
        )
        self.turns = Counter("broker_turns_total", "Conversation turns by outcome", ["outcome"], registry=r)
        self.turn_seconds = Histogram(
            "broker_turn_seconds",
            "Time from claiming a conversation to committing its turn",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.llm_seconds = Histogram(
            "broker_llm_seconds", "Language model call latency", buckets=LATENCY_BUCKETS, registry=r
        )
        self.llm_errors = Counter(
            "broker_llm_errors_total", "Failed language model calls", ["kind"], registry=r
        )
        self.llm_tokens = Counter("broker_llm_tokens_total", "Tokens used by the language model", registry=r)
        self.outbound = Counter(
            "broker_outbound_requests_total",
            "Requests to outside APIs by endpoint and status",
            ["service", "endpoint", "status"],
            registry=r,
        )
        self.messages_sent = Counter(
            "broker_messages_sent_total", "Messages accepted by Braze for delivery", ["kind"], registry=r
        )
        self.recipients_per_request = Histogram(
            "broker_braze_recipients_per_request",
            "Recipients per /campaigns/trigger/send",
            buckets=(1, 2, 5, 10, 20, 30, 40, 50),
            registry=r,
        )
        self.track_objects_per_request = Histogram(
            "broker_braze_track_objects_per_request",
            "Objects (attributes, events, purchases) per /users/track request",
            buckets=(1, 2, 5, 10, 20, 30, 40, 50, 75),
            registry=r,
        )
        self.discarded = Counter(
            "broker_replies_discarded_total",
            "Bot replies dropped because a human took over",
            ["reason"],
            registry=r,
        )
        self.dead_letters = Counter(
            "broker_dead_letters_total",
            "Outbound work moved to a dead-letter stream",
            ["kind", "reason"],
            registry=r,
        )
        self.dead_letter_replays = Counter(
            "broker_dead_letter_replays_total",
            "Dead letters an operator put back in their original stream",
            ["kind"],
            registry=r,
        )
        self.dead_letter_drops = Counter(
            "broker_dead_letter_drops_total", "Dead letters an operator deleted", ["kind"], registry=r
        )
        self.dead_letter_depth = Gauge(
            "broker_dead_letter_depth", "Entries in the dead-letter streams now", registry=r
        )
        self.queue_depth = Gauge(
            "broker_queue_depth", "Conversations with inbound messages waiting for a turn", registry=r
        )
        self.outbox_depth = Gauge("broker_outbox_depth", "Messages waiting to be sent to Braze", registry=r)
        self.recovered = Counter(
            "broker_recovered_total",
            "Stuck work reclaimed (expired leases, unknown sends)",
            ["kind"],
            registry=r,
        )
        self.limited = Counter(
            "broker_limited_total",
            "Abuse and cost limits applied (rate_limited_message, slow_down_notice, llm_call_cap, "
            "token_budget, trimmed_burst)",
            ["kind"],
            registry=r,
        )
        self.handoffs = Counter(
            "broker_handoffs_total", "Conversations handed to a human", ["trigger"], registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
