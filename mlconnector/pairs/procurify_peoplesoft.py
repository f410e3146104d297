"""`sync procurify-peoplesoft`: approved Procurify order items -> PeopleSoft purchase orders (one pass).

Per pass: read the order items Procurify changed since the watermark (less a day: its filters are
day-granular), merge them with what is known of their requisition (the link's items, a queued copy), group
them into one PO per requisition and vendor, map each group (pure functions below: crosswalks for vendor,
account x department and unit; bad input refuses its own group), and write through the PO sink
(peoplesoft/po_sink.py: pending mark, lookup by PO_REF and vendor before every create, updates where allowed).

A group whose items are unchanged (same id and modified time as on its link) costs no PeopleSoft call, so a
pass with nothing new makes one list call on Procurify and none on PeopleSoft.

Vendors, both ways. An approved item whose Procurify vendor has no PeopleSoft counterpart gets one first:
the vendor is created through the supplier CI (peoplesoft/vendor_sink.py: looked up by its handle before
every create, pending mark, a lost answer never a second supplier) and the pair is learned into the
crosswalk, so the PO posts in the same pass. Back, the linked suppliers are read in full when
``vendor_read_every_minutes`` comes round (PS_VENDOR has no change stamp) and a change of name, status or
address is PATCHed to the Procurify vendor; what the connector wrote itself reads back equal to the link's
hash and is not sent (sync/echo.py).

GL accounts, where configured (``gl_accounts`` / ``gl_account_prefixes``): the GL account query is read in full
when ``gl_read_every_minutes`` comes round (GL_ACCOUNT_TBL has no change stamp) and each account in scope
becomes a Procurify account code: looked up by ``code`` before every create, a pending mark on disk before the
POST (a lost answer is adopted by the next pass's lookup, never a second code), a changed description or an
inactivation PUT to the linked code. Nothing flows back.

Vouchers close Procurify POs, where configured (``close_pos``): the voucher query is read when
``voucher_read_every_minutes`` comes round; a PO the connector created whose vouchers meet ``close_when`` has
its Procurify PO (the ``purchase_order`` of its requisition's items) read and, unless already closed (state 3),
closed once; a closed PO is remembered and never closed again.

PO writes run with up to ``ci_workers`` CI calls in flight (SharedCI): state work stays serial under one
lock, so each pending mark is on disk before its Create leaves, as in a one-call-at-a-time pass.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from mlconnector.audit import Audit, Redactor
from mlconnector.config import Config
from mlconnector.credentials import SecretStore
from mlconnector.errors import ConfigError, RecordError
from mlconnector.pairs.procurify_peoplesoft_config import SECTION, PairSettings
from mlconnector.state import State
from mlconnector.sync.echo import is_echo
from mlconnector.sync.engine import FATAL as FATAL_ERRORS
from mlconnector.sync.engine import PassContext, PassResult, Progress, no_progress, run_pass
from mlconnector.sync.keys import encode_key
from mlconnector.sync.reference import FullRead, digest
from mlconnector.sync.window import WindowRule
from mlconnector.sync.xref import Crosswalk

PAIR = "procurify-peoplesoft"
KIND = "requisitions"
VENDORS = "vendors"  # links Procurify vendor id -> PeopleSoft supplier; also the back-flow's changes
VENDOR_READ = "ps_vendors"  # watermark name of the PeopleSoft vendor master's full reads
ACCOUNT_CODES = "account_codes"  # links PeopleSoft ACCOUNT -> Procurify account code id
GL_READ = "ps_gl_accounts"  # watermark name of the PeopleSoft GL account table's full reads
CLOSES = "po_closes"  # Procurify PO number -> closed by the connector (or found closed)
VOUCHER_READ = "ps_vouchers"  # watermark name of the voucher query's full reads
ITEMS_INDEX = "procurify_items"  # state.extra: Procurify item id -> the group key it was last posted under
DESCR_MAX = 254


def settings(cfg: Config) -> PairSettings:
    s = cfg.sections.get(SECTION)
    if s is None:
        raise ConfigError(f"{cfg.path} has no [{SECTION}] section, which `sync {PAIR}` needs. Copy it from "
                          f"examples/procurify-peoplesoft.toml and set business_unit, buyer_id and the crosswalks.")
    return s


def configured(cfg: Config) -> bool:
    return "procurify" in cfg.sections and SECTION in cfg.sections and cfg.ps is not None


# -- mapping (pure) -------------------------------------------------------------------------------
def pick(item: dict[str, Any], path: str) -> Any:
    """The value at a dotted path of an order item (``pref_vendor.id``); None when any step is missing. A plain
    id where an object was expected (``pref_vendor`` = 301) answers for its ``id``."""
    cur: Any = item
    for step in path.split("."):
        if isinstance(cur, dict):
            cur = cur.get(step)
        elif step == "id" and isinstance(cur, int | str):
            return cur
        else:
            return None
    return cur


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _decimal(item: dict[str, Any], path: str, what: str, title: str) -> Decimal:
    raw = pick(item, path)
    try:
        # Procurify sends decimals as strings with up to 8 places: never through float.
        d = Decimal(str(raw).strip()) if raw is not None and not isinstance(raw, float) else None
    except InvalidOperation:
        d = None
    if d is None or not d.is_finite():
        raise RecordError(f"{title}: order item {pick(item, 'id')} has no valid {what} ({raw!r} at {path}); the "
                          f"requisition is held until Procurify sends one.")
    return d


def group_key(s: PairSettings, item: dict[str, Any]) -> tuple[str, ...]:
    req = _text(pick(item, s.item.requisition))
    if s.group_by == "requisition":
        return (req,)
    return (req, _text(pick(item, s.item.vendor)))


def item_stamp(s: PairSettings, item: dict[str, Any]) -> str:
    return _text(pick(item, s.item.modified))


def newest(s: PairSettings, *sources: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Items by id, the most recently modified copy of each (dedupe by id + modified time)."""
    out: dict[str, dict[str, Any]] = {}
    for items in sources:
        for it in items:
            iid = _text(pick(it, s.item.id))
            if iid and (iid not in out or item_stamp(s, it) >= item_stamp(s, out[iid])):
                out[iid] = it
    return out


