"""Secrets: stored in the OS keyring, with an environment override for headless hosts.

A secret is named ``<system>.<name>`` (``peoplesoft.password``, ``jira.api_token`` ...) and kept in
the keyring under service ``mlconnector`` with user ``<instance>/<system>.<name>``, so several
customer instances can share one machine. ``MLCONNECTOR_<SYSTEM>_<NAME>`` (upper case) overrides
the keyring, for hosts where no keyring backend exists (cron on a headless server, containers).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from mlconnector.errors import ConfigError, SecretMissingError

SERVICE = "mlconnector"

# Every secret the tool can use, and when it is needed.
KNOWN_SECRETS = {
    "peoplesoft.password": "PeopleSoft OPRID password (auth = \"basic\")",
    "peoplesoft.client_secret": "OAuth2 client secret for the PeopleSoft identity provider (auth = \"oauth2\")",
    "jde.password": "JD Edwards AIS service account password (token login or per-request Basic auth)",
    "procurify.client_secret": "Procurify API application client secret (OAuth2 client credentials)",
    "jaggaer.client_secret": "JAGGAER integration client secret (OAuth2 client credentials, per environment)",
    "jaggaer.cxml_shared_secret": "SharedSecret JAGGAER sends in cXML Header/Sender/Credential (cxml serve)",
    "procore.client_secret": "Procore app client secret (Developer Managed Service Account, client credentials)",
    "procore.webhook_secret": "Shared secret Procore sends as the webhook's Authorization header (Bearer <secret>)",
    "jira.api_token": "Jira API token of the configured email (auth = \"basic\")",
    "jira.client_secret": "Jira OAuth 2.0 (3LO) app client secret (auth = \"oauth2\")",
    "jira.refresh_token": "Jira OAuth 2.0 refresh token, written by 'mlconnector auth jira' (auth = \"oauth2\")",
    "jira.webhook_secret": "Shared secret of the Jira admin webhook (X-Hub-Signature)",
}


def env_name(name: str) -> str:
    return "MLCONNECTOR_" + name.replace(".", "_").upper()


def check_name(name: str) -> None:
    if name not in KNOWN_SECRETS:
        raise ConfigError(f"Unknown secret {name!r}. Known secrets: {', '.join(sorted(KNOWN_SECRETS))}.")


def _keyring():  # noqa: ANN202 - keyring is imported only when a secret is really needed
    import keyring
    import keyring.errors

    return keyring, keyring.errors


@dataclass
class SecretStore:
    instance: str

    def _user(self, name: str) -> str:
        return f"{self.instance}/{name}"

    def get(self, name: str) -> str:
        """Return the secret or raise an error naming the command and variable that fix it."""
        value = self.find(name)
        if value:
            return value
        raise SecretMissingError(
            f"The secret {name} ({KNOWN_SECRETS.get(name, name)}) is not set for instance "
            f"{self.instance!r}. Store it with: mlconnector secrets set {name} --config <this config>  "
            f"(or, on a host without a keyring, set the environment variable {env_name(name)})."
        )

    def find(self, name: str) -> str | None:
        env = os.environ.get(env_name(name))
        if env:
            return env
        return self.find_in_keyring(name)

    def find_in_keyring(self, name: str) -> str | None:
        """The keyring's value only, ignoring the environment (None when absent or no keyring)."""
        keyring, errors = _keyring()
        try:
            return keyring.get_password(SERVICE, self._user(name))
        except errors.NoKeyringError:
            return None
        except Exception as exc:  # backends raise their own errors (D-Bus, Windows API...), not only KeyringError
            raise ConfigError(
                f"The OS keyring could not be read ({exc.__class__.__name__}). Unlock it, or set "
                f"{env_name(name)} in the environment instead."
            ) from None

    def set(self, name: str, value: str) -> None:
        check_name(name)
        keyring, errors = _keyring()
        try:
            keyring.set_password(SERVICE, self._user(name), value)
        except errors.NoKeyringError:
            raise ConfigError(
                f"No OS keyring is available on this host, so {name} cannot be stored. Set the "
                f"environment variable {env_name(name)} for the cron job instead (for example in a file "
                f"only the service account can read)."
            ) from None
        except Exception as exc:  # any backend failure: say what to do instead
            raise ConfigError(f"The OS keyring refused to store {name} ({exc.__class__.__name__}). Unlock "
                              f"it, or use {env_name(name)} instead.") from None

    def delete(self, name: str) -> bool:
        check_name(name)
        keyring, errors = _keyring()
        try:
            keyring.delete_password(SERVICE, self._user(name))
            return True
        except errors.PasswordDeleteError:
            return False
        except errors.NoKeyringError:
            raise ConfigError(f"No OS keyring is available on this host; nothing to delete for {name}.") from None

    def where(self, name: str) -> str:
        """Where the secret currently comes from: 'environment', 'keyring' or 'missing' (never its value)."""
        if os.environ.get(env_name(name)):
            return "environment"
        keyring, errors = _keyring()
        try:
            return "keyring" if keyring.get_password(SERVICE, self._user(name)) else "missing"
        except Exception:  # noqa: BLE001 - any backend failure means the secret is not available there
            return "missing (no keyring)"


def required_secrets(cfg: Any) -> list[str]:
    """The secrets this configuration needs, for `secrets list` and `ping`."""
    names: list[str] = []
    if cfg.ps is not None:
        names.append("peoplesoft.password" if cfg.ps.auth == "basic" else "peoplesoft.client_secret")
    if cfg.jde is not None and hasattr(cfg.jde, "required_secrets"):
        names += list(cfg.jde.required_secrets())
    if "procurify" in getattr(cfg, "sections", {}):
        names.append("procurify.client_secret")
    if "jaggaer" in getattr(cfg, "sections", {}):
        names.append("jaggaer.client_secret")
    if "procore" in getattr(cfg, "sections", {}):
        names.append("procore.client_secret")
    if cfg.jira is None:
        return names
    if cfg.jira.auth == "basic":
        names.append("jira.api_token")
    else:
        names += ["jira.client_secret", "jira.refresh_token"]
    return names
