"""Dead-letter operations: list, show, replay (idempotent) and drop, for the CLI and the admin API.

Dead letters live in one stream per partition (`dead:{p}`, written by `Streams.dead_letter`). An id
names the partition and the stream entry (`3-1700000000000-0`), so it is unique across partitions.
Replay moves the payload back to the stream it came from (`out`, `jobs` or `track` of the same
partition) and deletes the dead letter in one Lua script: a second replay of the same id finds
nothing, and a crash cannot leave the payload in both places or in neither.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
import time
from collections import Counter
from typing import Any

from pydantic import BaseModel

from bot.errors import BrokerError
from bot.logs import event, mask_id
from bot.metrics import Metrics
from bot.models import InboxEntry
from bot.store.conversations import _lua
from bot.store.keys import ConvKeys, PartitionKeys

log = logging.getLogger("bot.deadletters")

# Where each kind of dead letter came from (and goes back to on replay). Kind "inbound" (a burst the
# worker set aside after its turns kept crashing) goes back to its conversation's inbox.
ORIGIN = {"send": "outbox", "job": "jobs", "track": "track"}
_ID = re.compile(r"^(\d{1,4})-(\d{1,20}-\d{1,20})$")
_BATCH = 200


class NotReplayable(BrokerError):
    """A dead letter of a kind this broker cannot put back (it stays listed; drop it by hand)."""


class DeadLetterId(BaseModel):
    partition: int
    stream_id: str

    def __str__(self) -> str:
        return f"{self.partition}-{self.stream_id}"


def parse_id(text: str, partitions: int) -> DeadLetterId | None:
    """`3-1700000000000-0` -> partition 3, stream id `1700000000000-0`; None when malformed."""
    found = _ID.fullmatch(text.strip())
    if not found or int(found.group(1)) >= partitions:
        return None
    return DeadLetterId(partition=int(found.group(1)), stream_id=found.group(2))


class DeadLetter(BaseModel):
    id: str
    partition: int
    kind: str
    reason: str
    at: float
    attempts: int
    conv: str
    payload: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        """What a listing shows: everything but the payload (which holds message text)."""
        about = self.payload.get("kind") if self.kind == "job" else self.payload.get("type")
        if self.kind == "send":
            about = self.payload.get("kind")
        return {
            "id": self.id,
            "kind": self.kind,
            "reason": self.reason,
            "at": self.at,
            "attempts": self.attempts,
            "conv": self.conv,
            "about": about or "",
        }


def _from_fields(partition: int, stream_id: str, fields: dict[str, str]) -> DeadLetter:
    try:
        payload = json.loads(fields.get("payload") or "{}")
    except ValueError:
        payload = {"unparsable": True}
    if not isinstance(payload, dict):
        payload = {"value": payload}
    try:
        at = float(fields.get("at") or 0)
        attempts = int(fields.get("attempts") or 0)
    except ValueError:
        at, attempts = 0.0, 0
    return DeadLetter(
        id=f"{partition}-{stream_id}",
        partition=partition,
        kind=fields.get("kind", ""),
        reason=fields.get("reason", ""),
        at=at,
        attempts=attempts,
        conv=str(payload.get("conv", "")),
        payload=payload,
    )


class DeadLetters:
    def __init__(self, client: Any, partitions: int, metrics: Metrics | None = None) -> None:
        self.redis = client
        self.partitions = partitions
        self._metrics = metrics
        self._replay = client.register_script(_lua("dead_replay"))
        self._replay_inbound = client.register_script(_lua("dead_replay_inbound"))

    async def find(
        self, *, limit: int = 100, kind: str | None = None, reason: str | None = None
    ) -> list[DeadLetter]:
        """Oldest first, across partitions, optionally only one kind and/or reason."""
        found: list[DeadLetter] = []
        for part in range(self.partitions):
            found += [
                d
                for d in await self._scan(part, limit if not (kind or reason) else None)
                if (not kind or d.kind == kind) and (not reason or d.reason == reason)
            ]
        found.sort(key=lambda d: (d.at, d.id))
        return found[:limit]

    async def _scan(self, part: int, limit: int | None) -> list[DeadLetter]:
        """A partition's dead letters in stream order (all of them when `limit` is None)."""
        key, start = PartitionKeys(part).dead, "-"
        out: list[DeadLetter] = []
        while limit is None or len(out) < limit:
            rows = await self.redis.xrange(key, start, "+", count=_BATCH)
            out += [_from_fields(part, sid, fields) for sid, fields in rows]
            if len(rows) < _BATCH:
                break
            start = "(" + rows[-1][0]
        return out if limit is None else out[:limit]

    async def counts(self) -> dict[str, int]:
        """Dead letters by `kind:reason`, for the CLI summary and the soak report."""
        tally: Counter[str] = Counter()
        for part in range(self.partitions):
            for d in await self._scan(part, None):
                tally[f"{d.kind}:{d.reason}"] += 1
        return dict(tally)

    async def total(self) -> int:
        async with self.redis.pipeline(transaction=False) as pipe:
            for part in range(self.partitions):
                pipe.xlen(PartitionKeys(part).dead)
            return int(sum(await pipe.execute()))

    async def get(self, dead_id: str) -> DeadLetter | None:
        ident = parse_id(dead_id, self.partitions)
        if ident is None:
            return None
        rows = await self.redis.xrange(PartitionKeys(ident.partition).dead, ident.stream_id, ident.stream_id)
        if not rows:
            return None
        return _from_fields(ident.partition, rows[0][0], rows[0][1])

    async def replay(self, dead_id: str, *, by: str) -> str | None:
        """Put one dead letter back where it came from; None when there is none (any more).

        NotReplayable for a kind this broker does not know how to put back."""
        letter = await self.get(dead_id)
        if letter is None:
            return None
        if letter.kind == "inbound":
            return letter.id if await self._requeue_inbound(letter, by) else None
        if letter.kind not in ORIGIN:
            raise NotReplayable(letter.kind)
        moved = await self._move(letter.partition, [letter], by=by)
        return moved[0] if moved else None

    async def _requeue_inbound(self, letter: DeadLetter, by: str) -> bool:
        """A burst the worker set aside after it crashed its turns: back into the inbox, to be answered."""
        entries = letter.payload.get("entries")
        if not letter.conv or not isinstance(entries, list) or not entries:
            raise NotReplayable("inbound (no entries)")
        keys = ConvKeys.of(letter.conv, self.partitions)
        texts = [InboxEntry.model_validate(e).model_dump_json() for e in entries]
        done = await self._replay_inbound(
            keys=[PartitionKeys(letter.partition).dead, keys.inbox, keys.part.ready],
            args=[letter.id.split("-", 1)[1], letter.conv, int(time.time() * 1000), *texts],
        )
        if done:
            self._replayed(letter, by)
        return bool(done)

    async def replay_all(self, *, by: str, kind: str | None = None, reason: str | None = None) -> int:
        """Replay every dead letter (optionally one kind and/or reason); how many were replayed."""
        total = 0
        for part in range(self.partitions):
            letters = [
                d
                for d in await self._scan(part, None)
                if (not kind or d.kind == kind) and (not reason or d.reason == reason)
            ]
            for letter in [d for d in letters if d.kind == "inbound"]:
                with contextlib.suppress(NotReplayable):
                    total += await self._requeue_inbound(letter, by)
            letters = [d for d in letters if d.kind in ORIGIN]
            for start in range(0, len(letters), _BATCH):
                total += len(await self._move(part, letters[start : start + _BATCH], by=by))
        return total

    async def _move(self, part: int, letters: list[DeadLetter], by: str = "") -> list[str]:
        keys = PartitionKeys(part)
        answer = await self._replay(
            keys=[keys.dead, keys.outbox, keys.jobs, keys.track],
            args=[d.id.split("-", 1)[1] for d in letters],
        )
        moved = []
        for letter, new_id in zip(letters, answer, strict=True):
            if not new_id:
                continue
            moved.append(str(new_id))
            self._replayed(letter, by)
        return moved

    def _replayed(self, letter: DeadLetter, by: str) -> None:
        if self._metrics:
            self._metrics.dead_letter_replays.labels(letter.kind).inc()
        event(
            log,
            "dead_letter_replayed",
            id=letter.id,
            kind=letter.kind,
            reason=letter.reason,
            conv=mask_id(letter.conv),
            stream=ORIGIN.get(letter.kind, "inbox"),
            by=by or None,
        )

    async def drop(self, dead_id: str, *, by: str) -> bool:
        """Delete one dead letter for good (after an operator dealt with it another way)."""
        letter = await self.get(dead_id)
        if letter is None:
            return False
        removed = await self.redis.xdel(PartitionKeys(letter.partition).dead, letter.id.split("-", 1)[1])
        if not removed:
            return False
        if self._metrics:
            self._metrics.dead_letter_drops.labels(letter.kind).inc()
        event(
            log,
            "dead_letter_dropped",
            id=letter.id,
            kind=letter.kind,
            reason=letter.reason,
            conv=mask_id(letter.conv),
            by=by,
        )
        return True


