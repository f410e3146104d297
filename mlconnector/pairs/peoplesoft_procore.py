"""`sync peoplesoft-procore`: vendors and GL accounts out as reference data, purchase orders both ways (one pass).

Flows, reference data first (sync/echo.py ``ordered``):

- ``vendors``: the PeopleSoft vendor master, read as the peoplesoft-jira pair reads it (PS Query, in full on
  its cadence and diffed by content hash: sync/reference.py), goes to the Procore company directory with sync
  actions, ``origin_id`` = the vendor's injective handle (sync/keys.py). Only vendors whose content changed
  since they were last pushed are sent, up to the API's maximum per call.
- ``cost_codes``: the configured GL accounts become cost codes on every project in scope (sync actions,
  ``origin_id`` = handle of project + account).
- ``purchase_orders``: PeopleSoft PO distributions on projects in scope (project crosswalk) become purchase
  order contracts with one line item per distribution, by sync action (``origin_id`` handles), so a change
  updates and a resend never duplicates. POs that the commitments flow made are echoes and are skipped.
- ``commitments``: approved Procore commitments become PeopleSoft POs through the PO component interface
  (peoplesoft/po_sink.py: pending mark saved before Create, lookup by handle and vendor before every create).
  The vendor must be linked by the vendor flow, else the commitment waits. Commitments this pair made are
  echoes and are skipped.

Both sides changed (a PeopleSoft PO and its commitment, or a commitment and its PO): the configured system of
record wins and the other version is written to the audit trail (``conflict``); ``manual`` queues both for a
person.

A sync action upserts by ``origin_id``: the server looks the handle up and creates only when it is unknown, so
it is the lookup before create, done atomically; resending after a lost answer updates what the first call made.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from mlconnector.audit import Audit, Redactor
from mlconnector.config import Config
from mlconnector.credentials import SecretStore
from mlconnector.errors import ConfigError, RecordError, RemoteError
from mlconnector.pairs.peoplesoft_procore_config import SECTION, PairSettings
from mlconnector.state import State
from mlconnector.sync import reference
from mlconnector.sync.echo import FlowOrder, Side, ordered, resolve_conflict
from mlconnector.sync.engine import PassContext, PassResult, Progress, no_progress, run_pass
from mlconnector.sync.keys import decode_key, encode_key, handle
from mlconnector.sync.reference import FullRead, ReferenceStore
from mlconnector.sync.window import WindowRule
from mlconnector.sync.xref import Crosswalk, MissingReference

PAIR = "peoplesoft-procore"
VENDORS, COST_CODES, POS, COMMITMENTS = "vendors", "cost_codes", "purchase_orders", "commitments"
DIRECT_COSTS, CHANGE_ORDERS = "direct_costs", "change_orders"
COST_KINDS = (DIRECT_COSTS, CHANGE_ORDERS)
FLOWS = (FlowOrder(VENDORS), FlowOrder(COST_CODES),
         FlowOrder(POS, (VENDORS, COST_CODES)), FlowOrder(COMMITMENTS, (VENDORS, COST_CODES, POS)),
         FlowOrder(DIRECT_COSTS, (COST_CODES, COMMITMENTS)), FlowOrder(CHANGE_ORDERS, (COST_CODES, COMMITMENTS)))
JOURNAL_HANDLE = "psft-jrnl"
VENDOR_LINKS = "procore_vendors"  # key map: PeopleSoft vendor key -> {"id": Procore vendor id, "hash": pushed}
MADE_POS = "procore_made_pos"  # state.extra: PeopleSoft PO key -> the commitment key it was made from
COST_ACCOUNTS = "procore_cost_accounts"  # state.extra: Procore cost code id -> GL account
EVENTS = "procore_events"  # state.extra: "<resource name>|<id>" -> a webhook event the next pass fetches
DIRECT_COST_RESOURCES = {"Direct Costs"}  # webhook resources the direct costs flow fetches
SYNC_SUFFIX = "/sync"
VENDOR_HANDLE, ACCOUNT_HANDLE, PO_HANDLE, LINE_HANDLE = "psft-vendor", "psft-acct", "psft-po", "psft-pol"
DESCR_MAX = 254


def settings(cfg: Config) -> PairSettings:
    s = cfg.sections.get(SECTION)
    if s is None:
        raise ConfigError(f"{cfg.path} has no [{SECTION}] section, which `sync {PAIR}` needs. Copy it from "
                          f"examples/peoplesoft-procore.toml and set business_unit, buyer_id and the crosswalks.")
    return s


def configured(cfg: Config) -> bool:
    return "procore" in cfg.sections and SECTION in cfg.sections and cfg.ps is not None


def ping_projects(cfg: Config) -> list[int]:
    """The Procore projects the pair names (ping checks each is permitted)."""
    s = cfg.sections.get(SECTION)
    return [int(p) for p in s.projects] if s is not None else []


# -- mapping (pure) -------------------------------------------------------------------------------
def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _dec(value: Any, what: str, title: str) -> Decimal:
    try:
        d = Decimal(_text(value)) if not isinstance(value, float) else None
    except InvalidOperation:
        d = None
    if d is None or not d.is_finite():
        raise RecordError(f"{title}: {what} {value!r} is not a number; nothing was written for it.")
    return d


def money(d: Decimal, places: int = 2) -> str:
    """A Decimal as Procore's number strings: fixed places, never through float."""
    return format(d.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP), "f")


def canon(value: Any) -> str:
    if isinstance(value, Decimal | int) and not isinstance(value, bool):
        d = Decimal(value)
        return format(d.normalize(), "f") if d else "0"
    text = _text(value)
    with contextlib.suppress(InvalidOperation):
        if text and text.lstrip("-").replace(".", "", 1).isdigit():
            return canon(Decimal(text))
    return text


def vendor_update(s: PairSettings, vk: str, facts: dict[str, Any]) -> dict[str, Any]:
    """A PeopleSoft vendor's facts -> one item of the vendors sync action."""
    setid, vendor_id = decode_key(vk)
    country = _text(facts.get("country")).upper()
    item: dict[str, Any] = {
        "origin_id": handle(VENDOR_HANDLE, (setid, vendor_id)), "origin_code": vendor_id,
        "name": _text(facts.get("name")), "address": _text(facts.get("address1")), "city": _text(facts.get("city")),
        "state_code": _text(facts.get("state")), "zip": _text(facts.get("postal")),
        "is_active": _text(facts.get("status")) in ("", "A"),
    }
    code = s.countries.get(country, country if len(country) == 2 else "")
    if code:
        item["country_code"] = code  # an unknown three-letter code is left out rather than guessed
    return item


def cost_code_update(project: str, account: str, name: str) -> dict[str, Any]:
    return {"origin_id": handle(ACCOUNT_HANDLE, (project, account)), "code": account, "name": name}


@dataclass
class CommitmentWrite:
    """One PeopleSoft PO as a Procore purchase order contract: header item, line items, the hash of the
    PeopleSoft content it came from, and the hash of the Procore fields it sets."""

    key: str
    project: str
    header: dict[str, Any]
    lines: list[dict[str, Any]]
    ps_hash: str
    procore_hash: str
    title: str
    stamp: str


def procore_digest(header: dict[str, Any], lines: list[dict[str, Any]]) -> str:
    """The Procore fields this pair sets on a commitment and its lines, hashed (numbers by value)."""
    keep = ("vendor_id", "number", "title")
    line_keys = ("origin_id", "cost_code_id", "description", "quantity", "unit_cost", "amount")
    return reference.digest({"h": {k: canon(header.get(k)) for k in keep},
                             "l": sorted([[canon(ln.get(k)) for k in line_keys] for ln in lines])})