def group_handle(s: PairSettings, key: tuple[str, ...]) -> str:
    """The PO reference of a group: prefix + requisition, and with group_by = "requisition_vendor" the Procurify
    vendor too (``PRC-5001-301``), so two vendors crosswalked to one supplier never meet on one PO."""
    return f"{s.handle_prefix}{key[0]}" + (f"-{key[1]}" if len(key) > 1 else "")


def map_group(s: PairSettings, xref: Crosswalk, key: tuple[str, ...], items: list[dict[str, Any]],
              line_numbers: dict[str, int], today: date, handle: str | None = None) -> Any:
    """One group of order items -> a POWrite (or None when none of them is approved). Raises RecordError for
    bad input (the whole group is held: never posted in part) and MissingReference for an unmapped value.
    ``handle``: the PO reference the group's link already carries (kept: a PO is not renamed)."""
    from mlconnector.peoplesoft.po_sink import POWrite

    req = key[0]
    title = f"Procurify requisition {req}" + (f" (vendor {key[1]})" if len(key) > 1 else "")
    approved = [it for it in items if pick(it, s.item.status) in s.approved_statuses]
    if not approved:
        return None
    approved.sort(key=lambda it: (_num(pick(it, s.item.line)), _text(pick(it, s.item.id))))
    handle = handle or group_handle(s, key)
    # Versions before the vendor joined the reference used prefix + requisition: looked up too, never created.
    legacy = f"{s.handle_prefix}{req}" if len(key) > 1 and handle != f"{s.handle_prefix}{req}" else ""
    if not req or len(handle) > s.handle_max:
        raise RecordError(f"{title}: the PO reference {handle!r} does not fit {s.po.handle} ({s.handle_max} "
                          f"characters); it is not cut. Shorten handle_prefix in [{SECTION}].")
    vendors = {_text(pick(it, s.item.vendor)) for it in approved}
    if len(vendors) != 1 or "" in vendors:
        raise RecordError(f"{title}: its approved items name {len(vendors)} vendors ({', '.join(sorted(vendors))}); "
                          f"with group_by = \"requisition\" a PO has one vendor. Set group_by = "
                          f"\"requisition_vendor\" in [{SECTION}].")
    currencies = {_text(pick(it, s.item.currency)).upper() for it in approved}
    if len(currencies) != 1:
        raise RecordError(f"{title}: its items are in several currencies ({', '.join(sorted(currencies))}); a PO has "
                          f"one. Nothing was posted.")
    currency = currencies.pop()
    if currency not in s.currencies:
        raise RecordError(f"{title}: currency {currency!r} is not one PeopleSoft knows for business unit "
                          f"{s.business_unit} (currencies in [{SECTION}]: {', '.join(s.currencies)}). It is not "
                          f"replaced; fix the requisition or add the currency.")
    first = approved[0]
    procurify_vendor = vendors.pop()
    external = _text(pick(first, s.item.vendor_external_id))
    known = xref.get("vendor", procurify_vendor)  # configured, or learned when the vendor flow linked it
    if known is not None:
        vendor_id = known
    elif s.vendor_key == "external_id" and external and not s.create_vendors:
        vendor_id = external
    else:
        name = _text(pick(first, s.item.vendor_name))
        vendor_id = xref.need("vendor", procurify_vendor, f"{title} (vendor {name or procurify_vendor})")
    p = s.po
    places = Decimal(1).scaleb(-s.amount_places)
    numbers = dict(line_numbers)
    next_nbr = max(numbers.values(), default=0) + 1
    lines: list[dict[str, Any]] = []
    for it in approved:
        iid = _text(pick(it, s.item.id))
        qty = _decimal(it, s.item.quantity, "quantity", title)
        price = _decimal(it, s.item.price, "price", title)
        if qty <= 0:
            raise RecordError(f"{title}: order item {iid} has quantity {qty}; a quantity must be greater than zero. "
                              f"The requisition is not posted in part: fix the item in Procurify.")
        if price < 0:
            raise RecordError(f"{title}: order item {iid} has a negative price ({price}). Nothing was posted.")
        descr = _text(pick(it, s.item.description))
        if len(descr) > DESCR_MAX:
            raise RecordError(f"{title}: the name of order item {iid} is {len(descr)} characters, longer than "
                              f"{p.description} ({DESCR_MAX}); it is not cut. Shorten it in Procurify.")
        unit = xref.need("unit", _text(pick(it, s.item.unit)), f"{title} (item {iid})")
        code, dept = _text(pick(it, s.item.account_code)), _text(pick(it, s.item.department))
        account, _, deptid = xref.need("account", encode_key((code, dept)),
                                       f"{title} (item {iid}, account code {code}, department {dept})").partition("/")
        if iid not in numbers:
            numbers[iid] = next_nbr
            next_nbr += 1
        amount = (qty * price).quantize(places, rounding=ROUND_HALF_UP)
        lines.append({p.line_nbr: numbers[iid], p.description: descr, p.unit: unit, p.quantity: qty, p.price: price,
                      p.distributions: [{p.distrib_nbr: 1, p.account: account, p.deptid: deptid,
                                         p.distrib_quantity: qty, p.amount: amount}]})
    header = {p.business_unit: s.business_unit, p.handle: handle, p.vendor_setid: s.vendor_setid,
              p.vendor_id: vendor_id, p.buyer: s.buyer_id, p.currency: currency}
    digest = hashlib.sha256(json.dumps([header, lines], sort_keys=True, default=_canon).encode()).hexdigest()[:20]
    return POWrite(key=encode_key(key), handle=handle, vendor_id=vendor_id, business_unit=s.business_unit,
                   header={**header, p.po_date: today}, lines=lines, hash=digest,
                   row={"group": list(key), "items": items}, title=title, legacy_handle=legacy,
                   extra={"lines": {k: v for k, v in numbers.items()}})


