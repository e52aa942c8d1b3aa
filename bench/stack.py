"""What each middleware costs a request, measured in one process with no HTTP and no database.

`python -m bench.stack` (run by `make bench`) builds the production app,
calls it as an ASGI application with `GET /health/live` (a route that only
answers) many times, and takes the CPU time per request: with every
middleware, then with each one left out in turn (the difference is its
cost), and for a bare Starlette route beside it. Writes
bench/results/stack-latest.json. CPU time (time.process_time) rather than
wall time, so that other work on the machine matters less; still a few
microseconds of noise.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

REQUESTS = int(os.environ.get("BENCH_STACK_REQUESTS", "10000"))
ROUNDS = 3  # the median of these, each REQUESTS long
ASGI = Callable[..., Awaitable[None]]


def _scope(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"bench"), (b"accept", b"*/*")],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }


async def _microseconds(app: ASGI, path: str, rounds: int = ROUNDS) -> float:
    """CPU µs per request: the median of `rounds` runs of REQUESTS requests each."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and message["status"] != 200:
            raise RuntimeError(f"{path} answered {message['status']}")

    # As a worker runs after gunicorn.conf.py's post_fork: the app's objects frozen.
    gc.collect()
    gc.freeze()
    figures = []
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(REQUESTS):
            await app(_scope(path), receive, send)
        figures.append((time.process_time() - started) / REQUESTS * 1e6)
    return sorted(figures)[rounds // 2]


async def measure() -> dict[str, Any]:
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from app.core.config import Settings
    from app.main import create_app

    data = Path(tempfile.mkdtemp(prefix="bench-stack-"))
    settings = Settings(
        _env_file=None,
        environment="production",
        secret_key="bench-stack-key-" + "x" * 40,
        database_url=f"sqlite+aiosqlite:///{data / 'app.db'}",
        data_dir=data,
        log_level="WARNING",
    )
    app = create_app(settings)
    figures: dict[str, Any] = {"requests": REQUESTS, "rounds": ROUNDS}

    def stack(middleware: list[Any]) -> Any:
        app.user_middleware = middleware
        return app.build_middleware_stack()

    async def with_stack(built: Any, rounds: int = ROUNDS) -> float:
        app.middleware_stack = built
        return await _microseconds(app, "/health/live", rounds)

    async with app.router.lifespan_context(app):
        present = list(app.user_middleware)
        full = stack(present)
        figures["all middleware"] = round(await with_stack(full), 1)
        costs = {}
        for middleware in present:
            without = stack([m for m in present if m is not middleware])
            # With and without in turn, so that both meet the same machine;
            # the median of the differences.
            differences = []
            for _ in range(ROUNDS):
                differences.append(await with_stack(full, 1) - await with_stack(without, 1))
            differences.sort()
            name = getattr(middleware.cls, "__name__", repr(middleware.cls))
            costs[name] = round(differences[ROUNDS // 2], 1)
        figures["no middleware"] = round(await with_stack(stack([])), 1)
        figures["each middleware"] = costs

    async def live(_: Any) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    bare = Starlette(routes=[Route("/health/live", live)])
    figures["bare Starlette route"] = round(await _microseconds(bare, "/health/live"), 1)
    return figures


def main() -> int:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    figures = asyncio.run(measure())
    print("CPU per GET /health/live, in one process, no HTTP (µs):")
    for name in ("all middleware", "no middleware", "bare Starlette route"):
        print(f"  {name:<40}{figures[name]:>8.1f}")
    for name, cost in figures["each middleware"].items():
        print(f"  {'  ' + name:<40}{cost:>8.1f}")
    results = Path(os.environ.get("BENCH_RESULTS") or ROOT / "bench" / "results")
    results.mkdir(parents=True, exist_ok=True)
    (results / "stack-latest.json").write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
