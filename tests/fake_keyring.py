"""A keyring backend for tests: passwords in a JSON file named by $FAKE_KEYRING_FILE.

Subprocess CLI tests select it with ``PYTHON_KEYRING_BACKEND=fake_keyring.FileKeyring`` and tests/
on ``PYTHONPATH``, so `mlconnector secrets ...` and a sync really go through the keyring API.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from jaraco.classes import properties
from keyring.backend import KeyringBackend
from keyring.errors import PasswordDeleteError

ENV = "FAKE_KEYRING_FILE"


class FileKeyring(KeyringBackend):
    """Stores {service: {user: password}} in one JSON file (plain text: tests only)."""

    @properties.classproperty
    def priority(cls) -> float:  # noqa: N805 - keyring's classproperty
        # Viable only where a test asked for it: keyring's discovery skips a backend whose priority raises,
        # so importing this module elsewhere in the test process changes nothing.
        if not os.environ.get(ENV):
            raise RuntimeError(f"{ENV} is not set")
        return 100

    @staticmethod
    def _path() -> Path:
        value = os.environ.get(ENV)
        if not value:
            raise RuntimeError(f"{ENV} is not set: point it at the JSON file the fake keyring should use")
        return Path(value)

    def _read(self) -> dict[str, dict[str, str]]:
        path = self._path()
        if not path.exists():
            return {}
        return json.loads(path.read_text(encoding="utf-8") or "{}")

    def _write(self, data: dict[str, dict[str, str]]) -> None:
        path = self._path()
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)

    def get_password(self, service: str, username: str) -> str | None:
        return self._read().get(service, {}).get(username)

    def set_password(self, service: str, username: str, password: str) -> None:
        data = self._read()
        data.setdefault(service, {})[username] = password
        self._write(data)

    def delete_password(self, service: str, username: str) -> None:
        data = self._read()
        if username not in data.get(service, {}):
            raise PasswordDeleteError(f"{service}/{username} is not stored")
        del data[service][username]
        self._write(data)