# -- command line: `python -m bot dead list | show ID | replay ID|--all | drop ID` ---------------------


def add_cli(sub: Any) -> None:
    """The `dead` subcommand and its actions (wired by bot/__main__.py)."""
    dead = sub.add_parser("dead", help="list, show, replay or drop dead letters (needs REDIS_URL)")
    dead.add_argument("--env-file", default=".env")
    actions = dead.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="dead letters, oldest first, and a count by reason")
    listing.add_argument("--kind", choices=sorted(ORIGIN))
    listing.add_argument("--reason")
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    show = actions.add_parser("show", help="one dead letter with its payload, as JSON")
    show.add_argument("id")
    replay = actions.add_parser("replay", help="put dead letters back in their stream (each once)")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("id", nargs="?")
    which.add_argument("--all", action="store_true")
    replay.add_argument("--kind", choices=sorted(ORIGIN), help="with --all: only this kind")
    replay.add_argument("--reason", help="with --all: only this reason")
    drop = actions.add_parser("drop", help="delete one dead letter for good")
    drop.add_argument("id")


def run_cli(redis_url: str, partitions: int, args: Any) -> int:
    import asyncio

    return asyncio.run(_cli(redis_url, partitions, args))


async def _cli(redis_url: str, partitions: int, args: Any) -> int:
    import getpass

    from bot.store.connection import connect

    client = connect(redis_url)
    dead = DeadLetters(client, partitions)
    by = f"cli:{getpass.getuser()}"
    try:
        if args.action == "list":
            letters = await dead.find(limit=args.limit, kind=args.kind, reason=args.reason)
            if args.json:
                for one in letters:
                    print(json.dumps(one.summary()))
                return 0
            print(f"{'ID':<28} {'KIND':<6} {'REASON':<22} {'AT':<20} {'ATTEMPTS':>8}  {'ABOUT':<14} CONV")
            for d in letters:
                print(
                    f"{d.id:<28} {d.kind:<6} {d.reason[:22]:<22} {_when(d.at):<20} {d.attempts:>8}  "
                    f"{str(d.summary()['about'])[:14]:<14} {d.conv}"
                )
            counts = await dead.counts()
            print(f"{sum(counts.values())} dead letter(s)")
            for name, count in sorted(counts.items()):
                print(f"  {name}: {count}")
            return 0
        if args.action == "show":
            letter = await dead.get(args.id)
            if letter is None:
                print(f"no dead letter {args.id}", file=sys.stderr)
                return 1
            print(json.dumps({**letter.summary(), "payload": letter.payload}, indent=2))
            return 0
        if args.action == "replay":
            if args.all:
                count = await dead.replay_all(by=by, kind=args.kind, reason=args.reason)
                print(f"replayed {count} dead letter(s)")
                return 0
            try:
                replayed = await dead.replay(args.id, by=by)
            except NotReplayable as exc:
                print(f"dead letter {args.id} is of kind {exc} and cannot be replayed", file=sys.stderr)
                return 1
            if replayed is None:
                print(f"no dead letter {args.id} (already replayed or dropped?)", file=sys.stderr)
                return 1
            print(f"replayed {args.id}")
            return 0
        if args.action == "drop":
            if not await dead.drop(args.id, by=by):
                print(f"no dead letter {args.id}", file=sys.stderr)
                return 1
            print(f"dropped {args.id}")
            return 0
        return 2
    finally:
        await client.aclose()


def _when(at: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S") if at else "-"
