"""Logging, configured once in each process's main(): text for terminals, JSON lines in containers."""

from __future__ import annotations

import json
import logging

from llama_mapper.platform.settings.common import common

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record; the message is escaped, so any text stays one valid line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(json_logs: bool | None = None, level: int = logging.INFO) -> None:
    """JSON when `json_logs` (default: MAPPER_LOG_FORMAT=json), text otherwise."""
    if json_logs is None:
        json_logs = common().log_format == "json"
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if json_logs else logging.Formatter(_TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
