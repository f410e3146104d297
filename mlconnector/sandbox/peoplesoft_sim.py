"""Loopback simulator of PeopleSoft Query Access Service REST (ExecuteQuery.v1, QueryPrompts.v1).

Host it with ``SandboxServer(PeopleSoftSim())``. It mimics the behaviours the connector must survive
(reference peoplesoft.md §1-§7): node routing errors (158,505) as HTTP 500, inactive routings as an
HTML page with HTTP 200, permission errors (158,536) as an IBResponse with HTTP 200, silent
``maxrows`` truncation, alias-prefixed columns and datetimes carrying the database base offset.

The vendor master has no change stamp by default, as in PeopleSoft (PS_VENDOR has no
LAST_DTTM_UPDATE, reference §5): vendor rows carry no such column, ``ML_VENDOR_ALL`` returns every
vendor without prompts (prompts sent to it are ignored), and ``ML_VENDOR_CHANGED`` does not exist.
``vendor_stamp=True`` models a customer view that has one: vendor rows are stamped and
``ML_VENDOR_CHANGED`` reads a prompt window like the document queries.

Data is deterministic from ``seed``. Rows are kept in a per-kind index sorted by
(LAST_DTTM_UPDATE, key) so a prompt window is two bisects, and bulk-loaded rows are only
materialised when a query actually returns them, which keeps 100,000-row benchmarks cheap.
"""

from __future__ import annotations

import base64
import bisect
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any
from xml.sax.saxutils import escape

from mlconnector.sandbox.server import Request, Response, json_response, text_response

Key = tuple[Any, ...]
Row = dict[str, Any]

BUSINESS_UNITS = ("US001", "US002")
SETID = "SHARE"
EXEC_OP = "QAS_EXECUTEQRY_REST_GET"
PROMPTS_OP = "QAS_LISTQUERYPROMPTS_REST_GET"
XMLP_NS = "http://xmlns.oracle.com/Enterprise/Tools/schemas/QAS_QUERYRESULTS_XMLP_RESP.VERSION_1"
DEFAULT_COUNTS = {"vendors": 40, "requisitions": 60, "purchase_orders": 120, "vouchers": 80}

KEYS: dict[str, tuple[str, ...]] = {
    "vendors": ("SETID", "VENDOR_ID"),
    "requisitions": ("BUSINESS_UNIT", "REQ_ID"),
    "purchase_orders": ("BUSINESS_UNIT", "PO_ID"),
    "vouchers": ("BUSINESS_UNIT", "VOUCHER_ID"),
    "req_comments": ("BUSINESS_UNIT", "REQ_ID", "COMMENT_ID"),
    "po_comments": ("BUSINESS_UNIT", "PO_ID", "COMMENT_ID"),
    "voucher_comments": ("BUSINESS_UNIT", "VOUCHER_ID", "COMMENT_ID"),
}
COLUMNS: dict[str, tuple[str, ...]] = {
    "vendors": ("SETID", "VENDOR_ID", "NAME1", "ADDRESS1", "CITY", "STATE", "POSTAL", "COUNTRY",
                "PYMNT_TERMS_CD", "VENDOR_STATUS", "LAST_DTTM_UPDATE"),
    "requisitions": ("BUSINESS_UNIT", "REQ_ID", "REQ_STATUS", "REQUESTOR_ID", "REQ_DT", "DESCR254",
                     "VENDOR_SETID", "VENDOR_ID", "AMOUNT", "CURRENCY_CD", "LAST_DTTM_UPDATE"),
    "purchase_orders": ("BUSINESS_UNIT", "PO_ID", "PO_STATUS", "PO_DT", "BUYER_ID", "VENDOR_SETID",
                        "VENDOR_ID", "PO_AMT", "CURRENCY_CD", "DUE_DT", "DESCR254", "LAST_DTTM_UPDATE"),
    "vouchers": ("BUSINESS_UNIT", "VOUCHER_ID", "INVOICE_ID", "INVOICE_DT", "VENDOR_SETID", "VENDOR_ID",
                 "GROSS_AMT", "TXN_CURRENCY_CD", "DUE_DT", "APPR_STATUS", "ENTRY_STATUS", "PO_ID",
                 "LAST_DTTM_UPDATE"),
}
for _parent, _ck in (("requisitions", "req_comments"), ("purchase_orders", "po_comments"),
                     ("vouchers", "voucher_comments")):
    COLUMNS[_ck] = (*KEYS[_ck], "OPRID", "COMMENTS", "LAST_DTTM_UPDATE")
