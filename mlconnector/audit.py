"""Audit trail: one JSON line per record action, secrets redacted.

Also home of the Redactor, which every output path (audit, logs, --json, error messages) passes
text through: it knows the configured secrets and their Basic-auth base64 forms.
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from pathlib import Path
from typing import Any

from mlconnector.private import open_private
from mlconnector.state import iso, utcnow

MASK = "***"
log = logging.getLogger("mlconnector.audit")


class Redactor:
    def __init__(self) -> None:
        self._needles: set[str] = set()

    def add(self, secret: str | None, user: str | None = None) -> None:
        if not secret or len(secret) < 4:
            return
        # The raw value, its JSON-escaped form (lines are redacted after serialising) and its Basic header.
        self._needles.add(secret)
        self._needles.add(json.dumps(secret, ensure_ascii=False)[1:-1])
        if user:
            self._needles.add(base64.b64encode(f"{user}:{secret}".encode()).decode())

    def __call__(self, text: str) -> str:
        for n in sorted(self._needles, key=len, reverse=True):
            if n in text:
                text = text.replace(n, MASK)
        return text

    def obj(self, value: Any) -> Any:
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {k: self.obj(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.obj(v) for v in value]
        return value


# Every secret loaded in this process, so output paths that know no configuration can still mask them.
GLOBAL = Redactor()


def redact(text: str) -> str:
    return GLOBAL(text)


class RedactingFilter(logging.Filter):
    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redactor(record.getMessage())
        record.args = ()
        return True


class Audit:
    """Appends JSON lines; each line flushed so a killed pass keeps what it did."""

    def __init__(self, path: Path | None, redactor: Redactor, pair: str, run_id: str | None = None) -> None:
        self.path = path
        self.redactor = redactor
        self.pair = pair
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self._fh = None
        if path is not None:
            # 0600 in a 0700 directory: the trail keeps raw remote answers (PeopleSoft fault bodies).
            self._fh = open_private(path, "a", encoding="utf-8", errors="replace")

    def write(self, action: str, kind: str = "", key: str = "", **detail: Any) -> None:
        if self._fh is None:
            return
        line = {"ts": iso(utcnow()), "run": self.run_id, "pair": self.pair, "action": action,
                "kind": kind, "key": key}
        line.update({k: v for k, v in detail.items() if v not in (None, "")})
        text = self.redactor(json.dumps(line, ensure_ascii=False, default=str))
        self._fh.write(text + "\n")
        if log.isEnabledFor(logging.DEBUG):  # --verbose shows each record action as it happens
            log.debug(text)
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
