"""JD Edwards AIS Server client: token session, data-service BROWSE with next-page links, orchestrations.

All requests go through the shared HttpClient (one retry policy). On top of it this module adds only
what AIS needs (reference jde-ais.md sections 2, 3, 6, 7):
- a token from /jderest/v2/tokenrequest, sent as jde-AIS-Auth with the device header, kept for its
  configured lifetime and logged out at the end of the pass (tokens are never kept between runs:
  pitfall 1);
- HTTP 444 (invalid or expired token): drop the token, log in again and retry the call once;
- per-request Basic auth when the site uses stateless mode;
- paging: next links are followed until moreRecords is false; every page of a window is fetched back
  to back before anything is written, and an expired result set (HTTP 500, JAS_MSG347) restarts the
  window from its first page.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests

from mlconnector.errors import AuthError, ConfigError, ConnectorError, RemoteError
from mlconnector.http import HttpClient, short_body
from mlconnector.jde.config import JdeConfig

log = logging.getLogger("mlconnector.jde")

SYSTEM = "JD Edwards"
EXPIRED_RESULT_SET = "JAS_MSG347"
MAX_PAGES = 100_000  # guard against a server that never says moreRecords = false


class ResultSetExpired(RemoteError):
    """The open result set of a paged BROWSE timed out between two pages."""


@dataclass
class Condition:
    column: str  # "F4801.UPMJ"
    operator: str  # EQUAL, GREATER_EQUAL, LIST, ...
    values: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"controlId": self.column, "operator": self.operator,
                "value": [{"content": v, "specialValueId": "LITERAL"} for v in self.values]}


def _expired(resp: requests.Response) -> bool:
    # A paging timeout is not worth the HTTP policy's retries: the same link stays expired.
    return resp.status_code == 500 and EXPIRED_RESULT_SET in resp.text


def _errors_in(obj: Any, depth: int = 0) -> list[str]:
    """Messages from nested errors[] / sysErrors[] arrays (HTTP 200 does not mean success: pitfall 12)."""
    found: list[str] = []
    if depth > 8:
        return found
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in ("errors", "sysErrors", "Errors") and isinstance(v, list):
                for e in v:
                    if isinstance(e, dict):
                        found.append(str(e.get("DESC") or e.get("TITLE") or e.get("message") or e))
                    elif e:
                        found.append(str(e))
            else:
                found += _errors_in(v, depth + 1)
    elif isinstance(obj, list):
        for v in obj:
            found += _errors_in(v, depth + 1)
    return found


class AisClient:
    def __init__(self, cfg: JdeConfig, password: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self._password = password
        self._clock = clock
        self.http = HttpClient(SYSTEM, cfg.base_url, cfg.http, is_permanent=_expired,
                               config_hint="the [jde] section of the configuration")
        self.token: str | None = None
        self._token_until = 0.0
        self.user_info: dict[str, Any] = {}
        self.logins = 0
        self.relogins = 0

    # -- session ---------------------------------------------------------------------------------
    def _device_headers(self) -> dict[str, str]:
        h = {"jde-AIS-Auth-Device": self.cfg.device_name}
        if self.cfg.environment:
            h["jde-AIS-Auth-Environment"] = self.cfg.environment
        if self.cfg.role:
            h["jde-AIS-Auth-Role"] = self.cfg.role
        return h

    def login(self) -> str:
        body = {"username": self.cfg.user, "password": self._password, "deviceName": self.cfg.device_name}
        if self.cfg.environment:
            body["environment"] = self.cfg.environment
        if self.cfg.role:
            body["role"] = self.cfg.role
        # A token request changes nothing but the session table, so retrying it like a read is safe.
        resp = self.http.request("POST", "/jderest/v2/tokenrequest", json=body, idempotent=True,
                                 allow=(400, 403, 405, 415))
        if resp.status_code == 403:
            raise AuthError(f"JD Edwards refused the login of {self.cfg.user!r} (HTTP 403 on tokenrequest). Check "
                            f"jde.user, the password (mlconnector secrets set jde.password), and that the user may "
                            f"sign in to environment {self.cfg.environment or '(default)'} with role "
                            f"{self.cfg.role or '(default)'}.")
        if resp.status_code == 405:
            raise ConfigError("JD Edwards answered HTTP 405 to the token request: Allowed Hosts is not configured "
                              "on the HTML server for this AIS server. Ask the JDE administrator to add it in Server "
                              "Manager.")
        if resp.status_code in (400, 415):
            raise RemoteError(f"JD Edwards rejected the token request (HTTP {resp.status_code}): "
                              f"{short_body(resp.text)}", system=SYSTEM, status=resp.status_code, raw=resp.text)
        try:
            data = resp.json()
            token = str(data["userInfo"]["token"])
        except (ValueError, KeyError, TypeError):
            raise RemoteError(f"JD Edwards answered the token request without userInfo.token: {short_body(resp.text)}."
                              f" Check that jde.base_url points at the AIS server, not the HTML (JAS) server.",
                              system=SYSTEM, raw=resp.text) from None
        self.user_info = dict(data.get("userInfo") or {})
        self.token = token
        self._token_until = self._clock() + self.cfg.token_lifetime.total_seconds()
        self.logins += 1
        log.debug("AIS login as %s (dateFormat %s, simpleDateFormat %s)", self.cfg.user,
                  self.user_info.get("dateFormat"), self.user_info.get("simpleDateFormat"))
        return token

    def _ensure_token(self) -> None:
        if self.cfg.auth == "basic":
            return
        if self.token is None or self._clock() >= self._token_until:
            self.token = None
            self.login()

    def logout(self) -> None:
        """End the AIS session (every token holds an AIS and a JAS session until it times out)."""
        if self.token is None:
            return
        token, self.token = self.token, None
        try:
            self.http.request("POST", "/jderest/v2/tokenrequest/logout", json={"token": token},
                              headers={"jde-AIS-Auth": token, **self._device_headers()}, idempotent=True,
                              allow=(403, 444))
        except ConnectorError as exc:  # the session times out on its own; a failed logout must not fail the pass
            log.warning("JD Edwards logout failed: %s", exc.message)

    def close(self) -> None:
        self.logout()
        self.http.close()

    def date_pattern(self) -> str:
        if self.cfg.date_literal_format != "auto":
            return self.cfg.date_literal_format
        return str(self.user_info.get("simpleDateFormat") or "MM/dd/yyyy")

    # -- calls -----------------------------------------------------------------------------------
    def call(self, method: str, path: str, *, json_body: Any = None, idempotent: bool | None = None,
             params: Any = None) -> requests.Response:
        """One authenticated request; on 444 log in again and send it once more."""
        for attempt in (1, 2):
            self._ensure_token()
            headers = self._device_headers()
            auth = None
            if self.cfg.auth == "basic":
                auth = (self.cfg.user, self._password)
            else:
                assert self.token is not None
                headers["jde-AIS-Auth"] = self.token
            resp = self.http.request(method, path, json=json_body, params=params, headers=headers,
                                     idempotent=idempotent, allow=(444, 403), auth=auth)
            if resp.status_code == 444 and attempt == 1 and self.cfg.auth == "token":
                # Expired or invalidated token: AIS never refreshes it, the client must ask again.
                log.info("JD Edwards answered 444 on %s %s: logging in again", method, path)
                self.token = None
                self.relogins += 1
                continue
            if resp.status_code in (403, 444):
                raise AuthError(f"JD Edwards refused {method} {path.split('?')[0]} (HTTP {resp.status_code}"
                                f"{' even after a new login' if resp.status_code == 444 else ''}): "
                                f"{short_body(resp.text)}. Check that {self.cfg.user!r} may use this service "
                                f"(security workbench / AIS service permissions).")
            return resp
        raise AssertionError("unreachable")

    # -- data service ----------------------------------------------------------------------------
    def browse(self, table: str, columns: list[str], conditions: list[Condition], order_by: list[str] | None = None,
               page_size: int | None = None, first_page_only: bool = False) -> list[dict[str, Any]]:
        """Every row of a BROWSE, all pages read back to back; restarts when the result set expires."""
        restarts = 0
        while True:
            try:
                return list(self._browse_once(table, columns, conditions, order_by, page_size, first_page_only))
            except ResultSetExpired:
                restarts += 1
                if restarts > self.cfg.result_set_restarts:
                    raise RemoteError(
                        f"JD Edwards expired the paged result of {table} {restarts} times in a row "
                        f"({EXPIRED_RESULT_SET}). Lower jde.max_page_size or ask the admin to raise the result-set "
                        f"timeout; the next run reads this window again.", system=SYSTEM, retryable=True) from None
                log.info("JD Edwards result set of %s expired; reading the window again", table)

    def _browse_once(self, table: str, columns: list[str], conditions: list[Condition],
                     order_by: list[str] | None, page_size: int | None, first_page_only: bool) -> list[dict[str, Any]]:
        body: dict[str, Any] = {
            "targetName": table, "targetType": "table", "dataServiceType": "BROWSE",
            "returnControlIDs": "|".join(f"{table}.{c}" for c in columns),
            # Never rely on the 100-row default: it truncates silently (pitfall 4).
            "maxPageSize": str(page_size or self.cfg.max_page_size),
            "outputType": "GRID_DATA",
            "query": {"matchType": "MATCH_ALL", "autoFind": True,
                      "condition": [c.to_json() for c in conditions]},
        }
        if self.cfg.auth == "token" and not first_page_only:
            body["enableNextPageProcessing"] = True  # next-page processing needs a token session (pitfall 7)
        if order_by:
            body["aggregation"] = {"orderBy": [{"column": f"{table}.{c}", "direction": "ASC"} for c in order_by]}
        rows: list[dict[str, Any]] = []
        resp = self._data_call("POST", "/jderest/v2/dataservice", body)
        for _ in range(MAX_PAGES):
            page, more, next_href = self._page(table, resp)
            rows += page
            if not more or first_page_only:
                return rows
            if not next_href:
                # Without a next link (stateless Basic auth cannot page) the rest would be lost silently:
                # fail the window instead, so its watermark does not move past unread rows.
                raise RemoteError(f"JD Edwards has more than {len(rows)} changed rows in {table} but sent no next-page "
                                  f"link (next-page processing needs auth = \"token\"). Raise jde.max_page_size "
                                  f"(at most the DB fetch limit, 2000 by default) or use token auth.",
                                  system=SYSTEM, retryable=True)
            # The next link is called unchanged (reference 3.5), with the same session headers.
            resp = self._data_call("POST", next_href, None)
        raise RemoteError(f"JD Edwards kept sending next pages for {table}; stopped after {MAX_PAGES}.",
                          system=SYSTEM)

    def _data_call(self, method: str, path: str, body: Any) -> requests.Response:
        try:
            return self.call(method, path, json_body=body, idempotent=True)
        except RemoteError as exc:
            if exc.status == 500 and EXPIRED_RESULT_SET in exc.raw:
                raise ResultSetExpired(exc.message, system=SYSTEM, status=500, raw=exc.raw) from None
            raise

    def _page(self, table: str, resp: requests.Response) -> tuple[list[dict[str, Any]], bool, str | None]:
        try:
            data = resp.json()
        except ValueError:
            raise RemoteError(f"JD Edwards answered the data request for {table} with something that is not JSON: "
                              f"{short_body(resp.text)}", system=SYSTEM, raw=resp.text) from None
        form = data.get(f"fs_DATABROWSE_{table}")
        errors = _errors_in({"sysErrors": data.get("sysErrors") or [], "form": form})
        if form is None or errors:
            raise RemoteError(f"JD Edwards could not browse {table}: {'; '.join(errors) or 'no fs_DATABROWSE_ form'}"
                              f". Check the table and column names in [jde] and the user's data access.",
                              system=SYSTEM, raw=resp.text)
        grid = ((form.get("data") or {}).get("gridData")) or {}
        prefix = f"{table}_"
        rows = []
        for raw in grid.get("rowset") or []:
            # Row keys use an underscore (F4801_DOCO); strings are space-padded (pitfalls 8, 9).
            rows.append({(k[len(prefix):] if k.startswith(prefix) else k): (v.strip() if isinstance(v, str) else v)
                         for k, v in raw.items()})
        more = bool((grid.get("summary") or {}).get("moreRecords"))
        next_href = next((str(link.get("href")) for link in data.get("links") or []
                          if isinstance(link, dict) and link.get("rel") == "next" and link.get("href")), None)
        return rows, more, next_href

    # -- orchestrations --------------------------------------------------------------------------
    def orchestrate(self, name: str, inputs: dict[str, str], input_format: str = "generic") -> dict[str, Any]:
        """Call an orchestration; raise RemoteError unless it reports success."""
        body: Any = inputs if input_format == "generic" else \
            {"inputs": [{"name": k, "value": v} for k, v in inputs.items()]}
        resp = self.call("POST", f"/jderest/v3/orchestrator/{quote(name, safe='')}", json_body=body,
                         idempotent=False)
        try:
            data = resp.json()
        except ValueError:
            raise RemoteError(f"Orchestration {name} answered with something that is not JSON: "
                              f"{short_body(resp.text)}", system=SYSTEM, raw=resp.text) from None
        status = str(data.get("jde__status", "SUCCESS")) if isinstance(data, dict) else "SUCCESS"
        errors = _errors_in(data)
        if status.upper() != "SUCCESS" or errors:
            detail = "; ".join(errors) or str(data.get("jde__simpleMessage") or status)
            raise RemoteError(f"Orchestration {name} reported a failure: {detail}", system=SYSTEM,
                              raw=json.dumps(data)[:20_000])
        return data if isinstance(data, dict) else {}

    def discover(self) -> list[str]:
        resp = self.call("GET", "/jderest/discover")
        data = resp.json()
        items = data.get("orchestrations", data) if isinstance(data, dict) else data
        names = []
        for item in items or []:
            n = item.get("name") if isinstance(item, dict) else item
            if n:
                names.append(str(n))
        return names

    def default_config(self) -> dict[str, Any]:
        # Needs no credentials; without bypassJASTest a 200 also proves AIS reaches JAS.
        return self.http.request("GET", "/jderest/v2/defaultconfig").json()
