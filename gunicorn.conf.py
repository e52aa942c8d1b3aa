"""Gunicorn settings for the production command: `gunicorn -c gunicorn.conf.py app.main:app`.

Flags given on the command line (`--bind`, `--workers`, ...) win over these.
"""

import gc
import os
import shutil
import sys
import tempfile
from typing import Any

from pydantic import ValidationError

from app.core.config import Settings, describe_settings_error
from app.core.logging import logging_config

# Settings are checked here, in the master, before any worker starts: a bad
# SECRET_KEY in production stops the server with one line saying why.
try:
    _settings = Settings()
except ValidationError as error:
    sys.exit(describe_settings_error(error))

# 0.0.0.0 so a container publishes it; `make run` passes --bind 127.0.0.1:PORT.
bind = os.environ.get("BIND", f"0.0.0.0:{os.environ.get('PORT', '8000')}")
# One async worker per core is the usual fit. Each worker keeps its own
# database pool, a share of DB_MAX_CONNECTIONS (see on_starting).
workers = int(os.environ.get("WEB_CONCURRENCY") or os.cpu_count() or 1)
# From the uvicorn-worker package; it runs Uvicorn with uvloop and httptools
# when they are installed (they are: uvicorn[standard]).
worker_class = "uvicorn_worker.UvicornWorker"

# Each worker listens on a socket of its own (SO_REUSEPORT; the master holds
# none), and the kernel spreads new connections over them evenly. With one
# shared socket the busiest worker, its loop already awake, accepted most
# connections: measured at 0.85-0.90 of a core against 0.10 for the other.
# What it costs: connections still waiting in a dying worker's queue are
# reset (Linux 5.14+ can move them: sysctl net.ipv4.tcp_migrate_req=1), and a
# second server started by the same user on the same port shares it instead
# of failing with "address in use".
reuse_port = True
# A worker that stops answering the arbiter for this long is restarted.
timeout = 60
# On SIGTERM, requests in flight get this long to finish before workers are killed.
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT", "30"))
# How long an idle connection is kept open. Longer than a load balancer's
# own idle timeout (60 s is common): else the balancer sends a request down a
# connection the server is just closing, and its client gets a 502.
keepalive = int(os.environ.get("KEEPALIVE_SECONDS", "75"))
# Gunicorn 27's control socket (for `gunicornc`) is not used here; it would
# live in $HOME, which the container's user cannot write and which several
# servers on one machine would share.
control_socket_disable = True

# Gunicorn's own lines go through the service's formatter (JSON outside
# development); the application writes one access line per request itself.
logconfig_dict = logging_config(_settings)
accesslog = None
loglevel = _settings.log_level.lower()

# Trust X-Forwarded-* only from the proxies named here (default: none).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")

# Prometheus metrics add up across workers: each worker writes its samples
# into this directory (set before any worker imports prometheus_client), and
# /metrics, whichever worker serves it, reads them all.
_own_metrics_dir = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
metrics_dir = os.environ.setdefault(
    "PROMETHEUS_MULTIPROC_DIR",
    os.path.join(tempfile.gettempdir(), f"storefront-metrics-{os.getpid()}"),
)


def on_starting(server: Any) -> None:
    # The worker count as finally set (`--workers` wins over this file): each
    # worker's Settings divide DB_MAX_CONNECTIONS by it for their pool.
    os.environ["WEB_CONCURRENCY"] = str(server.cfg.workers)
    # Samples of an earlier run would be summed with this one's.
    shutil.rmtree(metrics_dir, ignore_errors=True)
    os.makedirs(metrics_dir, exist_ok=True)


def child_exit(server: object, worker: object) -> None:
    from prometheus_client import multiprocess

    # A dead worker's gauges (requests in flight, pool use) no longer count.
    multiprocess.mark_process_dead(worker.pid, metrics_dir)  # type: ignore[attr-defined]


def on_exit(server: object) -> None:
    if _own_metrics_dir:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def post_worker_init(worker: object) -> None:
    # The application is loaded: its modules, routes, schemas and mappers
    # live as long as the worker. Frozen, the garbage collector stops
    # walking them on every full collection, pauses that otherwise land in
    # the latency tail of whichever requests are in flight.
    gc.collect()
    gc.freeze()
