"""Log lines carry the request id (and user id when known); JSON outside development."""

import json
import logging
import logging.config
from datetime import UTC, datetime
from typing import Any

from opentelemetry.trace import get_current_span

from app.core.config import Settings
from app.core.context import request_id_var, user_id_var

# Attributes every LogRecord has; anything else was passed through `extra=`.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys() | {"message", "asctime"}
)


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.user_id = user_id_var.get()
        # With tracing on, the line names its trace and span (W3C hex, as
        # trace back-ends show them); off, there is never a current span.
        span = get_current_span().get_span_context()
        if span.is_valid:
            record.trace_id = format(span.trace_id, "032x")
            record.span_id = format(span.span_id, "016x")
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s [%(request_id)s] %(message)s")


def logging_config(settings: Settings) -> dict[str, Any]:
    """One logging setup (a dictConfig) for the workers and for Gunicorn's master.

    Every line goes to stderr through one handler, as JSON or text, with the
    request and user ids; the servers' own loggers propagate to it.
    """
    formatter = "json" if settings.effective_log_format == "json" else "text"
    level = logging.getLevelName(settings.log_level)
    propagate: dict[str, Any] = {"handlers": [], "propagate": True}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": ContextFilter}},
        "formatters": {"json": {"()": JsonFormatter}, "text": {"()": TextFormatter}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": formatter,
                "filters": ["context"],
            }
        },
        "root": {"level": settings.log_level, "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": propagate,
            "gunicorn.access": propagate,
            "uvicorn": propagate,
            "uvicorn.error": propagate,
            # The access line is ours (with request id, route and duration);
            # uvicorn's own would repeat it without them.
            "uvicorn.access": {**propagate, "level": "WARNING"},
            # At DEBUG, aiosqlite logs every statement with its parameters,
            # password hashes among them; no log line may show a hash.
            "aiosqlite": {**propagate, "level": logging.getLevelName(max(logging.INFO, level))},
        },
    }


def configure_logging(settings: Settings) -> None:
    logging.config.dictConfig(logging_config(settings))