COMMENT_KIND = {"requisitions": "req_comments", "purchase_orders": "po_comments",
                "vouchers": "voucher_comments"}
PARENT_KIND = {v: k for k, v in COMMENT_KIND.items()}
QUERIES = {
    "ML_VENDOR_CHANGED": "vendors", "ML_VENDOR_ALL": "vendors", "ML_REQ_CHANGED": "requisitions",
    "ML_PO_CHANGED": "purchase_orders",
    "ML_VOUCHER_CHANGED": "vouchers", "ML_REQ_COMMENTS": "req_comments", "ML_PO_COMMENTS": "po_comments",
    "ML_VOUCHER_COMMENTS": "voucher_comments",
}
FULL_QUERIES = {"ML_VENDOR_ALL"}  # no prompts: every row, in key order
STAMPLESS = "vendors"  # the kind whose source has no LAST_DTTM_UPDATE unless vendor_stamp is set
ID_WIDTH = {"vendors": 10, "requisitions": 10, "purchase_orders": 10, "vouchers": 8}

_NAMES = ("Acme Industrial Supply", "Northwind Office Products", "Globex Lab Equipment",
          "Initech Software", "Umbrella Medical", "Stark Fasteners", "Wayne Logistics", "Müller & Söhne GmbH",
          "Café Lumière SARL", "Blue Ridge Paper", "Cascade Janitorial", "Summit Safety Gear")
_PLACES = (("Houston", "TX", "77002"), ("Chicago", "IL", "60601"), ("Denver", "CO", "80202"),
           ("Omaha", "NE", "68102"), ("Austin", "TX", "78701"), ("Tulsa", "OK", "74103"))
_STREETS = ("Main St", "Industrial Pkwy", "Commerce Dr", "Oak Ave", "Harbor Blvd")
_ITEMS = ("Laptop docking stations", "Copy paper, 80 cases", "Nitrile gloves (L)", "Café supplies – ø",
          "Forklift maintenance Q3", "Safety glasses – ANSI Z87", "Annual software renewal",
          "Lab reagents “urgent”", "Office chairs × 12", "Pallet wrap and tape", "HVAC filter service")
_PEOPLE = ("JSMITH", "MGARCIA", "LNGUYEN", "PWALSH", "AKOWALSKI", "BUYER1", "BUYER2")
_REMARKS = ("Please expedite, line is down.", "Vendor confirmed ship date.\nTracking to follow.",
            "Price differs from quote – check with buyer.", "Approved per budget review.",
            "Split delivery across two docks:\n- Dock A\n- Dock B", "Café order: reçu attaché.")


def _pick(rng: random.Random, weighted: dict[str, int]) -> str:
    return rng.choices(tuple(weighted), weights=tuple(weighted.values()))[0]


def _sort_key(key: Key) -> tuple[str, ...]:
    # Malformed rows may carry None or numbers in key columns; sort on text so ordering never raises,
    # zero-padding ints so COMMENT_ID 10 sorts after 9.
    return tuple(f"{v:012d}" if isinstance(v, int) else str(v) for v in key)


def _parse_offset(text: str) -> timezone:
    if len(text) != 5 or text[0] not in "+-" or not text[1:].isdigit():
        raise ValueError(f"utc_offset must look like -0600, got {text!r}")
    delta = timedelta(hours=int(text[1:3]), minutes=int(text[3:5]))
    return timezone(-delta if text[0] == "-" else delta)


