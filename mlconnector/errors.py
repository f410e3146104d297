"""Errors a user can meet, each with its exit code and a message that names the cause and the fix.

Anything raised to the CLI that is a ``ConnectorError`` is printed as one paragraph and turned into
the exit code below; nothing else should reach the user as a traceback.
"""

from __future__ import annotations

# Exit codes, documented in README.md ("Exit codes"). Keep the two in step.
EXIT_OK = 0
EXIT_RECORDS_FAILED = 1  # the pass finished, but some records failed and are queued for replay
EXIT_CONFIG = 2  # configuration or usage error (also Click's own usage errors)
EXIT_UNREACHABLE = 3  # cannot authenticate to, or reach, a system
EXIT_LOCKED = 4  # another run holds the lock for this configuration
EXIT_STATE = 5  # the state file is unreadable, corrupt, from a newer version, or describes other sites
EXIT_NOT_IN_STEP = 6  # reconcile: some records are missing, drifted or orphaned (the report names each)
EXIT_INTERNAL = 70  # a bug: the traceback goes to a private crash report

# What each code means, for `--help` and README.md's table (tests/test_cli_basics.py holds the two in step).
EXIT_CODES: dict[int, str] = {
    EXIT_OK: "the pass finished: every record synced or unchanged",
    EXIT_RECORDS_FAILED: "the pass finished, but some records failed and are queued for replay",
    EXIT_CONFIG: "configuration or usage error",
    EXIT_UNREACHABLE: "cannot reach or authenticate to a system, or one of its services is not usable",
    EXIT_LOCKED: "another run holds the lock for this configuration (this run did nothing)",
    EXIT_STATE: "the state file is unreadable, corrupt, from a newer version, or describes other sites",
    EXIT_NOT_IN_STEP: "reconcile: the two sides differ (records missing, drifted or orphaned; the report names each)",
    EXIT_INTERNAL: "internal error (a bug): the traceback is in the crash report named in the message",
}


class ConnectorError(Exception):
    """An error with a user-facing message and an exit code."""

    exit_code = EXIT_CONFIG

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class ConfigError(ConnectorError):
    exit_code = EXIT_CONFIG


class SecretMissingError(ConfigError):
    pass


class StateError(ConnectorError):
    exit_code = EXIT_STATE


class LockedError(ConnectorError):
    exit_code = EXIT_LOCKED


class UnreachableError(ConnectorError):
    """DNS, TCP, TLS or timeout: the system could not be reached at all."""

    exit_code = EXIT_UNREACHABLE


class AuthError(ConnectorError):
    """The system answered, but refused our credentials (401, IB user errors, OAuth failures)."""

    exit_code = EXIT_UNREACHABLE


class TokenError(AuthError):
    """An OAuth authorization server refused to issue a token (its message names the fix)."""


class RemoteError(ConnectorError):
    """A request reached the system and was refused or failed.

    ``raw`` keeps the remote body verbatim for the audit trail: PeopleSoft messages are cryptic
    and admins need the original text.
    """

    exit_code = EXIT_UNREACHABLE

    def __init__(
        self,
        message: str,
        *,
        system: str = "",
        status: int | None = None,
        raw: str = "",
        retryable: bool = False,
        exit_code: int | None = None,
    ) -> None:
        super().__init__(message, exit_code=exit_code)
        self.system = system
        self.status = status
        self.raw = raw
        self.retryable = retryable


class AmbiguousWriteError(RemoteError):
    """A non-idempotent write may or may not have taken effect (timeout or reset after sending).

    The caller must look the result up before trying again; it is never retried blindly.
    """


class RecordError(ConnectorError):
    """One source record cannot be mapped (missing key, bad date...). The pass goes on without it."""

    exit_code = EXIT_RECORDS_FAILED
