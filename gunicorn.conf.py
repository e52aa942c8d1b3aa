"""Gunicorn settings for the production command: `gunicorn -c gunicorn.conf.py app.main:app`.

Flags given on the command line (`--bind`, `--workers`, ...) win over these.
"""

import os

# 0.0.0.0 so a container publishes it; `make run` passes --bind 127.0.0.1:PORT.
bind = os.environ.get("BIND", f"0.0.0.0:{os.environ.get('PORT', '8000')}")
# One async worker per core is the usual fit. Each worker keeps its own
# database pool (DB_POOL_SIZE + DB_MAX_OVERFLOW connections at most).
workers = int(os.environ.get("WEB_CONCURRENCY") or os.cpu_count() or 1)
# From the uvicorn-worker package; it runs Uvicorn with uvloop and httptools
# when they are installed (they are: uvicorn[standard]).
worker_class = "uvicorn_worker.UvicornWorker"

# A worker that stops answering the arbiter for this long is restarted.
timeout = 60
# On SIGTERM, requests in flight get this long to finish before workers are killed.
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT", "30"))
keepalive = 5
# Gunicorn 27's control socket (for `gunicornc`) is not used here; it would
# live in $HOME, which the container's user cannot write and which several
# servers on one machine would share.
control_socket_disable = True

# The application writes one access line per request itself (with request id).
accesslog = None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()

# Trust X-Forwarded-* only from the proxies named here (default: none).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