class _Table:
    """Rows of one kind. ``rows`` values are dicts, or an int ``seq`` for rows not yet materialised."""

    def __init__(self) -> None:
        self.rows: dict[int, Row | int] = {}
        self.ts: dict[int, int] = {}  # row id -> epoch seconds of LAST_DTTM_UPDATE
        self.keys: dict[int, Key] = {}
        self.by_key: dict[Key, int] = {}
        self.index: list[tuple[int, tuple[str, ...], int]] = []  # (epoch, sort key, row id), sorted
        self.next_seq = 1

    def entry(self, rid: int) -> tuple[int, tuple[str, ...], int]:
        return (self.ts[rid], _sort_key(self.keys[rid]), rid)

    def insert(self, rid: int, key: Key, epoch: int, row: Row | int) -> None:
        self.rows[rid], self.ts[rid], self.keys[rid] = row, epoch, key
        self.by_key[key] = rid
        bisect.insort(self.index, self.entry(rid))

    def unindex(self, rid: int) -> None:
        pos = bisect.bisect_left(self.index, self.entry(rid))
        del self.index[pos]

    def window(self, lo: int, hi: int) -> list[int]:
        start = bisect.bisect_left(self.index, (lo,))
        end = bisect.bisect_left(self.index, (hi,))
        return [e[2] for e in self.index[start:end]]


