"""Log lines as JSON objects, and the logging set-up of a `sae-serve` process. Light: no torch, no app."""

import json
import logging
from typing import Any

from service.core.settings import Settings


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and the request's fields when it has them."""

    FIELDS = ("request_id", "method", "route", "model", "status", "duration_ms", "batch_images")

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,  # the worker process, where several serve
        }
        entry.update({k: getattr(record, k) for k in self.FIELDS if hasattr(record, k)})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler()
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"))
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler], force=True)