def ps_digest(vendor_id: str, lines: list[tuple[Any, ...]]) -> str:
    """A PeopleSoft PO's content as this pair compares it: vendor and (line, description, quantity, price,
    account, deptid, amount) per distribution, numbers by value."""
    return reference.digest({"v": _text(vendor_id), "l": sorted([[canon(x) for x in ln] for ln in lines])})


def map_po(s: PairSettings, xref: Crosswalk, key: tuple[str, str], rows: list[dict[str, Any]],
           vendor_id: str | None, cost_code: Any) -> CommitmentWrite | None:
    """A PeopleSoft PO's distribution rows -> a CommitmentWrite (None when no distribution is on a project in
    scope). ``vendor_id``: the linked Procore vendor (None: the PO waits); ``cost_code(project, account)``: the
    Procore cost code id or None (the PO waits)."""
    c = s.po_columns
    bu, po_id = key
    title = f"PeopleSoft PO {bu}/{po_id}"
    scoped: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        pid = s.project_of(_text(r.get(c.project_id)), _text(r.get(c.deptid)))
        if pid is not None:
            scoped.setdefault(pid, []).append(r)
    if not scoped:
        return None
    if len(scoped) > 1:
        raise RecordError(f"{title} has distributions on {len(scoped)} Procore projects ({', '.join(sorted(scoped))}); "
                          f"a commitment belongs to one project. Nothing was written: split the PO in PeopleSoft or "
                          f"map its projects to one in [{SECTION}.projects].")
    project, drows = next(iter(scoped.items()))
    first = drows[0]
    ps_vendor = _text(first.get(c.vendor_id))
    if vendor_id is None:
        raise MissingReference("ps_vendor", encode_key((_text(first.get(c.vendor_setid)), ps_vendor)),
                               s.CONFIG_KEYS["ps_vendor"], f"{title} (vendor {ps_vendor} is not in Procore yet)")
    lines, ps_lines = [], []
    drows.sort(key=lambda r: (_num(r.get(c.line_nbr)), _num(r.get(c.distrib_nbr))))
    for r in drows:
        line, dist = _text(r.get(c.line_nbr)), _text(r.get(c.distrib_nbr))
        account = _text(r.get(c.account))
        cc = cost_code(project, account)
        if cc is None:
            raise MissingReference("account", account, s.CONFIG_KEYS["account"],
                                   f"{title} line {line} (account {account} has no cost code on project {project})")
        qty = _dec(r.get(c.quantity), "quantity", f"{title} line {line}")
        price = _dec(r.get(c.price), "price", f"{title} line {line}")
        amount = _dec(r.get(c.amount), "amount", f"{title} line {line}")
        descr = _text(r.get(c.description))[:DESCR_MAX] or f"PO {po_id} line {line}"
        lines.append({"origin_id": handle(LINE_HANDLE, (bu, po_id, line, dist)), "cost_code_id": cc,
                      "description": descr, "quantity": money(qty, 4), "unit_cost": money(price, 4),
                      "amount": money(amount), "uom": _text(r.get(c.unit)) or s.unit})
        ps_lines.append((line, descr, qty, price, account, _text(r.get(c.deptid)), amount))
    header = {"origin_id": handle(PO_HANDLE, (bu, po_id)), "origin_code": po_id, "vendor_id": vendor_id,
              "number": po_id, "title": (_text(first.get(c.description)) or title)[:255],
              "status": s.commitment_status, "contract_date": _text(first.get(c.po_date))[:10] or None}
    header = {k: v for k, v in header.items() if v is not None}
    return CommitmentWrite(key=encode_key(key), project=project, header=header, lines=lines,
                           ps_hash=ps_digest(ps_vendor, ps_lines), procore_hash=procore_digest(header, lines),
                           title=title, stamp=max(_text(r.get("LAST_DTTM_UPDATE")) for r in drows))


def map_commitment(s: PairSettings, xref: Crosswalk, project: str, commitment: dict[str, Any],
                   lines: list[dict[str, Any]], line_numbers: dict[str, int], account_of: Any, today: date) -> Any:
    """An approved Procore commitment and its line items -> a POWrite for the PO sink. Raises RecordError for
    bad input and MissingReference for an unlinked vendor or an unmapped cost code (the commitment waits)."""
    from mlconnector.peoplesoft.po_sink import POWrite

    cid = _text(commitment.get("id"))
    number = _text(commitment.get("number"))
    title = f"Procore commitment {number or cid} (project {project})"
    ref = cid if s.commitment_handle == "id" else number
    handle_value = f"{s.handle_prefix}{ref}"
    if not ref or len(handle_value) > s.handle_max:
        raise RecordError(f"{title}: the PO reference {handle_value!r} does not fit {s.po.handle} ({s.handle_max} "
                          f"characters); it is not cut. Shorten handle_prefix or set commitment_handle in "
                          f"[{SECTION}].")
    vendor = commitment.get("vendor") if isinstance(commitment.get("vendor"), dict) else {}
    procore_vendor = _text(commitment.get("vendor_id") or vendor.get("id"))
    vendor_id = xref.need("vendor", procore_vendor, f"{title} (Procore vendor {procore_vendor})")
    deptid = s.projects.get(project, "").partition("/")[2]
    if not deptid:
        raise RecordError(f"{title}: project {project} has no DEPTID in [{SECTION}.projects] (write it as "
                          f"\"PROJECT_ID/DEPTID\"), so its PO distributions have no department. Nothing was posted.")
    if not lines:
        raise RecordError(f"{title} has no line items; a PeopleSoft PO needs at least one. It waits until lines are "
                          f"added in Procore.")
    p = s.po
    numbers = dict(line_numbers)
    next_nbr = max(numbers.values(), default=0) + 1
    out = []
    ps_lines = []
    for ln in sorted(lines, key=lambda x: _num(x.get("id"))):
        lid = _text(ln.get("id"))
        account = account_of(_text(ln.get("cost_code_id") or (ln.get("cost_code") or {}).get("id")))
        if account is None:
            raise MissingReference("account", _text(ln.get("cost_code_id")), s.CONFIG_KEYS["account"],
                                   f"{title} line {lid} (its cost code is not one published from a GL account)")
        amount = _dec(ln.get("amount") or "0", "amount", f"{title} line {lid}")
        qty_raw = _text(ln.get("quantity"))
        qty = _dec(qty_raw, "quantity", f"{title} line {lid}") if qty_raw else Decimal(0)
        if qty <= 0:  # a lump-sum line: one unit at the line's amount
            qty, price = Decimal(1), amount
        else:
            price = _dec(ln.get("unit_cost") or "0", "unit cost", f"{title} line {lid}")
        if price < 0:
            raise RecordError(f"{title} line {lid} has a negative amount ({price}); PeopleSoft takes none. Nothing "
                              f"was posted.")
        if lid not in numbers:
            numbers[lid] = next_nbr
            next_nbr += 1
        descr = _text(ln.get("description"))[:DESCR_MAX] or f"Procore line {lid}"
        merch = (qty * price).quantize(Decimal("0.001"), rounding=ROUND_HALF_UP)
        out.append({p.line_nbr: numbers[lid], p.description: descr, p.unit: s.unit, p.quantity: qty,
                    p.price: price, p.distributions: [{p.distrib_nbr: 1, p.account: account, p.deptid: deptid,
                                                       p.distrib_quantity: qty, p.amount: merch}]})
        ps_lines.append((numbers[lid], descr, qty, price, account, deptid, merch))
    header = {p.business_unit: s.business_unit, p.handle: handle_value, p.vendor_setid: s.vendor_setid,
              p.vendor_id: vendor_id, p.buyer: s.buyer_id, p.currency: s.currency}
    digest = ps_digest(vendor_id, ps_lines)
    return POWrite(key=encode_key((cid,)), handle=handle_value, vendor_id=vendor_id, business_unit=s.business_unit,
                   header={**header, p.po_date: today}, lines=out, hash=digest,
                   row={"project": project, "commitment": commitment, "lines": lines}, title=title,
                   extra={"lines": numbers, "project": project, "ps_hash": digest})