class PeopleSoftSim:
    """Callable app for SandboxServer simulating the QAS REST services of one PeopleSoft database."""

    def __init__(self, node: str = "PSFT_EP", users: dict[str, str] | None = None,
                 bearer_tokens: set[str] | None = None, utc_offset: str = "-0600", seed: int = 7,
                 counts: dict[str, int] | None = None, now: Callable[[], datetime] | None = None,
                 vendor_stamp: bool = False) -> None:
        self.node = node
        self.vendor_stamp = vendor_stamp  # see the module docstring; may be switched at any time
        self.users = dict(users) if users is not None else {"ML_CONNECTOR": "sandbox-ps-password"}
        self.bearer_tokens = set(bearer_tokens or ())
        self.utc_offset = utc_offset
        self.tz = _parse_offset(utc_offset)
        self.seed = seed
        self.now = now or (lambda: datetime.now(UTC))
        self.calls: Counter[str] = Counter()
        self.inactive: set[str] = set()
        self.denied: set[tuple[str, str]] = set()
        self._lock = threading.RLock()
        self._tables = {kind: _Table() for kind in KEYS}
        self._next_rid = 1
        self._next_comment: dict[tuple[str, Key], int] = {}
        self._base = {**DEFAULT_COUNTS, **(counts or {})}
        self._seed_data()

    # -- deterministic data ------------------------------------------------------------------------
    def _seed_data(self) -> None:
        rng = random.Random(self.seed)
        end = int(self.now().timestamp())
        start = end - 60 * 86400
        for kind in ("vendors", "requisitions", "purchase_orders", "vouchers"):
            for _ in range(self._base[kind]):
                self._add_lazy(kind, rng.randrange(start, end))
        for parent, ckind in COMMENT_KIND.items():
            table = self._tables[parent]
            for rid in list(table.rows):
                if rng.random() < 1 / 3:
                    epoch = table.ts[rid]
                    for _ in range(rng.choice((1, 2))):  # later comments get later stamps, as in real life
                        epoch = min(end - 1, epoch + rng.randrange(60, 3 * 86400))
                        self._add_lazy(ckind, epoch, parent_key=table.keys[rid])

    def _new_rid(self) -> int:
        self._next_rid += 1
        return self._next_rid

    def _key_for(self, kind: str, seq: int, parent_key: Key | None = None) -> Key:
        if kind == "vendors":
            return (SETID, f"{seq:010d}")
        if kind == "vouchers":
            po_seq = self._voucher_po_seq(seq)
            bu = BUSINESS_UNITS[po_seq % 2] if po_seq else BUSINESS_UNITS[seq % 2]
            return (bu, f"{seq:08d}")
        if kind in PARENT_KIND:
            assert parent_key is not None
            slot = (kind, parent_key)
            self._next_comment[slot] = cid = self._next_comment.get(slot, 0) + 1
            return (*parent_key, cid)
        return (BUSINESS_UNITS[seq % 2], f"{seq:0{ID_WIDTH[kind]}d}")

    def _voucher_po_seq(self, seq: int) -> int:
        # Cheap and deterministic so the voucher key (whose BU follows its PO) is known without
        # materialising the row; every third voucher is non-PO.
        n_po = self._base["purchase_orders"]
        return 0 if seq % 3 == 0 or n_po == 0 else (seq * 7919) % n_po + 1

    def _vendor_for(self, seq: int) -> str:
        return f"{(seq * 31) % max(1, self._base['vendors']) + 1:010d}" if self._base["vendors"] else ""

    def _add_lazy(self, kind: str, epoch: int, parent_key: Key | None = None) -> None:
        table = self._tables[kind]
        seq = table.next_seq
        table.next_seq += 1
        table.insert(self._new_rid(), self._key_for(kind, seq, parent_key), epoch, seq)

    def _materialize(self, kind: str, rid: int) -> Row:
        table = self._tables[kind]
        stored = table.rows[rid]
        if isinstance(stored, dict):
            return stored
        row = self._generate(kind, stored, table.keys[rid], table.ts[rid])
        table.rows[rid] = row
        return row

    def _generate(self, kind: str, seq: int, key: Key, epoch: int) -> Row:
        rng = random.Random(f"{self.seed}/{kind}/{seq}")
        day = datetime.fromtimestamp(epoch, self.tz).date()
        row: Row = dict(zip(KEYS[kind], key, strict=True))
        amount = round(rng.uniform(25, 48000), 2)
        cur = _pick(rng, {"USD": 8, "CAD": 1, "EUR": 1})
        if kind == "vendors":
            city, state, postal = rng.choice(_PLACES)
            row.update(NAME1=rng.choice(_NAMES), ADDRESS1=f"{rng.randint(1, 9999)} {rng.choice(_STREETS)}",
                       CITY=city, STATE=state, POSTAL=postal, COUNTRY="USA",
                       PYMNT_TERMS_CD=rng.choice(("N30", "N45", "N60", "2/10N30")),
                       VENDOR_STATUS=_pick(rng, {"A": 8, "I": 1, "E": 1}))
        elif kind == "requisitions":
            vendor = self._vendor_for(seq) if rng.random() < 0.7 else ""
            row.update(REQ_STATUS=_pick(rng, {"P": 3, "A": 4, "D": 1, "C": 1, "X": 1}),
                       REQUESTOR_ID=rng.choice(_PEOPLE), REQ_DT=str(day - timedelta(days=rng.randint(0, 5))),
                       DESCR254=rng.choice(_ITEMS), VENDOR_SETID=SETID if vendor else "", VENDOR_ID=vendor,
                       AMOUNT=amount, CURRENCY_CD=cur)
        elif kind == "purchase_orders":
            po_dt = day - timedelta(days=rng.randint(0, 10))
            row.update(PO_STATUS=_pick(rng, {"I": 2, "PA": 2, "A": 3, "D": 3, "C": 1, "X": 1, "DA": 1}),
                       PO_DT=str(po_dt), BUYER_ID=rng.choice(_PEOPLE[-2:]), VENDOR_SETID=SETID,
                       VENDOR_ID=self._vendor_for(seq), PO_AMT=amount, CURRENCY_CD=cur,
                       DUE_DT=str(po_dt + timedelta(days=rng.randint(14, 60))), DESCR254=rng.choice(_ITEMS))
        elif kind == "vouchers":
            po_seq = self._voucher_po_seq(seq)
            inv_dt = day - timedelta(days=rng.randint(0, 20))
            row.update(INVOICE_ID=f"INV-{rng.randint(10000, 999999)}", INVOICE_DT=str(inv_dt),
                       VENDOR_SETID=SETID, VENDOR_ID=self._vendor_for(po_seq or seq), GROSS_AMT=amount,
                       TXN_CURRENCY_CD=cur, DUE_DT=str(inv_dt + timedelta(days=30)),
                       APPR_STATUS=_pick(rng, {"P": 3, "A": 6, "D": 1}),
                       ENTRY_STATUS=_pick(rng, {"P": 6, "R": 2, "O": 1, "X": 1}),
                       PO_ID=f"{po_seq:010d}" if po_seq else "")
        else:
            row.update(OPRID=rng.choice(_PEOPLE), COMMENTS=rng.choice(_REMARKS))
        return row

    # -- formatting ------------------------------------------------------------------------------
    def _fmt_ts(self, epoch: int) -> str:
        return datetime.fromtimestamp(epoch, self.tz).strftime("%Y-%m-%dT%H:%M:%S%z")

    def stamped(self, kind: str) -> bool:
        """Whether rows of ``kind`` carry LAST_DTTM_UPDATE (all but unstamped vendors do)."""
        return kind != STAMPLESS or self.vendor_stamp

    def columns(self, kind: str) -> tuple[str, ...]:
        """The columns of ``kind`` as its source record has them (no stamp on an unstamped vendor master)."""
        return COLUMNS[kind] if self.stamped(kind) else tuple(c for c in COLUMNS[kind] if c != "LAST_DTTM_UPDATE")

    def _output(self, kind: str, rid: int) -> Row:
        row = dict(self._materialize(kind, rid))
        if not self.stamped(kind):
            row.pop("LAST_DTTM_UPDATE", None)
            return row
        # A corrupt() override of LAST_DTTM_UPDATE is kept in the row; otherwise derive it from the index.
        row.setdefault("LAST_DTTM_UPDATE", self._fmt_ts(self._tables[kind].ts[rid]))
        return row

    def _norm(self, value: Any) -> Any:
        if isinstance(value, datetime):
            return self._fmt_ts(self._epoch_of(value))
        return value.isoformat() if isinstance(value, date) else value

    def _epoch_of(self, value: Any) -> int:
        if isinstance(value, datetime):
            return int((value if value.tzinfo else value.replace(tzinfo=self.tz)).timestamp())
        if isinstance(value, str):
            try:
                return int(datetime.strptime(value, "%Y-%m-%dT%H:%M:%S%z").timestamp())
            except ValueError:
                pass
        return int(self.now().timestamp())

    # -- test controls -----------------------------------------------------------------------------
    def _kind(self, kind: str) -> str:
        if kind not in self._tables:
            raise KeyError(f"unknown kind {kind!r}; use one of {', '.join(self._tables)}")
        return kind

    def _rid(self, kind: str, key: Iterable[Any]) -> int:
        key = tuple(key)
        try:
            return self._tables[self._kind(kind)].by_key[key]
        except KeyError:
            raise KeyError(f"no {kind} row with key {key!r}") from None

    def rows(self, kind: str) -> list[Row]:
        """Copies of all rows of ``kind`` (unprefixed columns) in query order."""
        with self._lock:
            table = self._tables[self._kind(kind)]
            return [self._output(kind, e[2]) for e in table.index]

    def get(self, kind: str, key: Iterable[Any]) -> Row:
        with self._lock:
            return self._output(kind, self._rid(kind, key))

    def keys(self, kind: str) -> list[Key]:
        with self._lock:
            return list(self._tables[self._kind(kind)].by_key)

    def touch(self, kind: str, key: Iterable[Any], **changes: Any) -> Row:
        """Apply ``changes`` and stamp LAST_DTTM_UPDATE with now(), as an online update would."""
        with self._lock:
            rid = self._rid(kind, key)
            table = self._tables[kind]
            row = self._materialize(kind, rid)
            table.unindex(rid)
            row.pop("LAST_DTTM_UPDATE", None)
            row.update({c: self._norm(v) for c, v in changes.items() if c != "LAST_DTTM_UPDATE"})
            new_key = tuple(row.get(c) for c in KEYS[kind])
            if new_key != table.keys[rid]:
                del table.by_key[table.keys[rid]]
                table.keys[rid] = new_key
                table.by_key[new_key] = rid
            table.ts[rid] = int(self.now().timestamp())
            bisect.insort(table.index, table.entry(rid))
            return self._output(kind, rid)

    def add(self, kind: str, row: Row) -> Row:
        """Add a row (unprefixed columns); missing columns are blank, LAST_DTTM_UPDATE defaults to now()."""
        with self._lock:
            kind = self._kind(kind)
            full: Row = {c: "" for c in COLUMNS[kind]}
            full.update({c: self._norm(v) for c, v in row.items()})
            key = tuple(full[c] for c in KEYS[kind])
            if key in self._tables[kind].by_key:
                raise ValueError(f"duplicate {kind} key {key!r}")
            epoch = self._epoch_of(full.pop("LAST_DTTM_UPDATE") or None)
            self._tables[kind].insert(self._new_rid(), key, epoch, full)
            return self._output(kind, self._tables[kind].by_key[key])

    def delete(self, kind: str, key: Iterable[Any]) -> None:
        """Delete a row as an online user would (a cancelled document purged): no query returns it any more."""
        with self._lock:
            kind = self._kind(kind)
            table = self._tables[kind]
            rid = self._rid(kind, key)
            table.unindex(rid)
            del table.by_key[table.keys[rid]]
            del table.rows[rid], table.ts[rid], table.keys[rid]

    def add_raw(self, kind: str, raw_row: Row) -> None:
        """Store ``raw_row`` verbatim (duplicate or blank keys allowed) to exercise malformed data."""
        with self._lock:
            kind = self._kind(kind)
            row = dict(raw_row)
            key = tuple(row.get(c) for c in KEYS[kind])
            epoch = self._epoch_of(row.get("LAST_DTTM_UPDATE"))
            self._tables[kind].insert(self._new_rid(), key, epoch, row)

    def add_comment(self, kind: str, parent_key: Iterable[Any], text: str, oprid: str = "BUYER1") -> Row:
        """Append a comment to a requisition / purchase order / voucher; returns the new row."""
        with self._lock:
            parent_key = tuple(parent_key)
            self._rid(kind, parent_key)
            ckind = COMMENT_KIND[kind]
            cid_key = self._key_for(ckind, 0, parent_key)
            while cid_key in self._tables[ckind].by_key:  # add()/add_raw() may have used the next id
                cid_key = self._key_for(ckind, 0, parent_key)
            row: Row = {**dict(zip(KEYS[ckind], cid_key, strict=True)), "OPRID": oprid, "COMMENTS": text}
            self._tables[ckind].insert(self._new_rid(), cid_key, int(self.now().timestamp()), row)
            return self._output(ckind, self._tables[ckind].by_key[cid_key])

    def corrupt(self, kind: str, key: Iterable[Any], column: str, value: Any) -> None:
        """Set a raw column value without touching the timestamp or the row's place in time order."""
        with self._lock:
            rid = self._rid(kind, key)
            table = self._tables[kind]
            row = self._materialize(kind, rid)
            row[column] = value
            if column in KEYS[kind]:
                table.unindex(rid)
                table.by_key.pop(table.keys[rid], None)
                table.keys[rid] = tuple(row.get(c) for c in KEYS[kind])
                table.by_key[table.keys[rid]] = rid
                bisect.insort(table.index, table.entry(rid))

    def bulk_load(self, kind: str, n: int, start: datetime, end: datetime) -> None:
        """Add ``n`` generated rows with timestamps spread uniformly over [start, end)."""
        with self._lock:
            kind = self._kind(kind)
            table = self._tables[kind]
            lo, hi = int(start.timestamp()), int(end.timestamp())
            parents = list(self._tables[PARENT_KIND[kind]].by_key) if kind in PARENT_KIND else []
            if kind in PARENT_KIND and not parents:
                raise ValueError(f"no parents to attach {kind} to")
            rng = random.Random(f"{self.seed}/bulk/{kind}/{table.next_seq}")
            for i in range(n):
                rid, seq = self._new_rid(), table.next_seq
                table.next_seq += 1
                key = self._key_for(kind, seq, rng.choice(parents) if parents else None)
                table.rows[rid], table.ts[rid], table.keys[rid] = seq, lo + (hi - lo) * i // max(n, 1), key
                table.by_key[key] = rid
                table.index.append(table.entry(rid))
            # Two sorted runs: Timsort merges them in linear time.
            table.index.sort()

    def deactivate(self, name: str) -> None:
        """Make the routing inactive for a query name (or a whole service operation name)."""
        with self._lock:
            self.inactive.add(name)

    def activate(self, name: str) -> None:
        with self._lock:
            self.inactive.discard(name)

    def deny(self, oprid: str, name: str) -> None:
        """Withdraw ``oprid``'s permission for a query name (or a whole service operation name)."""
        with self._lock:
            self.denied.add((oprid, name))

    def allow(self, oprid: str, name: str) -> None:
        with self._lock:
            self.denied.discard((oprid, name))

    # -- HTTP ------------------------------------------------------------------------------------
    def __call__(self, request: Request) -> Response:
        parts = [p for p in request.path.split("/") if p]
        if len(parts) < 4 or parts[:2] != ["PSIGW", "RESTListeningConnector"]:
            return text_response(404, "Not Found")
        if parts[2] != self.node:
            return _ib_error(500, 505, "Integration Gateway: no handler for the inbound request message. "
                                       "(158,505)")
        oprid = self._authenticate(request)
        if oprid is None:
            return _ib_error(401, 10,
                             "Invalid user ID or password for security verification. (158,10)",
                             headers={"WWW-Authenticate": 'Basic realm="PSIGW"'})
        alias, rest = parts[3], parts[4:]
        if alias == "ExecuteQuery.v1" and len(rest) == 4:
            op = EXEC_OP
        elif alias == "QueryPrompts.v1" and len(rest) == 2:
            op = PROMPTS_OP
        else:
            return _no_routing()
        owner, qname = rest[0], rest[1]
        with self._lock:
            self.calls[qname] += 1
            if self.inactive & {qname, op}:
                return _no_routing()
            if self.denied & {(oprid, qname), (oprid, op)}:
                return _ib_error(200, 536, f"User {oprid} not authorized to invoke Service Operation {op}. "
                                           "(158,536)")
            kind = QUERIES.get(qname) if owner.upper() == "PUBLIC" else None
            if kind is not None and qname not in FULL_QUERIES and not self.stamped(kind):
                kind = None  # a windowed query needs a stamp to prompt on: the customer could not build it
            if kind is None:
                return _ib_error(200, 62, f"Query {qname} does not exist or the user does not have access. "
                                          "(262,62)")
            if op == PROMPTS_OP:
                return _prompts_response(qname, request)
            return self._execute(request, kind, qname, rest[2], rest[3])

    def _authenticate(self, request: Request) -> str | None:
        auth = request.header("Authorization") or ""
        scheme, _, cred = auth.partition(" ")
        if scheme.lower() == "bearer" and cred.strip() in self.bearer_tokens:
            # The admin's OAuth2 user-validation mapping would pick the OPRID; the sandbox maps every
            # accepted token to the first configured user.
            return next(iter(self.users), "ML_CONNECTOR")
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(cred.strip(), validate=True).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                return None
            user, _, password = decoded.partition(":")
            if user in self.users and self.users[user] == password:
                return user
        return None

    def _execute(self, request: Request, kind: str, qname: str, out_type: str, out_format: str) -> Response:
        if out_type.upper() not in ("JSON", "XMLP") or out_format.upper() != "NONFILE":
            return _ib_error(500, 30, f"Output type {out_type}/{out_format} is not supported by the sandbox. "
                                      "(262,30)")
        maxrows_text = request.arg("maxrows")
        if maxrows_text is None or not maxrows_text.strip().isdigit():
            return _ib_error(500, 31, "Required parameter maxrows is missing or invalid. (262,31)")
        maxrows = int(maxrows_text)
        table = self._tables[kind]
        if qname in FULL_QUERIES:
            rids = [table.by_key[k] for k in sorted(table.by_key, key=_sort_key)]
        else:
            window = self._prompt_window(request)
            if isinstance(window, str):
                return _ib_error(500, 32, f"{window} (262,32)")
            rids = table.window(*window)
        if maxrows:  # 0 is read as "no limit"; the real meaning is unverified (reference §3.1)
            rids = rids[:maxrows]
        rows = [self._output(kind, rid) for rid in rids]
        if (request.arg("json_resp") or "").lower() == "true":
            out = [{"attr:rownumber": i, **{f"A.{c}": v for c, v in r.items()}}
                   for i, r in enumerate(rows, 1)]
            return json_response(200, {"status": "success", "data": {"query": {
                "numrows": len(out), "queryname": qname, "rows": out}}})
        return text_response(200, _xmlp(qname, rows), "text/xml; charset=UTF-8")

    def _prompt_window(self, request: Request) -> tuple[int, int] | str:
        names = (request.arg("prompt_uniquepromptname") or "").split(",")
        values = (request.arg("prompt_fieldvalue") or "").split(",")
        if len(names) != len(values) or sorted(names) != ["BIND1", "BIND2"]:
            return "Prompt values BIND1 and BIND2 are required."
        bounds: dict[str, int] = {}
        for name, value in zip(names, values, strict=True):
            for fmt in ("%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"):
                try:
                    local = datetime.strptime(value.strip(), fmt)
                except ValueError:
                    continue
                bounds[name] = int(local.replace(tzinfo=self.tz).timestamp())
                break
            else:
                return f"Invalid value {value!r} for prompt {name}; expected YYYY-MM-DD."
        return bounds["BIND1"], bounds["BIND2"]


