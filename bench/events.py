"""Live events under load: from a change to 500 clients, and the memory each stream costs.

`make bench-events` (and the end of `make bench`):

1. recreates and seeds the benchmark database as bench/perf.py does, and
   starts the production command with BENCH_WORKERS (2) workers;
2. reads the workers' resident memory, opens BENCH_EVENT_CLIENTS (500) SSE
   streams (the kernel spreads them over the workers), reads it again: the
   difference per stream is the memory a stream costs;
3. changes BENCH_EVENT_CHANGES (200) products, one PATCH every 50 ms, and
   times each event's arrival at every client against the change's
   `updated_at` (taken just before its commit, on the same clock);
4. prints p50, p90, p99 and max of those latencies and writes
   bench/results/events-latest.json.

The clients run in this process, on the same two cores as the server: the
latencies include the time they wait for a core.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import statistics
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench import perf, production, seed

CLIENTS = int(os.environ.get("BENCH_EVENT_CLIENTS") or 500)
CHANGES = int(os.environ.get("BENCH_EVENT_CHANGES") or 200)
CHANGE_INTERVAL = 0.05


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Client:
    """One SSE stream over a raw connection: a reader as lean as the clients it stands for."""

    def __init__(self, expected: int) -> None:
        self.latencies: list[float] = []
        self.events = 0
        self.expected = expected
        self.done = asyncio.Event()  # every expected event arrived

    async def run(self, host: str, port: int, opened: asyncio.Event, stop: asyncio.Event) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET /api/v1/products/events HTTP/1.1\r\nHost: bench\r\n\r\n")
        await writer.drain()
        status = await reader.readline()
        if b" 200 " not in status:
            raise perf.BenchError(f"a stream was refused: {status!r}")
        while await reader.readline() not in (b"\r\n", b""):
            pass
        opened.set()
        try:
            while not stop.is_set():
                line = await reader.readline()
                if not line:
                    return
                if line.startswith(b"data: "):
                    arrived = datetime.now(UTC)
                    product = json.loads(line[6:])["product"]
                    written = datetime.fromisoformat(product["updated_at"])
                    self.latencies.append((arrived - written).total_seconds() * 1000)
                    self.events += 1
                    if self.events >= self.expected:
                        self.done.set()
        finally:
            writer.close()


async def drive(server: perf.Server, tokens: dict[int, str], smoke: bool) -> dict[str, Any]:
    host, port = server.base_url.removeprefix("http://").split(":")
    pids = server.worker_pids()
    clients_wanted = 20 if smoke else CLIENTS
    changes = 10 if smoke else CHANGES
    before = {pid: rss_kib(pid) for pid in pids}
    stop = asyncio.Event()
    clients = [Client(changes) for _ in range(clients_wanted)]
    opened = [asyncio.Event() for _ in clients]
    tasks = [
        asyncio.create_task(c.run(host, int(port), o, stop))
        for c, o in zip(clients, opened, strict=True)
    ]
    await asyncio.wait_for(asyncio.gather(*(o.wait() for o in opened)), timeout=60)
    await asyncio.sleep(1.0)
    after = {pid: rss_kib(pid) for pid in pids}
    per_stream = (sum(after.values()) - sum(before.values())) / clients_wanted
    perf.say(f"events: {clients_wanted} streams open; {per_stream:.1f} KiB of RSS each")

    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
        for n in range(changes):
            product_id = n % perf.PRODUCTS + 1
            owner = seed.owner_of(product_id, perf.USERS)
            response = await http.patch(
                f"/api/v1/products/{product_id}",
                json={"price": f"{10 + n % 90}.{n % 100:02d}"},
                headers={"Authorization": f"Bearer {tokens[owner]}"},
            )
            if response.status_code != 200:
                raise perf.BenchError(f"PATCH answered {response.status_code}: {response.text}")
            await asyncio.sleep(CHANGE_INTERVAL)
    everything = asyncio.gather(*(c.done.wait() for c in clients))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(everything, timeout=30)
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

    latencies = sorted(ms for c in clients for ms in c.latencies)
    received = sum(c.events for c in clients)
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {
        "clients": clients_wanted,
        "changes": changes,
        "events_expected": clients_wanted * changes,
        "events_received": received,
        "latency_ms": {
            "p50": round(quantiles[49], 2),
            "p90": round(quantiles[89], 2),
            "p99": round(quantiles[98], 2),
            "max": round(latencies[-1], 2) if latencies else 0.0,
        },
        "rss_kib_per_stream": round(per_stream, 1),
        "workers": len(pids),
    }


def run(config: perf.Config) -> dict[str, Any]:
    config.results.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    log_path = config.results / f"events-{stamp}.log"
    secret_key = secrets.token_urlsafe(48)
    environment = production.environment(config.database_url, "WARNING", SECRET_KEY=secret_key)
    environment["EVENTS_MAX_CLIENTS"] = str(max(1000, CLIENTS))
    with tempfile.TemporaryDirectory(prefix="bench-events-") as directory:
        fixtures = perf.Fixtures(config, secret_key, Path(directory))
        asyncio.run(seed.recreate_database(config.database_url))
        with log_path.open("a") as log:
            production.migrate(environment, log)
        asyncio.run(seed.seed(config.database_url, users=perf.USERS, products=perf.PRODUCTS))
        tokens = {user: fixtures.token(user) for user in range(1, perf.USERS + 1)}
        server = perf.Server.start("service", environment, config.workers, log_path)
        try:
            server.wait_until_ready(config.workers)
            return asyncio.run(drive(server, tokens, config.smoke))
        finally:
            server.stop()


def main() -> int:
    try:
        config = perf.Config.from_environment()
        report = run(config)
    except (perf.BenchError, seed.SeedError, production.ProductionError) as error:
        print(f"bench events: could not run: {error}", file=sys.stderr)
        return 2
    latency = report["latency_ms"]
    print(
        f"\nlive events, {report['clients']} SSE clients on {report['workers']} workers, "
        f"{report['changes']} changes: {report['events_received']} of "
        f"{report['events_expected']} events arrived; change to client p50 {latency['p50']} ms, "
        f"p90 {latency['p90']} ms, p99 {latency['p99']} ms, max {latency['max']} ms; "
        f"{report['rss_kib_per_stream']} KiB per open stream",
        flush=True,
    )
    name = "events-smoke-latest.json" if config.smoke else "events-latest.json"
    (config.results / name).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["events_received"] == report["events_expected"] else 1


if __name__ == "__main__":
    sys.exit(main())
