"""Which partitions of a work stream this process reads: one reader per partition at a time.

One reader per partition keeps each conversation's outbound work in order (a later message never
overtakes an earlier one) without a lock per conversation. Readers hold leases renewed every few
seconds; when a process dies its partitions pass to another after the lease expires.
"""

from __future__ import annotations

import time

from bot.store.keys import PartitionKeys
from bot.store.streams import Streams

LEASE_TTL_MS = 10_000


class PartitionLeases:
    def __init__(self, streams: Streams, kind: str, owner: str, partitions: int) -> None:
        self._streams = streams
        self.kind = kind
        self._owner = owner
        self._partitions = partitions
        self.owned: set[int] = set()
        self._next_check = 0.0

    def stream(self, part: int) -> str:
        return PartitionKeys(part).stream(self.kind)

    def streams_owned(self) -> dict[int, str]:
        return {p: self.stream(p) for p in self.owned}

    async def ensure_groups(self) -> None:
        for part in range(self._partitions):
            await self._streams.ensure_group(self.stream(part))

    async def refresh(self, force: bool = False) -> tuple[set[int], set[int]]:
        """Renew or take leases (every third of the TTL); returns (gained, lost) partitions."""
        if not force and time.monotonic() < self._next_check:
            return set(), set()
        self._next_check = time.monotonic() + LEASE_TTL_MS / 3000
        gained, lost = set(), set()
        for part in range(self._partitions):
            key = PartitionKeys(part).consumer_lease(self.kind)
            held = await self._streams.own(key, self._owner, LEASE_TTL_MS)
            if held and part not in self.owned:
                gained.add(part)
            elif not held and part in self.owned:
                lost.add(part)
        self.owned = (self.owned | gained) - lost
        return gained, lost

    async def release_all(self) -> None:
        for part in list(self.owned):
            await self._streams.disown(PartitionKeys(part).consumer_lease(self.kind), self._owner)
        self.owned.clear()