def _num(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _canon(value: Any) -> str:
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return str(value)


# -- bounded CI concurrency -----------------------------------------------------------------------
class SharedCI:
    """The CI client as the PO workers of one pass share it.

    Contract: every piece of state work (links, pending marks, saves, the queue, the audit) runs while the
    worker holds the pass's one lock, so it stays as serial as in a single-threaded pass; a CI call releases
    the lock for its length, so at most ``ci_workers`` calls are in flight at once. A service's WSDL is loaded
    under the lock (once). A thread that does not hold the lock (the main thread) calls straight through."""

    def __init__(self, ci: Any, lock: threading.Lock) -> None:
        self._ci = ci
        self._lock = lock
        self._local = threading.local()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ci, name)

    def hold(self) -> contextlib.AbstractContextManager[None]:
        @contextlib.contextmanager
        def held() -> Iterator[None]:
            with self._lock:
                self._local.held = True
                try:
                    yield
                finally:
                    self._local.held = False
        return held()

    def _call(self, method: str, ci: str, *args: Any) -> Any:
        fn = getattr(self._ci, method)
        if not getattr(self._local, "held", False):
            return fn(ci, *args)
        self._ci.service(ci)  # loaded under the lock: one WSDL fetch, no race on the cache
        self._lock.release()
        try:
            return fn(ci, *args)
        finally:
            self._lock.acquire()

    def find(self, ci: str, keys: Any) -> Any:
        return self._call("find", ci, keys)

    def get(self, ci: str, keys: Any) -> Any:
        return self._call("get", ci, keys)

    def create(self, ci: str, record: Any) -> Any:
        return self._call("create", ci, record)

    def update(self, ci: str, keys: Any, changes: Any) -> Any:
        return self._call("update", ci, keys, changes)

    def exists(self, ci: str, keys: Any) -> Any:
        return self._call("exists", ci, keys)


# -- wiring ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def connect(cfg: Config, secrets: SecretStore, redactor: Redactor, *, refresh_wsdl: bool = False) -> Iterator[Any]:
    """(Procurify client, PeopleSoft CI client), open for one command. Secrets are read first."""
    from mlconnector.peoplesoft.ci import CIClient
    from mlconnector.peoplesoft.connect import peoplesoft_auth
    from mlconnector.procurify.client import SECRET, ProcurifyClient, ProcurifyToken, token_cache_for

    pcfg = cfg.sections["procurify"]
    secret = secrets.get(SECRET)
    redactor.add(secret)
    ps_auth = peoplesoft_auth(cfg, secrets)
    token = ProcurifyToken(pcfg, secret, token_cache_for(pcfg, cfg.instance), redactor=redactor)
    procurify = ProcurifyClient(pcfg, token)
    ci = CIClient(cfg.peoplesoft, ps_auth, refresh=refresh_wsdl)
    try:
        yield procurify, ci
    finally:
        ci.close()
        procurify.close()


def make_pass(cfg: Config, clients: Any, state: State, audit: Audit, *, dry_run: bool = False,
              progress: Progress = no_progress, kinds: list[str] | None = None) -> ProcurifyPeopleSoftPass:
    procurify, ci = clients
    return ProcurifyPeopleSoftPass(cfg, state, procurify, ci, audit, dry_run=dry_run, progress=progress)


def before_replay(steps: ProcurifyPeopleSoftPass, items: list[dict[str, Any]]) -> None:
    """Nothing to refresh: a retried group is merged with the newest items known (its link, the fresh read)."""
    return None