def _ib_error(status: int, msg_id: int, message: str, headers: dict[str, str] | None = None) -> Response:
    body = ('<IBResponse type="error"><DefaultTitle>Integration Broker Response</DefaultTitle>'
            f"<StatusCode>20</StatusCode><MessageID>{msg_id}</MessageID>"
            f"<DefaultMessage>{escape(message)}</DefaultMessage></IBResponse>")
    return text_response(status, body, "text/xml; charset=UTF-8", headers)


def _no_routing() -> Response:
    return text_response(200, "<HTML><HEAD><TITLE>RESTListeningConnector</TITLE></HEAD><BODY>"
                              "<b>RESTListeningConnector</b><br/>Unable to find a Routing corresponding "
                              "to the incoming request message.</BODY></HTML>", "text/html; charset=UTF-8")


def _prompts_response(qname: str, request: Request) -> Response:
    prompts = [] if qname in FULL_QUERIES else [
        {"UniquePromptName": name, "FieldName": "LAST_DTTM_UPDATE", "FieldType": "date", "FieldLength": 10,
         "HeadingText": heading, "EditType": "NONE", "PromptTable": ""}
        for name, heading in (("BIND1", "Updated From"), ("BIND2", "Updated Before"))]
    if (request.arg("json_resp") or "").lower() == "true":
        return json_response(200, {"status": "success", "data": {"queryprompts": {
            "queryname": qname, "prompts": prompts}}})
    items = "".join("<prompt>" + "".join(f"<{k}>{escape(str(v))}</{k}>" for k, v in p.items()) + "</prompt>"
                    for p in prompts)
    return text_response(200, f'<queryprompts queryname="{qname}">{items}</queryprompts>',
                         "text/xml; charset=UTF-8")


def _xml_value(name: str, value: Any) -> str:
    if value is None or value == "":
        return f"<{name}/>"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"<{name}>{value}</{name}>"
    text = str(value).replace("]]>", "]]]]><![CDATA[>")  # a CDATA section cannot contain its terminator
    return f"<{name}><![CDATA[{text}]]></{name}>"


def _xmlp(qname: str, rows: list[Row]) -> str:
    body = "".join(f'<row rownumber="{i}">' + "".join(_xml_value(f"A.{c}", v) for c, v in r.items())
                   + "</row>" for i, r in enumerate(rows, 1))
    return (f'<?xml version="1.0"?><query numrows="{len(rows)}" queryname="{qname}" xmlns="{XMLP_NS}">'
            f"{body}</query>")
