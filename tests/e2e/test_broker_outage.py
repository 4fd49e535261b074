"""The broker unreachable for 30 s mid-run: roles reconnect, every accepted boot ends.

The outage is of connectivity, as a network partition would be: an Apache Kafka
node of the test's own is advertised behind a TCP proxy, and the proxy refuses
and drops every connection for 30 seconds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import time
from pathlib import Path

import pytest

from novalog.embedded import kafka_node
from novalog.kafka import wait_for_brokers
from novalog.process import free_port, spawn, stop_child
from novalog.settings import Settings
from tests.conftest import Infra, needs_java
from tests.e2e.conftest import running_cloud

pytestmark = [pytest.mark.integration, pytest.mark.slow, needs_java]


class Proxy:
    """127.0.0.1:listen -> 127.0.0.1:target, which can be cut off and restored."""

    def __init__(self, listen: int, target: int) -> None:
        self.listen, self.target = listen, target
        self.loop = asyncio.new_event_loop()
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        self.writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    def _run(self, coro: object) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)  # type: ignore[arg-type]

    def open(self) -> None:
        async def start() -> None:
            self.server = await asyncio.start_server(self._client, "127.0.0.1", self.listen,
                                                     reuse_address=True)
        self._run(start())

    def cut(self) -> None:
        async def stop() -> None:
            assert self.server is not None
            self.server.close()
            for w in list(self.writers):
                w.close()
            self.writers.clear()
            await self.server.wait_closed()
        self._run(stop())


def test_thirty_seconds_without_the_broker_lose_no_accepted_boot(infra: Infra,
                                                                 tmp_path: Path) -> None:
    real, advertised = free_port(), free_port()
    [node] = kafka_node.cluster_nodes(tmp_path / "kafka", [(real, free_port())])
    node = dataclasses.replace(node, advertised_port=advertised)
    [spec] = kafka_node.prepare_cluster(Settings.from_env(), [node], tmp_path / "logs",
                                        tmp_path / "kafka" / "cluster.id")
    broker = spawn(spec)
    proxy = Proxy(advertised, real)
    try:
        proxy.open()
        wait_for_brokers(f"127.0.0.1:{advertised}", 1)
        behind_proxy = Infra(f"127.0.0.1:{advertised}", infra.database_url, "proxied")
        with running_cloud(behind_proxy, tmp_path / "home", hosts=2) as cloud:
            cloud.raise_quotas()
            client = cloud.client()
            image = cloud.image_id()

            def boot(name: str) -> str:
                body = {"server": {"name": name, "flavorRef": "1", "imageRef": image,
                                   "min_count": 3, "max_count": 3,
                                   "return_reservation_id": True}}
                return str(client.request("POST", "/compute/v2.1/servers",
                                          json=body)["reservation_id"])

            before = boot("before")
            proxy.cut()
            started = time.monotonic()
            during = boot("during")  # accepted: the outbox holds it until the broker is back
            time.sleep(max(0.0, 30 - (time.monotonic() - started)))
            proxy.open()
            deadline = time.monotonic() + 180
            while True:
                servers = [s for r in (before, during) for s in client.get(
                    "/compute/v2.1/servers/detail", reservation_id=r)["servers"]]
                if len(servers) == 6 and all(s["status"] == "ACTIVE" for s in servers):
                    break
                assert time.monotonic() < deadline, [(s["name"], s["status"]) for s in servers]
                time.sleep(1)
            assert json.loads(cloud.cli("dead-letters", "--json").stdout) == []
            status = json.loads(cloud.cli("status", "--json").stdout)
            assert all(c["state"] == "up" for c in status["components"])
    finally:
        stop_child(broker)
