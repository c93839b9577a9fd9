"""A throwaway local Redis Cluster (3 masters, no replicas) for the integration tests and benchmarks.

`TEST_REDIS_CLUSTER=1` makes tests/conftest.py start one per test session and hand the broker a
`redis+cluster://` URL, so the same tests prove that every Lua script stays in one slot.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import redis as sync_redis

from bot.errors import BrokerError
from bot.store.connection import EmbeddedRedis, free_port, redis_server_binary


def redis_cli_binary() -> str:
    """The redis-cli next to the redis-server in use, else the one on PATH."""
    beside = Path(redis_server_binary()).with_name("redis-cli")
    if beside.exists():
        return str(beside)
    found = shutil.which("redis-cli")
    if found:
        return found
    raise BrokerError("no redis-cli next to redis-server or on PATH")


class LocalCluster:
    """`masters` cluster-enabled redis-servers on free loopback ports, joined with `redis-cli --cluster`."""

    def __init__(self, masters: int = 3) -> None:
        self.masters = masters
        self._dir = Path(tempfile.mkdtemp(prefix="redis-cluster-"))
        self.nodes: list[EmbeddedRedis] = []

    @property
    def ports(self) -> list[int]:
        return [n.port for n in self.nodes]

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def start(self, timeout: float = 20.0) -> LocalCluster:
        try:
            for _ in range(self.masters):
                port = free_port()
                node = EmbeddedRedis(
                    None,
                    port,
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    str(self._dir / f"nodes-{port}.conf"),
                    # an explicit bus port: the default (port + 10000) may be taken or out of range
                    "--cluster-port",
                    str(free_port()),
                    "--cluster-node-timeout",
                    "3000",
                    "--dir",
                    str(self._dir),
                )
                self.nodes.append(node.start())
            addresses = [f"127.0.0.1:{p}" for p in self.ports]
            created = subprocess.run(
                [
                    redis_cli_binary(),
                    "--cluster",
                    "create",
                    *addresses,
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
            if created.returncode != 0:
                raise BrokerError(
                    f"redis-cli --cluster create failed: {created.stdout[-400:]} {created.stderr[-400:]}"
                )
            self._wait_ok(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ok(self, timeout: float) -> None:
        """Every node agrees the cluster is up and knows every master (gossip takes a moment)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = 0
            for port in self.ports:
                with sync_redis.Redis(host="127.0.0.1", port=port, decode_responses=True) as client:
                    info = client.execute_command("CLUSTER", "INFO")
                    text = info if isinstance(info, str) else str(info)
                    if "cluster_state:ok" in text and f"cluster_known_nodes:{self.masters}" in text:
                        ready += 1
            if ready == len(self.ports):
                return
            time.sleep(0.05)
        raise BrokerError(f"the local Redis Cluster did not reach cluster_state:ok within {timeout}s")

    def flush(self) -> None:
        """FLUSHALL on every master (a cluster client's flushall reaches one node only)."""
        for port in self.ports:
            with sync_redis.Redis(host="127.0.0.1", port=port) as client:
                client.flushall()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.nodes.clear()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def flush_all(url: str) -> None:
    """Empty the Redis at `url`: every master of a cluster, or the one server."""
    if url.split("://", 1)[0].endswith("+cluster"):
        from redis.cluster import RedisCluster

        with RedisCluster.from_url(url.replace("+cluster://", "://", 1)) as cluster:
            cluster.flushall(target_nodes=RedisCluster.PRIMARIES)
        return
    with sync_redis.Redis.from_url(url) as client:
        client.flushall()