class ProcurifyPeopleSoftPass:
    """The engine's steps for this pair (sync/engine.py PassSteps): one entity, ``requisitions``."""

    def __init__(self, cfg: Config, state: State, procurify: Any, ci: Any, audit: Audit, *, dry_run: bool = False,
                 progress: Progress = no_progress, now: datetime | None = None) -> None:
        from mlconnector.peoplesoft.po_sink import PONames, POWriter

        self.cfg = cfg
        self.s = settings(cfg)
        self.pcfg = cfg.sections["procurify"]
        self.state = state
        self.procurify = procurify
        self.ci = ci
        self.audit = audit
        self.dry_run = dry_run
        self.ctx = PassContext(PAIR, state, audit, dry_run=dry_run, progress=progress,
                               **({"now": now} if now else {}))
        self.window = WindowRule(timedelta(hours=self.pcfg.overlap_hours))
        self.xref = Crosswalk(state, self.s.crosswalk_tables(), PairSettings.CONFIG_KEYS)
        p = self.s.po
        self.names = PONames(ci=self.s.po_ci, business_unit=p.business_unit, po_id=p.po_id, handle=p.handle,
                             vendor_id=p.vendor_id, status=p.status, lines=p.lines, line_nbr=p.line_nbr,
                             distributions=p.distributions, distrib_nbr=p.distrib_nbr,
                             updatable_statuses=tuple(self.s.updatable_statuses), create_only=(p.po_date,))
        self.lock = threading.Lock()
        self.shared = SharedCI(ci, self.lock)
        self.writer = POWriter(self.ctx, self.shared, self.names, grace_seconds=self.s.pending_grace_seconds)
        from mlconnector.peoplesoft.vendor_sink import VendorWriter

        self.vnames = self.s.vendor_fields
        self.vendor_writer = VendorWriter(self.ctx, ci, self.vnames, kind=VENDORS,
                                          grace_seconds=self.s.pending_grace_seconds)
        self._procurify_vendors: dict[str, dict[str, Any]] | None = None
        self._vendor_tried: dict[str, str | None] = {}  # one attempt per vendor per pass (never resent)
        procurify.on_response = self._audit_response

    def _audit_response(self, method: str, path: str, status: int, request_id: str) -> None:
        # Procurify support asks for the x-request-id of a call: keep it with every answer.
        self.audit.write("procurify_response", method=method, path=path, status=status, request_id=request_id)

    # -- the engine's steps ----------------------------------------------------------------------
    def prepare(self) -> None:
        return None

    def resolve_pending(self) -> None:
        if self.state.pending(KIND):
            self.writer.resolve_pending(KIND)

    def entities(self) -> list[str]:
        # The vendor back-flow first: reference data before the documents that show it.
        first = [ACCOUNT_CODES] if self.s.gl_publish else []
        last = [CLOSES] if self.s.close_pos else []
        return first + ([VENDORS, KIND] if self.s.vendor_backflow else [KIND]) + last

    def blocked(self, entity: str) -> str | None:
        return None

    def replay_kinds(self) -> list[str]:
        return [VENDORS, KIND]

    def requests(self) -> dict[str, int]:
        return {"procurify": self.procurify.requests_made, "peoplesoft": self.ci.http.requests_made}

    def run(self, since: datetime | None = None) -> PassResult:
        return run_pass(self, since)

    def sync_entity(self, entity: str, since: datetime | None) -> None:
        if entity == VENDORS:
            self.vendor_changes()
            return
        if entity == ACCOUNT_CODES:
            self.publish_gl_accounts()
            return
        if entity == CLOSES:
            self.close_vouchered_pos()
            return
        start = self.window.start(self.state, KIND, self.pcfg.initial_since, since)
        end = self.ctx.now
        counts = self.ctx.result.kind(KIND)
        read: list[dict[str, Any]] = []
        for page in self.procurify.order_items(start, end):
            read += page
            counts.read += len(page)
            self.ctx.progress("read", kind=KIND, n=len(page))
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for it in newest(self.s, read).values():
            groups.setdefault(group_key(self.s, it), []).append(it)
        # Vendors first, one at a time (two POs of one new vendor must not race to create it).
        for it in sorted(read, key=lambda i: _text(pick(i, self.s.item.vendor))):
            if pick(it, self.s.item.status) in self.s.approved_statuses:
                self.ensure_vendor(_text(pick(it, self.s.item.vendor)), it)
        self.write_groups(sorted(groups.items()))
        if not self.dry_run and self.window.advance(self.state, KIND, end, since):
            self.state.watermarks_moved = True

    def write_groups(self, groups: list[tuple[tuple[str, ...], list[dict[str, Any]]]]) -> None:
        """Process the groups with up to ``ci_workers`` CI calls in flight (SharedCI); state work stays serial."""
        workers = min(self.s.ci_workers, len(groups))
        if workers <= 1:
            for key, items in groups:
                self.process(key, items)
            return

        def work(key: tuple[str, ...], items: list[dict[str, Any]]) -> None:
            with self.shared.hold():
                if not stop.is_set():
                    self.process(key, items, parallel=True)

        stop = threading.Event()
        first: BaseException | None = None
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="po-ci") as pool:
            futures = [pool.submit(work, key, items) for key, items in groups]
            for f in futures:
                try:
                    f.result()
                except BaseException as exc:  # noqa: BLE001 - re-raised below, after the others stopped
                    stop.set()  # a lost login or network stops the pass: no new group starts
                    first = first or exc
        if first is not None:
            raise first

    def retry(self, item: dict[str, Any]) -> None:
        if item["kind"] in (ACCOUNT_CODES, CLOSES):
            return  # retried by the next full read of the GL accounts (pending marks are looked up there)
        if item["kind"] == VENDORS:
            if self.ensure_vendor(item["key"], None) is not None and not self.dry_run:
                self.state.dequeue(VENDORS, item["key"])
            return
        row = item.get("row") or {}
        key = tuple(str(p) for p in row.get("group", []))
        if not key:
            self.state.dequeue(item["kind"], item["key"])
            return
        self.process(key, [])

    # -- one group -------------------------------------------------------------------------------
    def _known(self, key: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        entry = self.state.entry(KIND, key)
        known = list((entry or {}).get("items", {}).values())
        queued = next((i for i in self.state.replay if i["kind"] == KIND and i["key"] == key), None)
        if queued is not None:
            known += list((queued.get("row") or {}).get("items", []))
        return entry, known

    def process(self, key_parts: tuple[str, ...], fresh: list[dict[str, Any]], parallel: bool = False) -> None:
        key = encode_key(key_parts)
        counts = self.ctx.result.kind(KIND)
        entry, known = self._known(key)
        posted = entry is not None and entry.get("po") and not entry.get("pending")
        before = newest(self.s, known)
        items = newest(self.s, known, fresh)
        queued = any(i["kind"] == KIND and i["key"] == key for i in self.state.replay)
        if posted and not queued and all(item_stamp(self.s, items[i]) == item_stamp(self.s, before.get(i, {}))
                                         for i in items):
            counts.unchanged += 1  # nothing newer than what was posted: no PeopleSoft call
            return
        if not parallel:
            # A retried group whose vendor is not linked yet: the vendor flow first (serial here).
            approved = [it for it in items.values() if pick(it, self.s.item.status) in self.s.approved_statuses]
            if approved:
                self.ensure_vendor(_text(pick(approved[0], self.s.item.vendor)), approved[0])
        try:
            self._check_moves(key, items)
            w = map_group(self.s, self.xref, key_parts, list(items.values()),
                          dict((entry or {}).get("lines", {})), self.ctx.now.date(), (entry or {}).get("handle"))
        except RecordError as exc:
            self.ctx.fail(KIND, key, {"group": list(key_parts), "items": list(items.values())}, exc)
            return
        if w is None:
            if posted:
                # Every line left the requisition (rejected, denied): the PO is the person's to cancel.
                from mlconnector.peoplesoft.po_sink import NeedsPerson

                po = "/".join((entry or {}).get("po", {}).values())
                self.ctx.fail(KIND, key, {"group": list(key_parts), "items": list(items.values())}, NeedsPerson(
                    f"Procurify requisition {key_parts[0]} no longer has an approved item for this vendor, but "
                    f"purchase order {po} was posted for it. Nothing was changed in PeopleSoft: a person must cancel "
                    f"the PO if that is right.", json.dumps({"items": list(items.values())}, default=str)))
            else:
                counts.unchanged += 1
                if not self.dry_run:
                    self.state.dequeue(KIND, key)
            return
        if not self.dry_run and not posted:
            # A Create may leave in this write: its items are indexed now, so the index is on disk with the pending
            # mark (saved before the request). After a lost answer a moved item then still counts as posted here.
            index = self.state.extra.setdefault(ITEMS_INDEX, {})
            for iid, it in items.items():
                if pick(it, self.s.item.status) in self.s.approved_statuses:
                    index[iid] = key
            self.state.dirty = True
        self.writer.write(KIND, w)
        done = self.state.entry(KIND, key)
        if done is not None and done.get("po") and not self.dry_run and not any(
                i["kind"] == KIND and i["key"] == key for i in self.state.replay):
            # The link remembers what was posted, so an unchanged item costs nothing next time.
            done["items"] = items
            index = self.state.extra.setdefault(ITEMS_INDEX, {})
            for iid in items:
                index[iid] = key
            self.state.dirty = True

    def _check_moves(self, key: str, items: dict[str, dict[str, Any]]) -> None:
        """An item already posted under another group (its vendor changed) is not posted again. A group with a
        link counts, pending ones included (a Create whose answer was lost may hold the item); a group without one
        never reached PeopleSoft (its Create was refused, or a current lookup cleared its mark)."""
        index = self.state.extra.get(ITEMS_INDEX, {})
        for iid, it in items.items():
            other = index.get(iid)
            if (other is not None and other != key and pick(it, self.s.item.status) in self.s.approved_statuses
                    and self.state.entry(KIND, other) is not None):
                po = "/".join((self.state.entry(KIND, other) or {}).get("po", {}).values())
                raise RecordError(
                    f"Order item {iid} is already on purchase order {po or '(pending)'} (posted under another vendor "
                    f"or requisition) and now belongs to this group; it is not posted twice. A person must move the "
                    f"line in PeopleSoft, then run `mlconnector replay drop` for this item.")


    # -- vendors: Procurify -> PeopleSoft (created before the POs that need them) ------------------------
    def procurify_vendor(self, pid: str) -> dict[str, Any] | None:
        """A Procurify vendor by id, from one full read of the vendor list per pass (read only when needed)."""
        if self._procurify_vendors is None:
            self._procurify_vendors = {str(v.get("id")): v for page in self.procurify.vendors() for v in page}
        return self._procurify_vendors.get(pid)

    def vendor_write(self, pid: str, hint: dict[str, Any] | None) -> Any:
        """The VendorWrite of Procurify vendor ``pid`` (RecordError when it cannot be written as it is)."""
        from mlconnector.peoplesoft.vendor_sink import VendorWrite, split_name, vendor_facts

        s, n = self.s, self.vnames
        v = self.procurify_vendor(pid) or {}
        name = _text(v.get("name")) or _text(pick(hint or {}, s.item.vendor_name))
        title = f"Procurify vendor {pid}" + (f" ({name})" if name else "")
        if not name:
            raise RecordError(f"{title} is not in Procurify's vendor list and has no name; it cannot be created in "
                              f"PeopleSoft. Check vendors_path in [procurify] (some tenants answer only "
                              f"/api/v3/vendors/all/).")
        handle = f"{s.vendor_handle_prefix}{pid}".upper()  # PeopleSoft stores VENDOR_NAME_SHORT in capitals
        if len(handle) > s.vendor_handle_max:
            raise RecordError(f"{title}: its PeopleSoft handle {handle!r} does not fit {n.handle} "
                              f"({s.vendor_handle_max} characters); it is not cut. Shorten vendor_handle_prefix in "
                              f"[{SECTION}], or map the vendor under [{SECTION}.vendors].")
        try:
            name1, name2 = split_name(name)
        except ValueError as exc:
            raise RecordError(f"{title}: {exc}; it is not cut. Shorten the vendor's name in Procurify, or create the "
                              f"supplier in PeopleSoft by hand and map it under [{SECTION}.vendors].") from None
        external = _text(v.get("external_id")) if s.vendor_key == "external_id" else ""
        fields: dict[str, Any] = {n.name1: name1, **({n.name2: name2} if name2 else {}), **s.vendor_defaults}
        address = {n.address1: _text(v.get("addressLineOne")), n.address2: _text(v.get("addressLineTwo")),
                   n.city: _text(v.get("city")), n.state: _text(v.get("state_province")),
                   n.postal: _text(v.get("postalCode")), n.country: _text(v.get("country"))}
        if any(address.values()):
            fields[n.addresses] = [{n.address_seq: 1, **{k: x for k, x in address.items() if x}}]
        facts = vendor_facts(n, {n.name1: name1, n.name2: name2, n.status: fields.get(n.status, ""),
                                 n.addresses: fields.get(n.addresses, [])})
        return VendorWrite(key=pid, handle=handle, vendor_id=external, setid=s.vendor_setid, fields=fields,
                           title=title, row={"vendor": pid, "name": name}, facts=facts)

    def ensure_vendor(self, pid: str, hint: dict[str, Any] | None) -> str | None:
        """The PeopleSoft VENDOR_ID of Procurify vendor ``pid``: mapped, or linked/created now through the
        supplier CI (then learned into the crosswalk, so the POs waiting for it post). None: it waits."""
        if not pid:
            return None
        known = self.xref.get("vendor", pid)
        if known is not None:
            return known
        if not self.s.create_vendors:
            return None
        if pid in self._vendor_tried:
            return self._vendor_tried[pid]
        self._vendor_tried[pid] = None
        try:
            w = self.vendor_write(pid, hint)
        except RecordError as exc:
            self.ctx.fail(VENDORS, pid, {"vendor": pid}, exc)
            return None
        vid = self.vendor_writer.write(w)
        self._vendor_tried[pid] = vid
        if vid is not None and not self.dry_run:
            self.xref.learn("vendor", pid, vid)
        return vid

    # -- vendors: PeopleSoft -> Procurify (name, address, status) --------------------------------------
    def vendor_changes(self) -> None:
        """Read every linked supplier when the cadence comes round (PS_VENDOR has no change stamp) and send the
        ones whose content changed since the link's last sync to their Procurify vendor. A supplier showing
        what the connector itself wrote (created from Procurify, or last sent) is an echo: nothing is sent."""
        from mlconnector.errors import RemoteError
        from mlconnector.peoplesoft.ci import CIFaultError
        from mlconnector.peoplesoft.vendor_sink import vendor_facts

        s, n = self.s, self.vnames
        rule = FullRead(timedelta(minutes=s.vendor_read_every_minutes))
        started = self.ctx.now
        if not rule.due(self.state, VENDOR_READ, started):
            return
        counts = self.ctx.result.kind(VENDORS)
        linked: dict[str, str] = {}
        for pid, vid in self.state.extra.get("xref", {}).get("vendor", {}).items():
            linked[str(pid)] = str(vid)
        linked.update(s.vendors)
        clean = True
        for pid, vid in sorted(linked.items()):
            try:
                record = self.ci.get(n.ci, {n.setid: s.vendor_setid, n.vendor_id: vid})
            except CIFaultError as exc:
                if (exc.message_set, exc.message_id) == ("91", "50"):
                    continue  # not in this SetID: nothing to send back
                self.ctx.fail(VENDORS, pid, {"vendor": pid}, exc, what="vendor change")
                clean = False
                continue
            counts.read += 1
            facts = vendor_facts(n, record)
            h = digest(facts)
            entry = self.state.entry(VENDORS, pid) or {}
            last = entry.get("synced") or (digest(entry["facts"]) if entry.get("facts") else None)
            if last is None or is_echo("", (), h, last):
                if last != h and not self.dry_run:  # first sight: the baseline; an echo: remembered as synced
                    self.state.set_entry(VENDORS, pid, {**entry, "synced": h})
                    self.state.dirty = True
                continue
            addr = facts["address"]
            body = {"name": facts["name"], "active": facts["status"] in s.active_vendor_statuses,
                    "addressLineOne": addr["address1"], "addressLineTwo": addr["address2"], "city": addr["city"],
                    "state_province": addr["state"], "postalCode": addr["postal"], "country": addr["country"]}
            if self.dry_run:
                counts.posted += 1
                self.ctx.planned(VENDORS, pid, "post", vendor=vid, name=facts["name"], status=facts["status"])
                continue
            try:
                self.procurify.patch_vendor(pid, body)
            except RemoteError as exc:
                if isinstance(exc, FATAL_ERRORS):
                    raise
                self.ctx.fail(VENDORS, pid, {"vendor": pid}, exc, what="vendor change")
                clean = False
                continue
            self.state.set_entry(VENDORS, pid, {**entry, "synced": h})
            self.state.dirty = True
            counts.posted += 1
            self.audit.write("posted", VENDORS, pid, vendor=vid, name=facts["name"], status=facts["status"])
        if clean and not self.dry_run:
            rule.done(self.state, VENDOR_READ, started)


    # -- GL accounts: PeopleSoft -> Procurify account codes ----------------------------------------------
    def gl_rows(self) -> list[dict[str, Any]]:
        """Every row of the GL account query (one QAS call; a result that fills max_maxrows is refused)."""
        return self.query_rows(self.s.gl_query)

    def query_rows(self, query: str) -> list[dict[str, Any]]:
        """Every row of a QAS query without prompts."""
        from mlconnector.peoplesoft.qas import QASClient

        # The CI client's credentials: basic auth is kept for its WSDL reads, OAuth2 on its session.
        qas = QASClient(self.cfg.peoplesoft, getattr(self.ci, "wsdl_auth", None) or self.ci.http.session.auth)
        try:
            return [r for page in qas.read_all(query) for r in page]
        finally:
            qas.close()

    def publish_gl_accounts(self) -> None:
        """Publish the GL accounts in scope as Procurify account codes when the cadence comes round."""
        from mlconnector.errors import ConnectorError, RemoteError

        rule = FullRead(timedelta(minutes=self.s.gl_read_every_minutes))
        started = self.ctx.now
        if not rule.due(self.state, GL_READ, started):
            return
        counts = self.ctx.result.kind(ACCOUNT_CODES)
        try:
            rows = self.gl_rows()
        except RemoteError as exc:
            if isinstance(exc, FATAL_ERRORS):
                raise
            self.ctx.kind_error(ACCOUNT_CODES, exc)
            return
        wanted: dict[str, dict[str, Any]] = {}
        for row in rows:
            account = _text(row.get("ACCOUNT"))
            if account and self.s.gl_in_scope(account):
                counts.read += 1
                wanted[account] = {"code": account, "description": _text(row.get("DESCR")) or account,
                                   "active": _text(row.get("EFF_STATUS")) in self.s.gl_active_statuses}
        # A linked account that left the query (it lists active accounts only) is inactivated too.
        for account, entry in self.state.entries(ACCOUNT_CODES).items():
            if account not in wanted and self.s.gl_in_scope(account) and entry.get("facts"):
                wanted[account] = {**entry["facts"], "active": False}
        clean = True
        for account, facts in sorted(wanted.items()):
            try:
                self.publish_account(account, facts)
            except ConnectorError as exc:
                if isinstance(exc, FATAL_ERRORS):
                    raise
                self.ctx.fail(ACCOUNT_CODES, account, {"account": account}, exc, what="account code")
                clean = False
        if clean and not self.dry_run:
            rule.done(self.state, GL_READ, started)

    def publish_account(self, account: str, facts: dict[str, Any]) -> None:
        """One GL account -> its Procurify account code: created once, updated when its content changed."""
        from mlconnector.errors import RemoteError
        from mlconnector.sync.links import mark_pending

        counts = self.ctx.result.kind(ACCOUNT_CODES)
        h = digest(facts)
        entry = self.state.entry(ACCOUNT_CODES, account) or {}
        if entry.get("id") is not None and not entry.get("pending"):
            if entry.get("hash") == h:
                counts.unchanged += 1
                return
            code_id = entry["id"]
        else:
            # Before every create: a current lookup by code (adopts a code whose create answer was lost, or
            # one a person made by hand).
            found = self.procurify.find_account_code(account)
            if found is None and not facts["active"]:
                if entry and not self.dry_run:
                    self.state.drop_entry(ACCOUNT_CODES, account)  # never created, now inactive: nothing to do
                counts.unchanged += 1
                return
            if found is None:
                if self.dry_run:
                    counts.posted += 1
                    self.ctx.planned(ACCOUNT_CODES, account, "post", description=facts["description"])
                    return
                self.state.set_entry(ACCOUNT_CODES, account, mark_pending({"facts": facts}))
                self.state.save()  # the mark is on disk before the POST leaves
                try:
                    made = self.procurify.create_account_code({"code": account, "description": facts["description"]})
                except RemoteError as exc:
                    if exc.status is not None and 400 <= exc.status < 500:
                        self.state.drop_entry(ACCOUNT_CODES, account)  # refused: nothing was created
                    raise  # otherwise the mark stays: the next pass's lookup adopts what was made
                self.state.set_entry(ACCOUNT_CODES, account, {"id": made.get("id"), "hash": h, "facts": facts})
                self.state.dequeue(ACCOUNT_CODES, account, "account code")
                self.state.save()
                counts.posted += 1
                self.audit.write("posted", ACCOUNT_CODES, account, id=made.get("id"), active=True)
                return
            code_id = found.get("id")
            current = {"code": account, "description": _text(found.get("description")),
                       "active": bool(found.get("active", True))}
            if digest(current) == h:
                if not self.dry_run:
                    self.state.set_entry(ACCOUNT_CODES, account, {"id": code_id, "hash": h, "facts": facts})
                    self.state.dequeue(ACCOUNT_CODES, account, "account code")
                counts.unchanged += 1
                return
        if self.dry_run:
            counts.posted += 1
            self.ctx.planned(ACCOUNT_CODES, account, "update", description=facts["description"],
                             active=facts["active"])
            return
        self.procurify.put_account_code(code_id, {"code": account, "description": facts["description"],
                                                  "active": facts["active"]})
        self.state.set_entry(ACCOUNT_CODES, account, {"id": code_id, "hash": h, "facts": facts})
        self.state.dequeue(ACCOUNT_CODES, account, "account code")
        self.state.dirty = True
        counts.posted += 1
        self.audit.write("posted", ACCOUNT_CODES, account, id=code_id, active=facts["active"])


    # -- vouchers: PeopleSoft -> Procurify PO close -------------------------------------------------------
    def po_amount(self, entry: dict[str, Any]) -> Decimal:
        """The amount of the PO a link posted: its approved items' quantity x price, as the lines were sent."""
        places = Decimal(1).scaleb(-self.s.amount_places)
        total = Decimal(0)
        for it in (entry.get("items") or {}).values():
            if pick(it, self.s.item.status) in self.s.approved_statuses:
                qty = Decimal(str(pick(it, self.s.item.quantity) or 0))
                price = Decimal(str(pick(it, self.s.item.price) or 0))
                total += (qty * price).quantize(places, rounding=ROUND_HALF_UP)
        return total

    def procurify_pos(self, entry: dict[str, Any]) -> list[str]:
        """The Procurify PO numbers of a link's items (``purchase_order``: a number, or an object carrying it)."""
        out: set[str] = set()
        for it in (entry.get("items") or {}).values():
            po = it.get("purchase_order")
            if isinstance(po, dict):
                po = po.get("procurify_PO", po.get("id"))
            if po not in (None, "") and str(po).strip().isdigit():
                out.add(str(po).strip())
        return sorted(out)

    def close_vouchered_pos(self) -> None:
        """Close in Procurify each PO the connector created once its PeopleSoft vouchers meet ``close_when``."""
        from mlconnector.errors import ConnectorError, RemoteError

        rule = FullRead(timedelta(minutes=self.s.voucher_read_every_minutes))
        started = self.ctx.now
        if not rule.due(self.state, VOUCHER_READ, started):
            return
        counts = self.ctx.result.kind(CLOSES)
        try:
            rows = self.query_rows(self.s.voucher_query)
        except RemoteError as exc:
            if isinstance(exc, FATAL_ERRORS):
                raise
            self.ctx.kind_error(CLOSES, exc)
            return
        p = self.s.po
        gross: dict[tuple[str, str], Decimal] = {}
        for row in rows:
            po_key = (_text(row.get("BUSINESS_UNIT")), _text(row.get("PO_ID")))
            try:
                amount = Decimal(str(row.get("GROSS_AMT") or 0))
            except InvalidOperation:
                amount = Decimal(0)
            gross[po_key] = gross.get(po_key, Decimal(0)) + amount
            counts.read += 1
        if not gross:
            if not self.dry_run:
                rule.done(self.state, VOUCHER_READ, started)
            return
        clean = True
        for key, entry in sorted(self.state.entries(KIND).items()):
            po = entry.get("po") or {}
            po_key = (str(po.get(p.business_unit, "")), str(po.get(p.po_id, "")))
            if entry.get("pending") or po_key not in gross:
                continue
            if self.s.close_when == "vouchered" and gross[po_key] < self.po_amount(entry):
                continue  # partly vouchered: stays open
            for number in self.procurify_pos(entry):
                try:
                    self.close_po(number, "/".join(po_key), gross[po_key])
                except ConnectorError as exc:
                    if isinstance(exc, FATAL_ERRORS):
                        raise
                    self.ctx.fail(CLOSES, number, {"po": number, "group": key}, exc, what="PO close")
                    clean = False
        if clean and not self.dry_run:
            rule.done(self.state, VOUCHER_READ, started)

    def close_po(self, number: str, ps_po: str, gross: Decimal) -> None:
        """Close Procurify PO ``number`` once: its state is read first (3 = closed: remembered, not sent)."""
        from mlconnector.sync.links import mark_pending

        counts = self.ctx.result.kind(CLOSES)
        entry = self.state.entry(CLOSES, number) or {}
        if entry.get("closed"):
            counts.unchanged += 1
            return
        state = self.procurify.purchase_order(number).get("state")
        if str(state) in ("3", "1"):  # closed (by us after a lost answer, or by a person), or cancelled
            if not self.dry_run:
                self.state.set_entry(CLOSES, number, {"closed": True, "ps_po": ps_po, "state": state})
                self.state.dequeue(CLOSES, number, "PO close")
            counts.unchanged += 1
            return
        if self.dry_run:
            counts.posted += 1
            self.ctx.planned(CLOSES, number, "post", peoplesoft_po=ps_po, vouchered=str(gross))
            return
        self.state.set_entry(CLOSES, number, mark_pending({"ps_po": ps_po}))
        self.state.save()  # the mark is on disk before the close leaves
        self.procurify.close_purchase_order(number)
        self.state.set_entry(CLOSES, number, {"closed": True, "ps_po": ps_po, "state": 3})
        self.state.dequeue(CLOSES, number, "PO close")
        self.state.save()
        counts.posted += 1
        self.audit.write("posted", CLOSES, number, peoplesoft_po=ps_po, vouchered=str(gross))


def _vendor_ci_checks(s: PairSettings, client: Any) -> list[Any]:
    """The supplier CI: reachable, Find/Get (and Create when vendors are created), the handle searchable."""
    from mlconnector.checks import Check
    from mlconnector.errors import ConnectorError
    from mlconnector.peoplesoft.ci import ADMIN_CI

    n = s.vendor_fields
    name = f"CI_{n.ci}"
    try:
        svc = client.service(n.ci)
    except ConnectorError as exc:
        return [Check("PeopleSoft", f"WSDL {name}", False, exc.message,
                      f"Ask the PeopleSoft admin to generate {name} on the VNDR_ID component with Find, Get and Create "
                      f"({ADMIN_CI}) and activate its service operations, or set create_vendors = false and "
                      f"vendor_backflow = false in [{SECTION}] to map vendors by hand.")]
    want = ["F", "G", "C"] if s.create_vendors else ["G"]
    missing = [m for m in want if m not in svc.operations]
    lacking = [f for f in (n.setid, n.handle) if s.create_vendors and f not in svc.inputs.get("F", [])]
    ok = not missing and not lacking
    return [Check("PeopleSoft", f"operations {name}", ok,
                  ", ".join(sorted(svc.operations.values())) if ok else
                  f"missing {', '.join(missing) or '-'}; Find lacks {', '.join(lacking) or '-'}",
                  f"Ask the PeopleSoft admin to include Find, Get and Create in {name} with {n.handle} among the "
                  f"search fields ({ADMIN_CI}), or set [{SECTION}.vendor_fields] handle to a searchable field.")]


def _query_checks(cfg: Config, secrets: SecretStore, s: PairSettings) -> list[Any]:
    """The QAS queries the configured flows read (GL accounts, vouchers): each runs (one row asked for)."""
    from mlconnector.checks import Check
    from mlconnector.errors import ConnectorError
    from mlconnector.peoplesoft.connect import peoplesoft_auth
    from mlconnector.peoplesoft.qas import QASClient

    wanted = [(q, key, cols) for on, q, key, cols in (
        (s.gl_publish, s.gl_query, "gl_query", "ACCOUNT, DESCR, EFF_STATUS"),
        (s.close_pos, s.voucher_query, "voucher_query", "BUSINESS_UNIT, PO_ID, VOUCHER_ID, GROSS_AMT")) if on]
    if not wanted:
        return []
    out: list[Any] = []
    qas = QASClient(cfg.peoplesoft, peoplesoft_auth(cfg, secrets))
    try:
        for query, key, cols in wanted:
            try:
                qas.execute(query, None, 1)
                out.append(Check("PeopleSoft", f"query {query}", True, "runs"))
            except ConnectorError as exc:
                out.append(Check("PeopleSoft", f"query {query}", False, exc.message,
                                 f"Create the public query {query} without prompts (columns {cols}) in Query "
                                 f"Manager and give the integration user access to it, or set {key} in "
                                 f"[{SECTION}]."))
    finally:
        qas.close()
    return out

# -- ping -----------------------------------------------------------------------------------------
def ping_checks(cfg: Config, secrets: SecretStore) -> list[Any]:
    """The PO CI (WSDL, operations, the Find fields the lookup needs, a harmless Find) and the crosswalk's
    coverage of Procurify's active account codes and departments."""
    from mlconnector.checks import Check
    from mlconnector.errors import AuthError, ConnectorError
    from mlconnector.peoplesoft.ci import ADMIN_CI, CIClient
    from mlconnector.peoplesoft.connect import peoplesoft_auth
    from mlconnector.procurify.client import SECRET
    from mlconnector.procurify.ping import open_client

    s = settings(cfg)
    p = s.po
    out: list[Check] = []
    name = f"CI_{s.po_ci}"
    client = CIClient(cfg.peoplesoft, peoplesoft_auth(cfg, secrets))
    try:
        try:
            svc = client.service(s.po_ci)
        except ConnectorError as exc:
            return [Check("PeopleSoft", f"WSDL {name}", False, exc.message,
                          f"Set po_ci in [{SECTION}] to the PO component interface, or ask the PeopleSoft admin to "
                          f"generate {name} with Find, Get, Create and UpdateData ({ADMIN_CI}) and activate its "
                          f"service operations.")]
        missing = [m for m in ("F", "G", "C", "UD") if m not in svc.operations and not (m == "UD" and "UP" in
                                                                                         svc.operations)]
        out.append(Check("PeopleSoft", f"operations {name}", not missing,
                         ", ".join(sorted(svc.operations.values())) if not missing else
                         f"missing {', '.join(missing)} (has: {', '.join(svc.all_operations) or 'none'})",
                         f"Ask the PeopleSoft admin to include Find, Get, Create and UpdateData in {name} "
                         f"({ADMIN_CI}), then ping with --refresh-wsdl."))
        need = [p.business_unit, p.handle, p.vendor_id]
        lacking = [f for f in need if f not in svc.inputs.get("F", [])]
        out.append(Check("PeopleSoft", f"lookup {name}", not lacking,
                         f"Find by {', '.join(need)}" if not lacking else
                         f"the Find of {name} has no field {', '.join(lacking)} (it has: "
                         f"{', '.join(svc.inputs.get('F', []))}): the PO could not be looked up before a create",
                         f"Set [{SECTION}.po_fields] to the CI's names, or ask the admin to add {', '.join(lacking)} "
                         f"to the component's search keys."))
        if not missing and not lacking:
            try:
                client.find(s.po_ci, {p.business_unit: s.business_unit, p.handle: f"{s.handle_prefix}~~PING~~",
                                      p.vendor_id: "~~PING~~"})
                out.append(Check("PeopleSoft", f"find {name}", True, f"{svc.operations['F']} allowed"))
            except (AuthError, ConnectorError) as exc:
                out.append(Check("PeopleSoft", f"find {name}", False, exc.message,
                                 "Do the admin action the message names, then ping again."))
        if s.create_vendors or s.vendor_backflow:
            out += _vendor_ci_checks(s, client)
    finally:
        client.close()
    out += _query_checks(cfg, secrets, s)
    procurify = open_client(cfg.sections["procurify"], cfg.instance, secrets.get(SECRET))
    try:
        codes = {str(r.get("code")) for page in procurify.pages("/api/v3/account-codes/", {"active": "true"})
                 for r in page if r.get("active", True)}
        depts = {str(r.get("name")) for page in procurify.pages("/api/v3/departments/", {"active": "true"})
                 for r in page if r.get("active", True)}
        mapped = [k.split("|", 1) for k in s.accounts]
        no_code = sorted(c for c in codes if not any(m[0] == c for m in mapped))
        no_dept = sorted(d for d in depts if not any(m[1] == d for m in mapped))
        ok = not no_code and not no_dept
        out.append(Check("Procurify", "account crosswalk", ok,
                         f"{len(codes)} active account code(s), {len(depts)} department(s) all mapped" if ok else
                         f"no mapping for account code(s) {', '.join(no_code) or '-'} / department(s) "
                         f"{', '.join(no_dept) or '-'}: their order lines will wait",
                         f"Add \"<code>|<department>\" = \"<ACCOUNT>/<DEPTID>\" lines to [{SECTION}.accounts].",
                         warning=True))
    except ConnectorError as exc:
        out.append(Check("Procurify", "account crosswalk", False, exc.message,
                         "Check the [procurify] section; the account-codes and departments endpoints need the role's "
                         "read rights."))
    finally:
        procurify.close()
    return out

from mlconnector.pairs.procurify_peoplesoft_reconcile import reconcile_scope  # noqa: E402,F401  (reconcile)
