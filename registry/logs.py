"""Logging as registry:2 configures it: ``log.level``, ``log.formatter`` (text or json),
``log.fields`` added to every line. In json, one object per line, and an access line
carries registry:2's ``http.request.*`` / ``http.response.*`` fields too."""

from __future__ import annotations

import json
import logging
import sys

from .config import LogConfig

#: The ``extra`` key of a record whose dict the JSON lines include (``middleware.py``).
LOG_FIELDS = "fields"

LEVELS = {
    "error": logging.ERROR,
    "warn": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
}


class _JSONFormatter(logging.Formatter):
    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__()
        self.fields = fields

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "msg": record.getMessage(),
            **getattr(record, LOG_FIELDS, {}),
            **self.fields,
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(config: LogConfig) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if config.formatter == "json":
        handler.setFormatter(_JSONFormatter(dict(config.fields)))
    else:
        fields = "".join(f" {name}={value}" for name, value in config.fields.items())
        line = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"
        handler.setFormatter(logging.Formatter(line + fields.replace("%", "%%")))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[config.level])
    # Hypercorn's info lines repeat ours ("Running on ..."); keep its warnings.
    logging.getLogger("hypercorn.error").setLevel(max(logging.WARNING, LEVELS[config.level]))
