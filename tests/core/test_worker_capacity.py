"""A worker takes on no more conversations than WORKER_CONCURRENCY, from every partition."""

from __future__ import annotations

from typing import Any

from bot.store.keys import partition_of
from tests.fakes.llm import completion, last_user_text
from tests.harness import start_broker


async def test_a_backlog_over_many_partitions_runs_at_most_worker_concurrency_turns_at_once(
    redis_url: str,
) -> None:
    # A claim used to take up to its limit from *each* partition: 16 partitions x the free slots,
    # far past WORKER_CONCURRENCY, until the Redis pool ran dry and turns failed.
    users = [f"cap-{n}" for n in range(24)]
    assert len({partition_of(u, 16) for u in users}) >= 8  # the backlog spans many partitions
    async with start_broker(redis_url, workers=False, queue_partitions=16) as http_only:
        for user in users:
            assert (await http_only.say(f"hello from {user}", user_id=user))[0] == 202

    # the backlog is waiting; now a worker with three turn slots
    async with start_broker(redis_url, worker_concurrency=3, queue_partitions=16) as broker:
        in_flight: list[int] = []

        def answer(body: dict[str, Any]) -> dict[str, Any]:
            in_flight.append(sum(broker.llm.active.values()))
            return completion(f"Echo: {last_user_text(body)}")

        broker.llm.script = answer
        broker.llm.latency_s = 0.05
        for user in users:
            assert await broker.replies(user, timeout=20) == [f"Echo: hello from {user}"]
        assert max(in_flight) <= 3
        assert len(broker.llm.requests) == len(users)