def _num(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


# -- wiring ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def connect(cfg: Config, secrets: SecretStore, redactor: Redactor, *, refresh_wsdl: bool = False) -> Iterator[Any]:
    """(PS Query client, PeopleSoft CI client, Procore client), open for one command. Secrets are read first."""
    from mlconnector.peoplesoft.ci import CIClient
    from mlconnector.peoplesoft.connect import peoplesoft_auth
    from mlconnector.peoplesoft.qas import QASClient
    from mlconnector.procore.client import SECRET, ProcoreClient, ProcoreToken, token_cache_for

    pcfg = cfg.sections["procore"]
    secret = secrets.get(SECRET)
    redactor.add(secret)
    ps_auth = peoplesoft_auth(cfg, secrets)
    procore = ProcoreClient(pcfg, ProcoreToken(pcfg, secret, token_cache_for(pcfg, cfg.instance), redactor=redactor))
    qas = QASClient(cfg.peoplesoft, ps_auth)
    ci = CIClient(cfg.peoplesoft, ps_auth, refresh=refresh_wsdl)
    try:
        yield qas, ci, procore
    finally:
        ci.close()
        qas.close()
        procore.close()


def make_pass(cfg: Config, clients: Any, state: State, audit: Audit, *, dry_run: bool = False,
              progress: Progress = no_progress, kinds: list[str] | None = None) -> PeopleSoftProcorePass:
    qas, ci, procore = clients
    return PeopleSoftProcorePass(cfg, state, qas, ci, procore, audit, dry_run=dry_run, progress=progress,
                                 kinds=kinds)


def before_replay(steps: PeopleSoftProcorePass, items: list[dict[str, Any]]) -> None:
    """Nothing to refresh: retried records are mapped again from their queued rows and the current links."""
    return None


class PeopleSoftProcorePass:
    """The engine's steps for this pair (sync/engine.py PassSteps): vendors, cost codes, purchase orders
    (PeopleSoft -> Procore) and commitments (Procore -> PeopleSoft), in that order."""

    def __init__(self, cfg: Config, state: State, qas: Any, ci: Any, procore: Any, audit: Audit, *,
                 dry_run: bool = False, progress: Progress = no_progress, now: datetime | None = None,
                 kinds: list[str] | None = None) -> None:
        from mlconnector.peoplesoft.po_sink import PONames, POWriter

        self.cfg = cfg
        self.s = settings(cfg)
        self.pcfg = cfg.sections["procore"]
        self.state = state
        self.qas = qas
        self.ci = ci
        self.procore = procore
        self.audit = audit
        self.dry_run = dry_run
        self.selected = list(kinds or [])
        self.ctx = PassContext(PAIR, state, audit, dry_run=dry_run, progress=progress,
                               **({"now": now} if now else {}))
        self.window = WindowRule(timedelta(minutes=self.s.overlap_minutes))
        self.xref = Crosswalk(state, {"vendor": self.s.vendors}, PairSettings.CONFIG_KEYS)
        self.vendors = ReferenceStore(state, VENDORS)
        p = self.s.po
        self.names = PONames(ci=self.s.po_ci, business_unit=p.business_unit, po_id=p.po_id, handle=p.handle,
                             vendor_id=p.vendor_id, status=p.status, lines=p.lines, line_nbr=p.line_nbr,
                             distributions=p.distributions, distrib_nbr=p.distrib_nbr,
                             updatable_statuses=tuple(self.s.updatable_statuses), create_only=(p.po_date,))
        self.writer = POWriter(self.ctx, ci, self.names, grace_seconds=self.s.pending_grace_seconds)
        self.journals: Any = None
        if self.s.offset_account:
            from mlconnector.peoplesoft.journal_sink import JournalWriter

            self.journals = JournalWriter(self.ctx, ci, self.s.journal, grace_seconds=self.s.pending_grace_seconds)
        procore.on_response = self._audit_response

    def _audit_response(self, method: str, path: str, status: int, request_id: str) -> None:
        # Procore support asks for the X-Request-Id of a call: keep it with every answer.
        self.audit.write("procore_response", method=method, path=path, status=status, request_id=request_id)

    # -- the engine's steps ----------------------------------------------------------------------
    def prepare(self) -> None:
        """Move the webhook receiver's spooled events into the state (one per record: duplicates collapse)."""
        if self.dry_run:
            return
        from mlconnector.procore.webhook import spool_path
        from mlconnector.webhook import drain_events

        def commit(events: list[dict[str, Any]]) -> None:
            book = self.state.extra.setdefault(EVENTS, {})
            for ev in events:
                if ev.get("resource_name") in DIRECT_COST_RESOURCES and self.journals is None:
                    continue  # project costs are not posted by this configuration (no offset_account)
                book[f"{ev.get('resource_name')}|{ev.get('resource_id')}"] = ev
            self.state.dirty = True
            self.state.save()  # saved before the spool is emptied: a kill repeats events, never loses them

        drain_events(spool_path(self.cfg.state_file), commit)

    def resolve_pending(self) -> None:
        if self.state.pending(COMMITMENTS):
            self.writer.resolve_pending(COMMITMENTS)
        for kind in COST_KINDS:
            if self.journals is not None and self.state.pending(kind):
                self.journals.resolve_pending(kind)

    def entities(self) -> list[str]:
        return [f for f in ordered(FLOWS) if (not self.selected or f in self.selected)
                and (f not in COST_KINDS or self.journals is not None)]

    def blocked(self, entity: str) -> str | None:
        return None

    def replay_kinds(self) -> list[str]:
        return [VENDORS, COST_CODES, POS, COMMITMENTS, *COST_KINDS]

    def requests(self) -> dict[str, int]:
        return {"peoplesoft": self.qas.http.requests_made + self.ci.http.requests_made,
                "procore": self.procore.requests_made}

    def run(self, since: datetime | None = None) -> PassResult:
        return run_pass(self, since)

    def sync_entity(self, entity: str, since: datetime | None) -> None:
        {VENDORS: self.sync_vendors, COST_CODES: self.sync_cost_codes, POS: self.sync_purchase_orders,
         COMMITMENTS: self.sync_commitments, DIRECT_COSTS: self.sync_direct_costs,
         CHANGE_ORDERS: self.sync_change_orders}[entity](since)

    def retry(self, item: dict[str, Any]) -> None:
        kind, key = item["kind"], item["key"]
        if kind == VENDORS:
            self.push_vendors([key])
        elif kind == COST_CODES:
            project, account = decode_key(key)
            if account in self.s.accounts and project in self.s.projects:
                self.push_cost_codes(project, [account])
            else:
                self.state.dequeue(kind, key)
        elif kind == POS:
            rows = (item.get("row") or {}).get("rows") or []
            bu, po_id = decode_key(key)
            self.write_pos({(bu, po_id): rows})
        elif kind in COST_KINDS:
            row = item.get("row") or {}
            if row.get("doc") and self.journals is not None:
                backs: list[dict[str, Any]] = []
                self.post_cost(kind, str(row.get("project")), row["doc"], row.get("lines"), backs, forced=True)
                self._origin_back(str(row.get("project")), backs)
            else:
                self.state.dequeue(kind, key)
        elif kind == COMMITMENTS:
            row = item.get("row") or {}
            if row.get("commitment"):
                self.process_commitment(str(row.get("project")), row["commitment"], row.get("lines"), forced=True)
            else:
                self.state.dequeue(kind, key)

    # -- vendors ---------------------------------------------------------------------------------
    def sync_vendors(self, since: datetime | None) -> None:
        """Read the vendor master on its cadence (content-hash diff), then push every vendor whose content is
        not yet in Procore."""
        rs = self.cfg.peoplesoft.records[VENDORS]
        counts = self.ctx.result.kind(VENDORS)
        rule = FullRead(timedelta(hours=rs.full_read_every_hours))
        from mlconnector.mapping import vendor_from_row

        read: dict[str, dict[str, Any]] = {}  # a plan stores nothing, so it plans from what it read

        def store(rows: list[dict[str, Any]]) -> None:
            for row in rows:
                counts.read += 1
                setid, vid = _text(row.get("SETID")), _text(row.get("VENDOR_ID"))
                if not vid:
                    continue
                if self.dry_run:
                    read[encode_key((setid, vid))] = vendor_from_row(row, rs.columns)
                else:
                    self.vendors.store(encode_key((setid, vid)), vendor_from_row(row, rs.columns))

        if rs.read != "full":  # a vendor view with a change stamp: read by window like a document
            start = self.window.start(self.state, VENDORS, rs.initial_since, since)
            for rows, until in self.qas.read_window(rs.query, start, self.ctx.now):
                store(rows)
                if not self.dry_run and self.window.advance(self.state, VENDORS, until, since):
                    self.state.watermarks_moved = True
        elif rule.due(self.state, VENDORS, self.ctx.now, forced=since is not None):
            for rows in self.qas.read_all(rs.query):
                store(rows)
            if not self.dry_run:
                rule.done(self.state, VENDORS, self.ctx.now)
        for vk, facts in read.items():
            link = self.state.entry(VENDOR_LINKS, vk)
            if link is not None and link.get("hash") == reference.digest(facts):
                counts.unchanged += 1
            else:
                self.ctx.planned(VENDORS, vk, "create" if link is None else "update",
                                 origin_id=vendor_update(self.s, vk, facts)["origin_id"])
        todo = []
        for vk, entry in self.state.keymap.items(VENDORS):
            if vk in read:
                continue
            link = self.state.entry(VENDOR_LINKS, vk)
            if link is None or link.get("hash") != entry.get("hash"):
                todo.append(vk)
            else:
                counts.unchanged += 1
        self.push_vendors(todo)

    def push_vendors(self, keys: list[str]) -> None:
        counts = self.ctx.result.kind(VENDORS)
        items, by_origin = [], {}
        for vk in keys:
            entry = self.state.entry(VENDORS, vk)
            if entry is None or not entry.get(reference.FACTS):
                self.state.dequeue(VENDORS, vk)
                continue
            link = self.state.entry(VENDOR_LINKS, vk)
            if link is not None and link.get("hash") == entry.get("hash"):
                self.state.dequeue(VENDORS, vk)
                continue
            item = vendor_update(self.s, vk, entry[reference.FACTS])
            items.append(item)
            by_origin[item["origin_id"]] = (vk, entry.get("hash"), link is None)
        if not items:
            return
        if self.dry_run:
            for item in items:
                vk, _, new = by_origin[item["origin_id"]]
                self.ctx.planned(VENDORS, vk, "create" if new else "update", origin_id=item["origin_id"])
            return
        path = self.pcfg.vendors_path + SYNC_SUFFIX
        size = self.pcfg.sync_batch
        for start in range(0, len(items), size):
            self.ctx.check_deadline()
            chunk = items[start:start + size]
            out = self.procore.sync(path, {"company_id": self.pcfg.company_id}, chunk)
            self._settle_sync(VENDORS, out, {i["origin_id"]: i for i in chunk}, by_origin, self._vendor_linked)
            self.state.save()
        self.ctx.progress("written", kind=VENDORS, n=counts.created + counts.updated)

    def _vendor_linked(self, vk: str, entity: dict[str, Any], content_hash: str) -> None:
        setid, vid = decode_key(vk)
        self.state.set_entry(VENDOR_LINKS, vk, {"id": entity.get("id"), "hash": content_hash})
        self.xref.learn("vendor", str(entity.get("id")), vid)
        self.xref.learn("ps_vendor", vk, str(entity.get("id")))

    def _settle_sync(self, kind: str, out: Any, sent: dict[str, dict[str, Any]],
                     by_origin: dict[str, tuple[str, Any, bool]], linked: Any) -> None:
        """Link every row the sync answer lists in ``entities``; queue every row it lists in ``errors`` (and any
        row it does not mention) with the reason Procore gave."""
        from mlconnector.procore.client import sync_error_text

        counts = self.ctx.result.kind(kind)
        done = set()
        for entity in out.entities:
            origin = entity.get("origin_id")
            if origin not in by_origin or origin in done:
                continue
            done.add(origin)
            key, content_hash, new = by_origin[origin]
            linked(key, entity, content_hash)
            if new:
                counts.created += 1
            else:
                counts.updated += 1
            self.audit.write("created" if new else "updated", kind, key, procore_id=entity.get("id"),
                             origin_id=origin)
            self.state.dequeue(kind, key)
        for err in out.errors:
            origin = err.get("origin_id")
            if origin not in by_origin or origin in done:
                continue
            done.add(origin)
            key = by_origin[origin][0]
            self.ctx.fail(kind, key, {"sent": sent.get(origin, {})}, RecordError(
                f"Procore refused {kind[:-1].replace('_', ' ')} {origin}: {sync_error_text(err)}. Fix the record in "
                f"PeopleSoft (or the mapping in [{SECTION}]); it is sent again on the next pass."))
        for origin, (key, _, _) in by_origin.items():
            if origin in sent and origin not in done:
                self.ctx.fail(kind, key, {"sent": sent[origin]}, RecordError(
                    f"Procore's sync answer did not mention {origin}; it is sent again on the next pass (a sync "
                    f"action updates by origin_id, so nothing is duplicated)."))

    # -- cost codes ------------------------------------------------------------------------------
    def sync_cost_codes(self, since: datetime | None) -> None:
        for project in sorted(self.s.projects):
            todo = []
            for account, name in sorted(self.s.accounts.items()):
                link = self.state.entry(COST_CODES, encode_key((project, account)))
                if link is None or link.get("hash") != reference.digest({"code": account, "name": name}):
                    todo.append(account)
                else:
                    self.ctx.result.kind(COST_CODES).unchanged += 1
            if todo:
                try:
                    self.push_cost_codes(project, todo)
                except RemoteError as exc:
                    if exc.status != 403:
                        raise
                    # One project not permitted (or its tool disabled) spares the others.
                    self.ctx.kind_error(COST_CODES, exc)

    def push_cost_codes(self, project: str, accounts: list[str]) -> None:
        items, by_origin = [], {}
        for account in accounts:
            name = self.s.accounts[account]
            item = cost_code_update(project, account, name)
            key = encode_key((project, account))
            items.append(item)
            by_origin[item["origin_id"]] = (key, reference.digest({"code": account, "name": name}),
                                            self.state.entry(COST_CODES, key) is None)
        if self.dry_run:
            for item in items:
                key, _, new = by_origin[item["origin_id"]]
                self.ctx.planned(COST_CODES, key, "create" if new else "update", origin_id=item["origin_id"])
            return
        out = self.procore.sync(self.pcfg.cost_codes_path + SYNC_SUFFIX, {"project_id": int(project)}, items)
        self._settle_sync(COST_CODES, out, {i["origin_id"]: i for i in items}, by_origin, self._cost_code_linked)
        self.state.save()

    def _cost_code_linked(self, key: str, entity: dict[str, Any], content_hash: str) -> None:
        project, account = decode_key(key)
        self.state.set_entry(COST_CODES, key, {"id": entity.get("id"), "hash": content_hash})
        index = self.state.extra.setdefault(COST_ACCOUNTS, {})
        index[str(entity.get("id"))] = account

    def cost_code(self, project: str, account: str) -> Any:
        link = self.state.entry(COST_CODES, encode_key((project, account)))
        return link.get("id") if link else None

    def account_of(self, cost_code_id: str) -> str | None:
        return self.state.extra.get(COST_ACCOUNTS, {}).get(cost_code_id)

    # -- purchase orders: PeopleSoft -> Procore ----------------------------------------------------
    def sync_purchase_orders(self, since: datetime | None) -> None:
        c = self.s.po_columns
        counts = self.ctx.result.kind(POS)
        start = self.window.start(self.state, POS, self.s.initial_since, since)
        end = self.ctx.now
        for rows, until in self.qas.read_window(self.s.po_query, start, end):
            groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
            for r in rows:
                groups.setdefault((_text(r.get(c.business_unit)), _text(r.get(c.po_id))), []).append(r)
            counts.read += len(groups)
            self.write_pos(groups)
            if not self.dry_run and self.window.advance(self.state, POS, until, since):
                self.state.watermarks_moved = True

    def _echo(self, key: tuple[str, str], rows: list[dict[str, Any]]) -> bool:
        """A PO the commitments flow made: note PeopleSoft-side edits on its link (for the two-sided rule)."""
        c = self.s.po_columns
        made = self.state.extra.get(MADE_POS, {}).get(encode_key(key))
        refs = {_text(r.get(c.po_ref)) for r in rows}
        if made is None and not any(ref.startswith(self.s.handle_prefix) for ref in refs):
            return False
        entry = self.state.entry(COMMITMENTS, made) if made else None
        if entry is not None and entry.get("ps_hash") and not self.dry_run:
            lines = [(r.get(c.line_nbr), _text(r.get(c.description))[:DESCR_MAX], r.get(c.quantity), r.get(c.price),
                      r.get(c.account), r.get(c.deptid), r.get(c.amount)) for r in rows]
            seen = ps_digest(_text(rows[0].get(c.vendor_id)), lines)
            changed = seen != entry["ps_hash"]
            if changed != bool(entry.get("ps_changed")):
                entry["ps_changed"] = changed
                self.state.dirty = True
        return True

    def write_pos(self, groups: dict[tuple[str, str], list[dict[str, Any]]]) -> None:
        """Map each PO and write the changed ones, batched per project: contract headers in one sync action
        (per API maximum), then each changed contract's line items."""
        counts = self.ctx.result.kind(POS)
        c = self.s.po_columns
        batches: dict[str, list[CommitmentWrite]] = {}
        for key, rows in sorted(groups.items()):
            skey = encode_key(key)
            if self._echo(key, rows):
                counts.unchanged += 1
                self.state.dequeue(POS, skey)
                continue
            link = self.state.entry(POS, skey)
            if _text(rows[0].get(c.status)) not in self.s.po_statuses and link is None:
                self.state.dequeue(POS, skey)
                continue
            vk = encode_key((_text(rows[0].get(c.vendor_setid)), _text(rows[0].get(c.vendor_id))))
            vlink = self.state.entry(VENDOR_LINKS, vk)
            try:
                w = map_po(self.s, self.xref, key, rows, vlink.get("id") if vlink else None, self.cost_code)
            except RecordError as exc:
                self.ctx.fail(POS, skey, {"rows": rows}, exc)
                continue
            if w is None:
                self.state.dequeue(POS, skey)
                continue
            if link is not None and link.get("ps_hash") == w.ps_hash:
                counts.unchanged += 1
                self.state.dequeue(POS, skey)
                continue
            if link is not None and not self._ps_change_wins(w, link, rows):
                continue
            batches.setdefault(w.project, []).append(w)
        for project, writes in sorted(batches.items()):
            self.ctx.check_deadline()
            self._write_commitments(project, writes, {w.key: groups[tuple(decode_key(w.key))] for w in writes})

    def _ps_change_wins(self, w: CommitmentWrite, link: dict[str, Any], rows: list[dict[str, Any]]) -> bool:
        """A PeopleSoft PO changed: if its commitment changed in Procore too, apply the conflict rule. A link
        whose last write did not finish (lines refused, kill between header and lines) has no confirmed Procore
        version: only PeopleSoft changed, and the PO is sent again (upserts by origin_id: no duplicate)."""
        if link.get("lines_unconfirmed") or not link.get("procore_hash"):
            return True
        try:
            current = self.procore.get_json(f"{self.pcfg.commitments_path}/{link['id']}",
                                            {"project_id": int(w.project)})
            lines = self.procore.all(f"{self.pcfg.commitments_path}/{link['id']}/line_items",
                                     {"project_id": int(w.project)})
        except RemoteError as exc:
            if exc.status == 404:
                return self._commitment_missing(w, link, rows)
            raise
        mine = [ln for ln in lines if _text(ln.get("origin_id")).startswith(LINE_HANDLE)]
        theirs = procore_digest(current, mine)
        if theirs == link.get("procore_hash"):
            return True  # only PeopleSoft changed
        rule, owner = self.s.conflict_rule, self.s.system_of_record
        ps_side = Side("peoplesoft", _when(w.stamp), w.ps_hash)
        pc_side = Side("procore", _when(_text(current.get("updated_at"))), theirs)
        winner = resolve_conflict(rule, owner, ps_side, pc_side)
        versions = {"peoplesoft": {"header": w.header, "lines": w.lines},
                    "procore": {"header": {k: current.get(k) for k in ("vendor_id", "number", "title", "status")},
                                "lines": mine}}
        if winner is None:
            from mlconnector.peoplesoft.po_sink import NeedsPerson

            self.ctx.fail(POS, w.key, {"rows": rows}, NeedsPerson(
                f"{w.title} and its Procore commitment {link['id']} both changed since the last sync, and "
                f"conflict_rule = \"manual\": nothing was written. A person makes them agree (both versions are in "
                f"the audit trail), then runs `mlconnector replay retry`.", json.dumps(versions, default=str)))
            return False
        self.audit.write("conflict", POS, w.key, winner=winner, rule=rule, commitment=link["id"],
                         other=json.dumps(versions["procore" if winner == "peoplesoft" else "peoplesoft"],
                                          default=str))
        if winner == "peoplesoft":
            return True
        link["ps_hash"] = w.ps_hash  # Procore's version stands; the PeopleSoft one is reported, not re-sent
        link["procore_hash"] = theirs
        self.state.dirty = True
        self.ctx.result.kind(POS).unchanged += 1
        return False

    def _commitment_missing(self, w: CommitmentWrite, link: dict[str, Any], rows: list[dict[str, Any]]) -> bool:
        """The linked commitment is not in the PO's project. origin_id is unique per company, so look it up in
        every mapped project: absent everywhere (deleted in Procore) -> True, the upsert by origin_id makes it
        again (once: the link then names the new one); in another project (the PO was re-coded) -> reported,
        because Procore cannot move a commitment between projects."""
        origin = w.header["origin_id"]
        where: list[tuple[str, dict[str, Any]]] = []
        for project in sorted(set(self.s.projects) | {_text(link.get("project"))} - {""}):
            try:
                found = self.procore.all(self.pcfg.commitments_path,
                                         {"project_id": int(project), "filters[origin_id]": origin})
            except RemoteError as exc:
                if exc.status in (403, 404):
                    continue  # a project this login cannot see holds nothing we can act on
                raise
            where.extend((project, c) for c in found if _text(c.get("origin_id")) == origin)
        elsewhere = [(p, c) for p, c in where if p != w.project]
        if elsewhere:
            p, c = elsewhere[0]
            self.ctx.fail(POS, w.key, {"rows": rows}, RecordError(
                f"{w.title} is now coded to Procore project {w.project}, but its commitment {c.get('id')} is in "
                f"project {p}, and Procore cannot move a commitment between projects. Nothing was written. Fix: "
                f"code the PO back to a cost center of project {p}, or delete commitment {c.get('id')} in Procore "
                f"project {p}; then run `mlconnector replay retry` (the commitment is made in project {w.project})."))
            return False
        if where:  # in the PO's own project under another id: the upsert by origin_id updates that one
            self.audit.write("relinked", POS, w.key, commitment=where[0][1].get("id"), was=link.get("id"),
                             project=w.project, why="found by origin_id")
        else:
            self.audit.write("commitment_gone", POS, w.key, commitment=link.get("id"), project=w.project,
                             why="not in any mapped project (origin_id lookup): written again")
        if not self.dry_run:
            link["lines_unconfirmed"] = True
            self.state.dirty = True
        return True

    def _write_commitments(self, project: str, writes: list[CommitmentWrite],
                           rows: dict[str, list[dict[str, Any]]]) -> None:
        counts = self.ctx.result.kind(POS)
        if self.dry_run:
            for w in writes:
                self.ctx.planned(POS, w.key, "update" if self.state.entry(POS, w.key) else "create",
                                 project=project, origin_id=w.header["origin_id"], lines=len(w.lines))
            return
        by_origin = {w.header["origin_id"]: w for w in writes}
        out = self.procore.sync(self.pcfg.commitments_path + SYNC_SUFFIX, {"project_id": int(project)},
                                [w.header for w in writes])
        from mlconnector.procore.client import sync_error_text

        ids: dict[str, Any] = {}
        for e in out.entities:
            if e.get("origin_id") in by_origin:
                ids[e["origin_id"]] = e.get("id")
        for err in out.errors:
            w = by_origin.get(err.get("origin_id"))
            if w is not None and w.header["origin_id"] not in ids:
                self.ctx.fail(POS, w.key, {"rows": rows[w.key]}, RecordError(
                    f"Procore refused the commitment for {w.title}: {sync_error_text(err)}. It is sent again on the "
                    f"next pass."))
        for origin, w in by_origin.items():
            cid = ids.get(origin)
            if cid is None:
                if not any(e.get("origin_id") == origin for e in out.errors):
                    self.ctx.fail(POS, w.key, {"rows": rows[w.key]}, RecordError(
                        f"Procore's sync answer did not mention {w.title}; it is sent again on the next pass."))
                continue
            link = self.state.entry(POS, w.key)
            new = link is None
            # The link first (a kill now re-sends the same upsert by origin_id: no duplicate).
            # ps_hash "" resends the PO next pass; "lines_unconfirmed" tells _ps_change_wins that no Procore
            # version was confirmed, so a half-written commitment is never mistaken for a Procore-side edit.
            self.state.set_entry(POS, w.key, {"id": cid, "project": project, "ps_hash": "",
                                              "procore_hash": (link or {}).get("procore_hash", ""),
                                              "lines_unconfirmed": True})
            lout = self.procore.sync(f"{self.pcfg.commitments_path}/{cid}/line_items{SYNC_SUFFIX}",
                                     {"project_id": int(project)}, w.lines)
            if lout.errors:
                self.ctx.fail(POS, w.key, {"rows": rows[w.key]}, RecordError(
                    f"Procore refused line(s) of the commitment for {w.title}: "
                    f"{'; '.join(sync_error_text(e) for e in lout.errors)}. The commitment is written again on the "
                    f"next pass."))
                continue
            self.state.set_entry(POS, w.key, {"id": cid, "project": project, "ps_hash": w.ps_hash,
                                              "procore_hash": w.procore_hash})
            if new:
                counts.created += 1
            else:
                counts.updated += 1
            self.audit.write("created" if new else "updated", POS, w.key, commitment=cid, project=project,
                             lines=len(w.lines))
            self.state.dequeue(POS, w.key)
        self.state.save()

    # -- commitments: Procore -> PeopleSoft --------------------------------------------------------
    def sync_commitments(self, since: datetime | None) -> None:
        counts = self.ctx.result.kind(COMMITMENTS)
        start = self.window.start(self.state, COMMITMENTS, self.s.initial_since, since)
        end = self.ctx.now
        rng = f"{_z(start)}...{_z(end)}"
        seen: set[str] = set()
        for project in sorted(self.s.projects):
            try:
                found = self.procore.all(self.pcfg.commitments_path,
                                         {"project_id": int(project), "filters[updated_at]": rng})
            except RemoteError as exc:
                if exc.status != 403:
                    raise
                self.ctx.kind_error(COMMITMENTS, exc)
                return  # the watermark stays: this project's commitments are read again next pass
            counts.read += len(found)
            for commitment in found:
                self.process_commitment(project, commitment, None)
                seen.add(_text(commitment.get("id")))
        self._webhook_commitments(seen)
        if not self.dry_run and self.window.advance(self.state, COMMITMENTS, end, since):
            self.state.watermarks_moved = True

    def _webhook_commitments(self, seen: set[str]) -> None:
        """Fetch the commitments webhook deliveries named that the window read did not already bring."""
        def fetch(project: str, rid: str) -> None:
            commitment = self.procore.get_json(f"{self.pcfg.commitments_path}/{rid}", {"project_id": int(project)})
            if isinstance(commitment, dict):
                self.ctx.result.kind(COMMITMENTS).read += 1
                self.process_commitment(project, commitment, None)

        self._webhook_events(lambda name: name not in DIRECT_COST_RESOURCES, seen, fetch)

    def _webhook_events(self, mine: Any, seen: set[str], fetch: Any) -> None:
        """Handle the spooled events whose resource name ``mine`` accepts: fetch each named record the window read
        did not bring (``fetch(project, id)``), then forget the event. Events of resources no flow reads are
        forgotten too."""
        book = self.state.extra.get(EVENTS) or {}
        for name, ev in sorted(book.items()):
            resource = _text(ev.get("resource_name"))
            if resource in self.pcfg.webhook_resources and not mine(resource):
                continue  # another flow's
            rid, project = _text(ev.get("resource_id")), _text(ev.get("project_id"))
            if resource in self.pcfg.webhook_resources and project in self.s.projects and rid not in seen \
                    and ev.get("event_type") != "delete":
                try:
                    fetch(project, rid)
                except RemoteError as exc:
                    if exc.status not in (403, 404):
                        raise  # kept: fetched again next pass
                seen.add(rid)
            if not self.dry_run:
                book.pop(name, None)
                self.state.dirty = True
        if not book:
            self.state.extra.pop(EVENTS, None)

    def process_commitment(self, project: str, commitment: dict[str, Any], lines: list[dict[str, Any]] | None,
                           *, forced: bool = False) -> None:
        counts = self.ctx.result.kind(COMMITMENTS)
        cid = _text(commitment.get("id"))
        key = encode_key((cid,))
        if _text(commitment.get("origin_id")).startswith(PO_HANDLE):
            counts.unchanged += 1  # made from a PeopleSoft PO by this pair: an echo
            return
        if _text(commitment.get("status")) not in self.s.approved_statuses:
            self.state.dequeue(COMMITMENTS, key)
            return
        entry = self.state.entry(COMMITMENTS, key)
        stamp = _text(commitment.get("updated_at"))
        queued = any(i["kind"] == COMMITMENTS and i["key"] == key for i in self.state.replay)
        if (entry is not None and entry.get("po") and not entry.get("pending") and entry.get("seen") == stamp
                and not queued and not forced):
            counts.unchanged += 1
            return
        if lines is None:
            lines = self.procore.all(f"{self.pcfg.commitments_path}/{cid}/line_items", {"project_id": int(project)})
        try:
            w = map_commitment(self.s, self.xref, project, commitment, lines,
                               dict((entry or {}).get("lines", {})), self.account_of, self.ctx.now.date())
        except RecordError as exc:
            self.ctx.fail(COMMITMENTS, key, {"project": project, "commitment": commitment, "lines": lines}, exc)
            return
        if entry is not None and entry.get("po") and not entry.get("pending") and entry.get("hash") != w.hash \
                and entry.get("ps_changed") and not self._procore_change_wins(w, entry, commitment):
            return
        self.writer.write(COMMITMENTS, w)
        done = self.state.entry(COMMITMENTS, key)
        if done is not None and done.get("po") and not done.get("pending") and not self.dry_run and not any(
                i["kind"] == COMMITMENTS and i["key"] == key for i in self.state.replay):
            done["seen"] = stamp
            done["ps_hash"] = w.hash
            done.pop("ps_changed", None)
            po = done["po"]
            po_key = encode_key((po.get(self.s.po.business_unit, ""), po.get(self.s.po.po_id, "")))
            self.state.extra.setdefault(MADE_POS, {})[po_key] = key
            self.state.dirty = True

    def _procore_change_wins(self, w: Any, entry: dict[str, Any], commitment: dict[str, Any]) -> bool:
        """A commitment changed and its PeopleSoft PO was edited in PeopleSoft too: apply the conflict rule."""
        rule, owner = self.s.conflict_rule, self.s.system_of_record
        winner = resolve_conflict(rule, owner, Side("procore", _when(_text(commitment.get("updated_at"))), w.hash),
                                  Side("peoplesoft", None, "ps"))
        po = "/".join(entry.get("po", {}).values())
        if winner is None:
            from mlconnector.peoplesoft.po_sink import NeedsPerson

            self.ctx.fail(COMMITMENTS, w.key, w.row, NeedsPerson(
                f"{w.title} and its PeopleSoft PO {po} both changed since the last sync, and conflict_rule = "
                f"\"manual\": nothing was written. A person makes them agree, then runs `mlconnector replay retry`.",
                json.dumps({"procore": w.row, "peoplesoft_po": po}, default=str)))
            return False
        self.audit.write("conflict", COMMITMENTS, w.key, winner=winner, rule=rule, po=po,
                         other=json.dumps(w.row if winner == "peoplesoft" else {"peoplesoft_po": po}, default=str))
        if winner == "procore":
            return True
        entry["hash"] = w.hash  # PeopleSoft's PO stands; Procore's version is reported, not written
        entry["seen"] = _text(commitment.get("updated_at"))
        entry.pop("ps_changed", None)
        self.state.dirty = True
        self.ctx.result.kind(COMMITMENTS).unchanged += 1
        return False


    # -- project costs: Procore -> PeopleSoft GL journals -----------------------------------------------
    def sync_direct_costs(self, since: datetime | None) -> None:
        """Approved direct costs changed in the window -> one balanced journal each, posted once."""
        start = self.window.start(self.state, DIRECT_COSTS, self.s.initial_since, since)
        end = self.ctx.now
        rng = f"{_z(start)}...{_z(end)}"
        seen: set[str] = set()
        for project in sorted(self.s.projects):
            try:
                found = self.procore.all(self.pcfg.direct_costs_path.format(project_id=project),
                                         {"filters[updated_at]": rng})
            except RemoteError as exc:
                if exc.status != 403:
                    raise
                self.ctx.kind_error(DIRECT_COSTS, exc)
                return
            self.ctx.result.kind(DIRECT_COSTS).read += len(found)
            backs: list[dict[str, Any]] = []
            for doc in found:
                self.post_cost(DIRECT_COSTS, project, doc, None, backs)
                seen.add(_text(doc.get("id")))
            self._origin_back(project, backs)
        by_project: dict[str, list[dict[str, Any]]] = {}

        def fetch(project: str, rid: str) -> None:
            doc = self.procore.get_json(f"{self.pcfg.direct_costs_path.format(project_id=project)}/{rid}")
            if isinstance(doc, dict):
                self.ctx.result.kind(DIRECT_COSTS).read += 1
                self.post_cost(DIRECT_COSTS, project, doc, None, by_project.setdefault(project, []))

        self._webhook_events(lambda name: name in DIRECT_COST_RESOURCES, seen, fetch)
        for project, backs in sorted(by_project.items()):
            self._origin_back(project, backs)
        if not self.dry_run and self.window.advance(self.state, DIRECT_COSTS, end, since):
            self.state.watermarks_moved = True

    def sync_change_orders(self, since: datetime | None) -> None:
        """Approved commitment change orders -> one balanced journal each. The list has no updated_at filter
        (reference procore.md section 4): it is read whole, and only new or changed ones cost a detail read."""
        for project in sorted(self.s.projects):
            try:
                found = self.procore.all(self.pcfg.change_orders_path.format(project_id=project))
            except RemoteError as exc:
                if exc.status not in (403, 404):
                    raise
                self.ctx.kind_error(CHANGE_ORDERS, exc)  # e.g. a 3-tier project: no commitment change orders
                continue
            self.ctx.result.kind(CHANGE_ORDERS).read += len(found)
            for doc in found:
                self.post_cost(CHANGE_ORDERS, project, doc, None, [])

    def _cost_account(self, cost_code_id: str, line_type: str) -> str | None:
        code = self.account_of(cost_code_id)
        table = self.s.cost_accounts
        for k in (f"{cost_code_id}|{line_type}", f"{code}|{line_type}" if code else "", cost_code_id, code or ""):
            if k and k in table:
                return table[k]
        return code

    def post_cost(self, kind: str, project: str, doc: dict[str, Any], lines: list[dict[str, Any]] | None,
                  backs: list[dict[str, Any]], *, forced: bool = False) -> None:
        """One approved direct cost or change order -> its journal through the journal writer (lookup by the
        reference field before every create; never changed once posted)."""
        from mlconnector.peoplesoft.journal_sink import JournalLine, build_journal

        statuses = self.s.direct_cost_statuses if kind == DIRECT_COSTS else self.s.change_order_statuses
        did = _text(doc.get("id"))
        key = encode_key((did,))
        if _text(doc.get("status")) not in statuses:
            self.state.dequeue(kind, key)
            return
        entry = self.state.entry(kind, key)
        stamp = _text(doc.get("updated_at"))
        queued = any(i["kind"] == kind and i["key"] == key for i in self.state.replay)
        if entry is not None and entry.get("journal") and not entry.get("pending") and entry.get("seen") == stamp \
                and not queued and not forced:
            self.ctx.result.kind(kind).unchanged += 1
            return
        noun = "direct cost" if kind == DIRECT_COSTS else "commitment change order"
        title = f"Procore {noun} {_text(doc.get('invoice_number') or doc.get('number')) or did} (project {project})"
        if lines is None:
            if kind == DIRECT_COSTS:
                lines = self.procore.all(self.pcfg.direct_cost_lines_path.format(project_id=project, id=did))
            else:
                detail = self.procore.get_json(f"{self.pcfg.change_orders_path.format(project_id=project)}/{did}")
                lines = [ln for ln in (detail.get("line_items") or []) if isinstance(ln, dict)] if isinstance(
                    detail, dict) else []
        row = {"project": project, "doc": doc, "lines": lines}
        ps_project, _, deptid = self.s.projects.get(project, "").partition("/")
        try:
            if not lines:
                raise RecordError(f"{title} has no cost lines; nothing to post. It is posted once lines are added.")
            debits = []
            for ln in lines:
                cc = _text(ln.get("cost_code_id") or (ln.get("cost_code") or {}).get("id"))
                account = self._cost_account(cc, _text(ln.get("line_item_type_id")))
                if account is None:
                    raise MissingReference("cost_account", cc, f"{SECTION}.cost_accounts",
                                           f"{title} (a line on cost code {cc})")
                amount = _dec(ln.get("amount"), "amount", title)
                debits.append(JournalLine(account, amount, deptid, ps_project, _text(ln.get("description"))))
            journal_date = _text(doc.get("direct_cost_date") or doc.get("due_date") or doc.get("created_at"))[:10]
            w = build_journal(key=key, business_unit=self.s.journal_business_unit or self.s.business_unit,
                              reference=f"{self.s.reference_prefix}{'dc' if kind == DIRECT_COSTS else 'cco'}-{did}",
                              journal_date=journal_date or self.ctx.now.date().isoformat(), ledger=self.s.ledger,
                              currency=self.s.currency, debits=debits,
                              offset=JournalLine(self.s.offset_account, Decimal(0), deptid, ps_project,
                                                 f"Procore {noun} {did}"), title=title, row=row)
        except RecordError as exc:
            self.ctx.fail(kind, key, row, exc)
            return
        posted = self.journals.write(kind, w)
        if posted is None or self.dry_run:
            return
        done = self.state.entry(kind, key)
        if done is not None:
            done["seen"] = stamp
            self.state.dirty = True
        origin = handle(JOURNAL_HANDLE, (posted.business_unit, posted.id))
        if kind == DIRECT_COSTS and self.s.journal_origin_back and _text(doc.get("origin_id")) != origin:
            backs.append({"id": doc.get("id"), "origin_id": origin, "_key": key})

    def _origin_back(self, project: str, backs: list[dict[str, Any]]) -> None:
        """The journal ids go back to their direct costs' origin_id (one sync action per project). A refusal is
        noted in the audit trail only: the journal is posted, and the next change of the cost tries again."""
        if not backs or self.dry_run:
            return
        from mlconnector.procore.client import sync_error_text

        keys = {str(b["id"]): b.pop("_key") for b in backs}
        try:
            out = self.procore.sync(self.pcfg.direct_costs_sync_path.format(project_id=project),
                                    {"project_id": int(project)}, backs)
        except RemoteError as exc:
            if exc.status != 403:
                raise
            self.audit.write("origin_back_refused", DIRECT_COSTS, error=exc.message)
            return
        for e in out.entities:
            entry = self.state.entry(DIRECT_COSTS, keys.get(str(e.get("id")), ""))
            if entry is not None:
                entry["seen"] = _text(e.get("updated_at"))  # our own write: not a change of the cost
                entry["origin_id"] = e.get("origin_id")
                self.state.dirty = True
        for err in out.errors:
            self.audit.write("origin_back_refused", DIRECT_COSTS, keys.get(str(err.get("id")), ""),
                             error=sync_error_text(err))
        self.state.save()


def _z(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _when(text: str) -> datetime | None:
    if not text:
        return None
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


# -- ping -----------------------------------------------------------------------------------------
def ping_checks(cfg: Config, secrets: SecretStore) -> list[Any]:
    """The PeopleSoft side of the pair: the vendor and project PO queries answer, and the PO CI has the
    operations and Find fields the lookup before create needs."""
    from mlconnector.checks import Check
    from mlconnector.errors import ConnectorError
    from mlconnector.peoplesoft.ci import ADMIN_CI, CIClient
    from mlconnector.peoplesoft.connect import peoplesoft_auth
    from mlconnector.peoplesoft.qas import QASClient

    if not configured(cfg):
        return []
    s = settings(cfg)
    out: list[Check] = []
    auth = peoplesoft_auth(cfg, secrets)
    qas = QASClient(cfg.peoplesoft, auth)
    try:
        now = datetime.now(UTC)
        for name, probe in ((f"query {s.po_query}", lambda: next(iter(qas.read_window(s.po_query, now - timedelta(
                hours=1), now)), None)),):
            try:
                probe()
                out.append(Check("PeopleSoft", name, True, "answered"))
            except ConnectorError as exc:
                out.append(Check("PeopleSoft", name, False, exc.message,
                                 f"Ask the PeopleSoft admin to create query {s.po_query} (PO distributions with "
                                 f"PROJECT_ID, prompts BIND1/BIND2 on LAST_DTTM_UPDATE), or set po_query in "
                                 f"[{SECTION}]."))
    finally:
        qas.close()
    client = CIClient(cfg.peoplesoft, auth)
    try:
        svc = client.service(s.po_ci)
        missing = [m for m in ("F", "G", "C") if m not in svc.operations]
        out.append(Check("PeopleSoft", f"operations CI_{s.po_ci}", not missing,
                         ", ".join(sorted(svc.operations.values())) if not missing else f"missing {', '.join(missing)}",
                         f"Ask the PeopleSoft admin to include Find, Get, Create and UpdateData in CI_{s.po_ci} "
                         f"({ADMIN_CI})."))
    except ConnectorError as exc:
        out.append(Check("PeopleSoft", f"WSDL CI_{s.po_ci}", False, exc.message,
                         f"Set po_ci in [{SECTION}] or ask the admin to generate CI_{s.po_ci} ({ADMIN_CI})."))
    finally:
        client.close()
    if s.offset_account:
        from mlconnector.peoplesoft.journal_sink import journal_checks

        client = CIClient(cfg.peoplesoft, auth)
        try:
            out += journal_checks(client, s.journal, s.journal_business_unit or s.business_unit, SECTION)
        finally:
            client.close()
    return out


from mlconnector.pairs.peoplesoft_procore_reconcile import reconcile_scope  # noqa: E402,F401  (reconcile)
