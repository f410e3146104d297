"""`sync peoplesoft-jaggaer`: suppliers both ways, requisitions PeopleSoft -> JAGGAER, purchase orders (and,
once the voucher writer is there, invoices) JAGGAER -> PeopleSoft. One pass, reference data first.

Flows, in this order (sync/echo.py's rule: reference data before the documents that use them):
- ``suppliers``: the PeopleSoft vendor master (read in full: PS_VENDOR has no change stamp), diffed by content
  hash, reaches the JAGGAER company profile whose ``extCode`` (configurable) is VENDOR_ID. Looked up by that
  key before every create; the profile id is learned into the vendor crosswalk.
- ``jaggaer_suppliers``: JAGGAER profiles changed since the watermark. Our own writes coming back are echoes
  (content hash equal to what was written) and are dropped; a profile carrying an ``extCode`` links itself;
  a person's change to a linked profile is overwritten by PeopleSoft, the vendor master's owner, on the next
  pass; a JAGGAER-only supplier (no ``extCode``, not mapped) is created in PeopleSoft through the supplier CI
  ``VNDR_ID`` (peoplesoft/vendor_sink.py: looked up by its handle ``JGRS-<supplier id>`` in VENDOR_NAME_SHORT
  before every create, pending mark saved before the Create, a lost answer adopted next pass), the pair is
  learned into the vendor crosswalk, and the new VENDOR_ID is written to the profile's ``extCode`` (recorded
  first as our own write, so the profile read back is an echo). Its POs then post in the same pass.
  ``create_vendors = false`` makes it wait, with its reason, until it is mapped.
- ``requisitions``: PeopleSoft requisitions in the configured statuses (QAS window; lines from a second query
  read from the oldest requisition date read, never header-only when it is configured; without it one line with
  the default account code) become JAGGAER requisitions whose external requisition number
  is the handle carrying BUSINESS_UNIT and REQ_ID, looked up before every create; business units mapped.
- ``purchase_orders``: JAGGAER POs in the configured statuses go through the PO CI (peoplesoft/po_sink.py): PO_REF
  carries the JAGGAER PO number, a revision updates the same PO, account codes and units go through the
  crosswalk, and an unmapped value waits.

Transport: POs and invoices are read from JAGGAER's REST lists, or, with ``po_transport`` / ``invoice_transport``
= "cxml", from the spool of the cXML receiver (jaggaer/cxml.py: ``mlconnector cxml serve``), moved into the state
before the spool is emptied and removed from it only once posted or queued; the flows are the same.

Every create on JAGGAER is marked pending (and the state saved) before the request leaves; a lost answer
leaves the mark and the next pass looks the record up by its handle first. HTTP 200 with ``returnCode`` != 0
is a failure: the record is queued, never counted as synced.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from mlconnector.audit import Audit, Redactor
from mlconnector.config import Config
from mlconnector.credentials import SecretStore
from mlconnector.errors import AmbiguousWriteError, ConfigError, RecordError, RemoteError
from mlconnector.jaggaer.client import pick
from mlconnector.pairs.peoplesoft_jaggaer_config import SECTION, PairSettings
from mlconnector.state import State
from mlconnector.sync.engine import PassContext, PassResult, Progress, no_progress, run_pass
from mlconnector.sync.keys import encode_key, handle
from mlconnector.sync.links import mark_pending, pending_since
from mlconnector.sync.window import WindowRule
from mlconnector.sync.xref import Crosswalk, MissingReference

PAIR = "peoplesoft-jaggaer"
SUPPLIERS = "suppliers"
JSUPPLIERS = "jaggaer_suppliers"
REQS = "requisitions"
POS = "purchase_orders"
INVOICES = "invoices"
KINDS = (SUPPLIERS, JSUPPLIERS, REQS, POS, INVOICES)
CXML_INBOX = "peoplesoft-jaggaer-cxml"  # state.extra: cXML documents moved from the receiver's spool, not yet posted
PSVENDORS = "ps_vendors"  # links JAGGAER supplier id -> the PeopleSoft supplier created for it (VNDR_ID)
DESCR_MAX = 254


def settings(cfg: Config) -> PairSettings:
    s = cfg.sections.get(SECTION)
    if s is None:
        raise ConfigError(f"{cfg.path} has no [{SECTION}] section, which `sync {PAIR}` needs. Copy it from "
                          f"examples/peoplesoft-jaggaer.toml and set buyer_id, business_units and the crosswalks.")
    return s


def configured(cfg: Config) -> bool:
    return "jaggaer" in cfg.sections and SECTION in cfg.sections and cfg.ps is not None


# -- mapping (pure) -------------------------------------------------------------------------------
def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=_canon).encode()).hexdigest()[:20]


def _canon(value: Any) -> str:
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return str(value)


def _decimal(raw: Any, what: str, title: str) -> Decimal:
    try:
        # JSON numbers are read through their shortest text form (never binary float arithmetic).
        d = Decimal(repr(raw) if isinstance(raw, float) else str(raw).strip()) if raw not in (None, "") else None
    except InvalidOperation:
        d = None
    if d is None or not d.is_finite():
        raise RecordError(f"{title}: no valid {what} ({raw!r}); it is held until the source sends one.")
    return d


def supplier_info(s: PairSettings, row: dict[str, Any]) -> dict[str, str]:
    """The JAGGAER company-profile fields a PeopleSoft vendor row sets (the profile's key field included)."""
    f = s.supplier
    status = "ACTIVE" if _text(row.get("VENDOR_STATUS")) in s.vendor_statuses else "INACTIVE"
    return {f.key: _text(row.get("VENDOR_ID")), f.name: _text(row.get("NAME1")), f.city: _text(row.get("CITY")),
            f.country: _text(row.get("COUNTRY"))[:2] if len(_text(row.get("COUNTRY"))) == 2 else
            _iso2(_text(row.get("COUNTRY"))), "status": status}


def _iso2(country: str) -> str:
    # PeopleSoft stores ISO 3166 alpha-3; company profiles use alpha-2 (isoCountry).
    return {"USA": "US", "CAN": "CA", "MEX": "MX", "GBR": "GB", "DEU": "DE", "FRA": "FR"}.get(country, country)


def _iso3(country: str) -> str:
    # Company profiles hold ISO 3166 alpha-2; PS_VENDOR's COUNTRY holds alpha-3.
    back = {"US": "USA", "CA": "CAN", "MX": "MEX", "GB": "GBR", "DE": "DEU", "FR": "FRA"}
    return back.get(country, country if len(country) == 3 else "")


def profile_facts(s: PairSettings, profile: dict[str, Any]) -> dict[str, str]:
    """What a profile holds of the fields we write (compared to tell our echo from a person's change)."""
    f = s.supplier
    return {k: _text(pick(profile, k)) for k in (f.key, f.name, f.city, f.country, "status")}


def requisition_body(s: PairSettings, xref: Crosswalk, row: dict[str, Any], lines: list[dict[str, Any]],
                     handle_value: str) -> dict[str, Any]:
    """A PeopleSoft requisition (header row + optional line rows) -> the JAGGAER requisition body."""
    bu, req = _text(row.get("BUSINESS_UNIT")), _text(row.get("REQ_ID"))
    title = f"PeopleSoft requisition {bu}/{req}"
    jbu = s.business_units.get(bu)
    if jbu is None:
        raise MissingReference("business_unit", bu, PairSettings.CONFIG_KEYS["business_unit"], title)
    currency = _text(row.get("CURRENCY_CD")).upper() or "USD"
    out_lines: list[dict[str, Any]] = []
    by_account = {v: k for k, v in s.accounts.items()}
    if lines:
        for ln in sorted(lines, key=lambda r: int(_text(r.get("LINE_NBR")) or 0)):
            nbr = _text(ln.get("LINE_NBR"))
            qty = _decimal(ln.get("QTY_REQ"), f"quantity on line {nbr}", title)
            price = _decimal(ln.get("PRICE_REQ"), f"price on line {nbr}", title)
            acct = f"{_text(ln.get('ACCOUNT'))}/{_text(ln.get('DEPTID'))}"
            code = by_account.get(acct) or s.default_account_code
            out_lines.append({"lineNumber": int(nbr or 0), "description": _text(ln.get("DESCR254")) or _text(
                row.get("DESCR254")), "quantity": qty, "unitOfMeasure": _text(ln.get("UNIT_OF_MEASURE")) or
                s.default_unit, "unitPrice": {"currency": currency, "money": price}, "accountCode": code})
    else:
        # Header-only query: one line for the requisition's amount on the default account code.
        amount = _decimal(row.get("AMOUNT"), "amount", title)
        out_lines.append({"lineNumber": 1, "description": _text(row.get("DESCR254")) or f"Requisition {req}",
                          "quantity": Decimal(1), "unitOfMeasure": s.default_unit,
                          "unitPrice": {"currency": currency, "money": amount}, "accountCode": s.default_account_code})
    for ln in out_lines:
        if ln["quantity"] <= 0:
            raise RecordError(f"{title}: line {ln['lineNumber']} has quantity {ln['quantity']}; JAGGAER needs a "
                              f"positive quantity. Fix the requisition in PeopleSoft.")
    body: dict[str, Any] = {s.requisition_handle_field: handle_value, "businessUnit": jbu,
                            "description": _text(row.get("DESCR254")), "requester": _text(row.get("REQUESTOR_ID")),
                            "currency": currency, "lines": out_lines}
    vendor = _text(row.get("VENDOR_ID"))
    if vendor:
        body["supplier"] = {s.supplier.key: vendor}
    return body


def map_po(s: PairSettings, xref: Crosswalk, po: dict[str, Any], today: date, ref: str | None = None) -> Any:
    """A JAGGAER purchase order -> a POWrite. RecordError for bad input, MissingReference for an unmapped value
    (the PO waits: never posted in part). ``ref``: the PO_REF the PO already carries in PeopleSoft, when it was
    written under another one (an earlier po_handle_prefix); otherwise prefix + number."""
    from mlconnector.peoplesoft.po_sink import POWrite

    src, p = s.po_source, s.po
    number = _text(pick(po, src.number))
    title = f"JAGGAER PO {number} (revision {_text(pick(po, src.revision)) or '0'})"
    ref = ref or f"{s.po_handle_prefix}{number}"
    if not number or len(ref) > s.handle_max:
        raise RecordError(f"{title}: the PO reference {ref!r} does not fit {p.handle} ({s.handle_max} characters); "
                          f"it is not cut. Shorten po_handle_prefix in [{SECTION}].")
    ps_bu = xref.need("business_unit", _text(pick(po, src.business_unit)), title)
    supplier_id = _text(pick(po, src.supplier_id))
    vendor_id = xref.get("vendor", supplier_id) or _text(pick(po, src.supplier_key))
    if not vendor_id:
        name = _text(pick(po, src.supplier_name))
        how = ("its PeopleSoft supplier is created through VNDR_ID by the supplier flow; see that failure" if
               s.create_vendors else "create_vendors = false, so create the vendor in PeopleSoft and set the "
               f"profile's {s.supplier.key} to its VENDOR_ID, or map it")
        raise MissingReference("vendor", supplier_id, PairSettings.CONFIG_KEYS["vendor"],
                               f"{title}: its supplier {name or supplier_id} is JAGGAER-only (no {s.supplier.key}, "
                               f"not linked to a PeopleSoft vendor; {how}). The PO")
    currency = _text(pick(po, src.currency)).upper()
    if currency not in s.currencies:
        raise RecordError(f"{title}: currency {currency!r} is not one PeopleSoft knows for business unit {ps_bu} "
                          f"(currencies in [{SECTION}]: {', '.join(s.currencies)}). It is not replaced.")
    places = Decimal(1).scaleb(-s.amount_places)
    raw_lines = pick(po, src.lines) or []
    if isinstance(raw_lines, dict):
        raw_lines = [raw_lines]
    if not raw_lines:
        raise RecordError(f"{title} has no lines; a PeopleSoft PO needs one. Nothing was posted.")
    lines: list[dict[str, Any]] = []
    for ln in raw_lines:
        nbr = _text(pick(ln, src.line_number))
        what = f"{title} line {nbr}"
        qty = _decimal(pick(ln, src.quantity), "quantity", what)
        price = _decimal(pick(ln, src.price), "unit price", what)
        if qty <= 0 or price < 0:
            raise RecordError(f"{what}: quantity {qty}, price {price}; a PO line needs a positive quantity and a "
                              f"price of at least zero. The PO is not posted in part.")
        descr = _text(pick(ln, src.description))
        if len(descr) > DESCR_MAX:
            raise RecordError(f"{what}: the description is {len(descr)} characters, longer than {p.description} "
                              f"({DESCR_MAX}); it is not cut.")
        unit = xref.need("unit", _text(pick(ln, src.unit)), what)
        code = _text(pick(ln, src.account_code))
        account, _, deptid = xref.need("account", code, f"{what} (account code {code})").partition("/")
        amount = (qty * price).quantize(places, rounding=ROUND_HALF_UP)
        lines.append({p.line_nbr: int(nbr) if nbr.isdigit() else nbr, p.description: descr, p.unit: unit,
                      p.quantity: qty, p.price: price,
                      p.distributions: [{p.distrib_nbr: 1, p.account: account, p.deptid: deptid,
                                         p.distrib_quantity: qty, p.amount: amount}]})
    header = {p.business_unit: ps_bu, p.handle: ref, p.vendor_setid: s.vendor_setid, p.vendor_id: vendor_id,
              p.buyer: s.buyer_id, p.currency: currency}
    return POWrite(key=encode_key((number,)), handle=ref, vendor_id=vendor_id, business_unit=ps_bu,
                   header={**header, p.po_date: today}, lines=lines, hash=digest([header, lines]), row=po,
                   title=title, extra={"number": number, "accounts": {
                       str(ln[p.line_nbr]): f"{ln[p.distributions][0][p.account]}/{ln[p.distributions][0][p.deptid]}"
                       for ln in lines}})


def map_invoice(s: PairSettings, xref: Crosswalk, state: State, inv: dict[str, Any]) -> Any:
    """A JAGGAER invoice -> a VoucherWrite matched to the PeopleSoft PO made from its JAGGAER PO (the writer makes
    it wait while that PO is not linked). INVOICE_ID is the supplier's invoice number: what PeopleSoft's
    duplicate-invoice check compares."""
    from mlconnector.peoplesoft.voucher_sink import VoucherLine, VoucherWrite

    src = s.invoice_source
    inv_id = _text(pick(inv, src.id))
    number = _text(pick(inv, src.supplier_invoice_number))
    po_number = _text(pick(inv, src.po_number))
    title = f"JAGGAER invoice {number or '?'} (id {inv_id})"
    if not po_number:
        raise RecordError(f"{title} names no purchase order; non-PO invoices are not posted by this version. Enter "
                          f"it in PeopleSoft by hand, then `mlconnector replay drop` it.")
    po_key = encode_key((po_number,))
    po_entry = state.entry(POS, po_key) or {}
    vendor = _text(po_entry.get("vendor")) or xref.get("vendor", _text(pick(inv, src.supplier_id))) or ""
    if not vendor or not po_entry.get("po") or po_entry.get("pending"):
        from mlconnector.peoplesoft.voucher_sink import POWaiting

        raise POWaiting(po_key, POS, f"{title} (JAGGAER PO {po_number})")
    accounts = po_entry.get("accounts") or {}
    raw_lines = pick(inv, src.lines) or []
    if isinstance(raw_lines, dict):
        raw_lines = [raw_lines]
    lines = []
    for ln in raw_lines:
        po_line = _text(pick(ln, src.po_line_number))
        what = f"{title} line {_text(pick(ln, src.line_number))}"
        acct = accounts.get(po_line)
        if acct is None:
            raise RecordError(f"{what} refers to line {po_line!r} of JAGGAER PO {po_number}, which the PeopleSoft PO "
                              f"does not have; it is not posted unmatched. A person must check the invoice.")
        account, _, deptid = acct.partition("/")
        raw_amount = pick(ln, src.amount)
        amount = (_decimal(raw_amount, "amount", what) if raw_amount not in (None, "") else
                  _decimal(pick(ln, src.quantity), "quantity", what) * _decimal(pick(ln, src.price), "price", what))
        lines.append(VoucherLine(amount=amount.quantize(Decimal(1).scaleb(-s.amount_places), ROUND_HALF_UP),
                                 account=account, deptid=deptid, description=_text(pick(ln, src.description)),
                                 po_line=int(po_line) if po_line.isdigit() else po_line))
    gross = _decimal(pick(inv, src.total), "total", title).quantize(Decimal(1).scaleb(-s.amount_places),
                                                                    ROUND_HALF_UP)
    bu = _text((po_entry.get("po") or {}).get(s.po.business_unit)) or _text(po_entry.get("business_unit"))
    return VoucherWrite(key=encode_key((inv_id,)), business_unit=bu, vendor_setid=s.vendor_setid, vendor_id=vendor,
                        invoice_id=number, invoice_date=_text(pick(inv, src.invoice_date))[:10], gross_amount=gross,
                        currency=_text(pick(inv, src.currency)).upper(), lines=lines, title=title, row=inv,
                        po_key=po_key, extra={"number": number})


# -- wiring ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def connect(cfg: Config, secrets: SecretStore, redactor: Redactor, *, refresh_wsdl: bool = False) -> Iterator[Any]:
    """(JAGGAER client, PeopleSoft QAS client, PeopleSoft CI client), open for one command."""
    from mlconnector.jaggaer.client import SECRET, JaggaerClient, JaggaerToken, token_cache_for
    from mlconnector.peoplesoft.ci import CIClient
    from mlconnector.peoplesoft.connect import peoplesoft_auth
    from mlconnector.peoplesoft.qas import QASClient

    jcfg = cfg.sections["jaggaer"]
    secret = secrets.get(SECRET)
    redactor.add(secret)
    ps_auth = peoplesoft_auth(cfg, secrets)
    jaggaer = JaggaerClient(jcfg, JaggaerToken(jcfg, secret, token_cache_for(jcfg, cfg.instance), redactor=redactor))
    qas = QASClient(cfg.peoplesoft, ps_auth)
    ci = CIClient(cfg.peoplesoft, ps_auth, refresh=refresh_wsdl)
    try:
        yield jaggaer, qas, ci
    finally:
        ci.close()
        qas.close()
        jaggaer.close()


def make_pass(cfg: Config, clients: Any, state: State, audit: Audit, *, dry_run: bool = False,
              progress: Progress = no_progress, kinds: list[str] | None = None) -> PeopleSoftJaggaerPass:
    jaggaer, qas, ci = clients
    return PeopleSoftJaggaerPass(cfg, state, jaggaer, qas, ci, audit, dry_run=dry_run, progress=progress,
                                 kinds=kinds)


def before_replay(steps: PeopleSoftJaggaerPass, items: list[dict[str, Any]]) -> None:
    """Nothing to refresh: a retried record is mapped again from its queued source copy."""
    return None


class PeopleSoftJaggaerPass:
    """The engine's steps for this pair (sync/engine.py PassSteps); entities in ``KINDS`` order."""

    def __init__(self, cfg: Config, state: State, jaggaer: Any, qas: Any, ci: Any, audit: Audit, *,
                 dry_run: bool = False, progress: Progress = no_progress, now: datetime | None = None,
                 kinds: list[str] | None = None) -> None:
        from mlconnector.peoplesoft.po_sink import PONames, POWriter

        self.cfg = cfg
        self.s = settings(cfg)
        self.jcfg = cfg.sections["jaggaer"]
        self.state = state
        self.jaggaer = jaggaer
        self.qas = qas
        self.ci = ci
        self.audit = audit
        self.dry_run = dry_run
        self.only = list(kinds) if kinds else None
        self.ctx = PassContext(PAIR, state, audit, dry_run=dry_run, progress=progress,
                               **({"now": now} if now else {}))
        self.jwindow = WindowRule(timedelta(minutes=self.jcfg.overlap_minutes))
        self.pswindow = WindowRule(timedelta(minutes=cfg.peoplesoft.overlap_minutes))
        self.xref = Crosswalk(state, self.s.crosswalk_tables(), PairSettings.CONFIG_KEYS)
        p = self.s.po
        self.names = PONames(ci=self.s.po_ci, business_unit=p.business_unit, po_id=p.po_id, handle=p.handle,
                             vendor_id=p.vendor_id, status=p.status, lines=p.lines, line_nbr=p.line_nbr,
                             distributions=p.distributions, distrib_nbr=p.distrib_nbr,
                             updatable_statuses=tuple(self.s.updatable_statuses), create_only=(p.po_date,))
        self.writer = POWriter(self.ctx, ci, self.names, grace_seconds=self.s.pending_grace_seconds)
        self.vouchers: Any = None
        try:
            from mlconnector.peoplesoft.voucher_sink import VoucherNames, VoucherWriter
        except ImportError:  # the shared voucher writer is not in this build: invoices wait (see blocked)
            pass
        else:
            self.vouchers = VoucherWriter(self.ctx, ci, VoucherNames(ci=self.s.voucher_ci), po_kind=POS,
                                          grace_seconds=self.s.pending_grace_seconds)
        from mlconnector.peoplesoft.vendor_sink import VendorWriter

        self.vnames = self.s.vendor_fields
        self.vendor_writer = VendorWriter(self.ctx, ci, self.vnames, kind=PSVENDORS,
                                          grace_seconds=self.s.pending_grace_seconds)

    # -- the engine's steps ----------------------------------------------------------------------
    def prepare(self) -> None:
        return None

    def resolve_pending(self) -> None:
        if self.state.pending(POS):
            self.writer.resolve_pending(POS)
        if self.vouchers is not None and self.state.pending(INVOICES):
            self.vouchers.resolve_pending(INVOICES)
        f = self.s.supplier
        self._resolve_jaggaer(SUPPLIERS, lambda h: self.jaggaer.find(self.jcfg.suppliers, f.key, h),
                              lambda rec: _text(pick(rec, f.id)))
        self._resolve_jaggaer(REQS, lambda h: self.jaggaer.find(self.jcfg.requisitions,
                                                                self.s.requisition_handle_field, h),
                              lambda rec: _text(rec.get("requisitionId")))

    def entities(self) -> list[str]:
        return [k for k in KINDS if self.only is None or k in self.only]

    def blocked(self, entity: str) -> str | None:
        if entity == INVOICES and self.vouchers is None:
            return ("invoices are not posted: this build has no PeopleSoft voucher writer "
                    "(mlconnector/peoplesoft/voucher_sink.py)")
        return None

    def replay_kinds(self) -> list[str]:
        # A supplier's PeopleSoft vendor before the POs waiting for it.
        return [SUPPLIERS, JSUPPLIERS, PSVENDORS, REQS, POS, INVOICES]

    def requests(self) -> dict[str, int]:
        return {"jaggaer": self.jaggaer.requests_made,
                "peoplesoft": self.qas.http.requests_made + self.ci.http.requests_made}

    def run(self, since: datetime | None = None) -> PassResult:
        return run_pass(self, since)

    def sync_entity(self, entity: str, since: datetime | None) -> None:
        {SUPPLIERS: self._sync_suppliers, JSUPPLIERS: self._sync_jaggaer_suppliers, REQS: self._sync_requisitions,
         POS: self._sync_purchase_orders, INVOICES: self._sync_invoices}[entity](since)

    def retry(self, item: dict[str, Any]) -> None:
        kind, row = item["kind"], item.get("row") or {}
        if kind == SUPPLIERS:
            self._supplier(row)
        elif kind in (JSUPPLIERS, PSVENDORS):
            self._jaggaer_supplier(row)
        elif kind == REQS:
            header, lines = row.get("header") or {}, row.get("lines") or []
            if self.s.requisition_lines_query and not lines and header:
                key = encode_key((_text(header.get("BUSINESS_UNIT")), _text(header.get("REQ_ID"))))
                lines = self._requisition_lines({key: header}, self.ctx.now, self.ctx.now).get(key, [])
            self._requisition(header, lines)
        elif kind == POS:
            self._purchase_order(row)
        elif kind == INVOICES and self.vouchers is not None:
            self._invoice(row)
        else:
            self.state.dequeue(kind, item["key"])

    # -- creates on JAGGAER ----------------------------------------------------------------------
    def _young(self, entry: dict[str, Any]) -> float:
        since = pending_since(entry)
        grace = self.s.pending_grace_seconds
        if grace <= 0 or since is None:
            return 0.0
        return max(0.0, grace - (self.ctx.now - since).total_seconds())

    def _resolve_jaggaer(self, kind: str, lookup: Callable[[str], list[dict[str, Any]]],
                         id_of: Callable[[dict[str, Any]], str]) -> None:
        """Settle JAGGAER creates left pending (lost answer, kill): adopt what JAGGAER holds under the handle, or
        drop the mark when the lookup finds nothing (only once no earlier request can still land)."""
        changed = False
        for key in self.state.pending(kind):
            entry = self.state.entry(kind, key)
            if entry is None or self._young(entry):
                continue
            try:
                found = lookup(entry.get("handle", ""))
            except RemoteError as exc:
                self.audit.write("pending_lookup_failed", kind, key, error=self.audit.redactor(exc.message))
                continue
            if len(found) == 1:
                entry["id"] = id_of(found[0])
                entry.pop("pending", None)
                entry.pop("pending_at", None)
                entry["adopted"] = True
                self.audit.write("adopted", kind, key, id=entry["id"], why="pending create found by handle")
                self._learn(kind, entry)
            elif not found:
                if entry.get("id"):
                    entry.pop("pending", None)
                    entry.pop("pending_at", None)
                else:
                    self.state.drop_entry(kind, key)
                self.audit.write("pending_cleared", kind, key, why="not in JAGGAER (lookup by handle)")
            else:
                continue  # several: the write path reports the conflict for a person
            changed = True
        if changed:
            self.state.dirty = True
            if not self.dry_run:
                self.state.save()

    def _learn(self, kind: str, entry: dict[str, Any]) -> None:
        if kind == SUPPLIERS and entry.get("id") and entry.get("handle"):
            self.xref.learn("vendor", entry["id"], entry["handle"])
            if entry.get("written"):
                self.state.set_entry(JSUPPLIERS, entry["id"], {"vendor": entry["handle"], "hash": entry["written"]})

    def _create_on_jaggaer(self, kind: str, key: str, row: dict[str, Any], handle_value: str, title: str,
                           lookup: Callable[[], list[dict[str, Any]]], id_of: Callable[[dict[str, Any]], str],
                           send: Callable[[], dict[str, Any]], extra: dict[str, Any]) -> str | None:
        """Look up by handle, adopt or create once; returns "created" / "adopted" / None (failed or waiting)."""
        counts = self.ctx.result.kind(kind)
        entry = self.state.entry(kind, key)
        if entry is not None and entry.get("pending"):
            left = self._young(entry)
            if left:
                self.ctx.fail(kind, key, row, RecordError(
                    f"{title}: an earlier create lost its answer and may still land in JAGGAER. Nothing is sent "
                    f"until {self.s.pending_grace_seconds:.0f} s have passed (pending_grace_seconds in [{SECTION}]); "
                    f"then it is looked up by {handle_value!r} first."))
                return None
        try:
            found = lookup()
        except RemoteError as exc:
            self.ctx.fail(kind, key, row, exc)
            return None
        if len(found) > 1:
            ids = ", ".join(id_of(r) for r in found)
            self.ctx.fail(kind, key, row, RecordError(
                f"{title}: {len(found)} JAGGAER records carry {handle_value!r} ({ids}). Nothing was created: a "
                f"person must decide which one is ours (remove the key from the others), then run "
                f"`mlconnector replay retry`."))
            return None
        if found:
            if self.dry_run:
                counts.adopted += 1
                self.ctx.planned(kind, key, "adopt", handle=handle_value)
                return "adopted"
            entry = {**extra, "id": id_of(found[0]), "handle": handle_value, "adopted": True}
            self.state.set_entry(kind, key, entry)
            self.audit.write("adopted", kind, key, id=entry["id"], why="found by handle")
            counts.adopted += 1
            return "adopted"
        if self.dry_run:
            counts.created += 1
            self.ctx.planned(kind, key, "create", handle=handle_value)
            return "created"
        entry = mark_pending({**extra, "handle": handle_value})
        self.state.set_entry(kind, key, entry)
        self.state.save()  # the mark is on disk before the request leaves
        try:
            answer = send()
        except AmbiguousWriteError as exc:
            self.ctx.fail(kind, key, row, AmbiguousWriteError(
                f"{title}: JAGGAER's answer to the create was lost ({exc.message}). It was not sent again; the next "
                f"pass looks it up by {handle_value!r} before anything is created.", system=exc.system, raw=exc.raw,
                retryable=True))
            return None
        except RemoteError as exc:
            # JAGGAER answered (an HTTP error, or returnCode != 0 inside HTTP 200): nothing was created.
            self.state.drop_entry(kind, key)
            self.ctx.fail(kind, key, row, exc)
            return None
        entry = self.state.entry(kind, key) or entry
        entry["id"] = id_of(answer)
        entry.pop("pending", None)
        entry.pop("pending_at", None)
        self.state.dirty = True
        counts.created += 1
        self.audit.write("created", kind, key, id=entry["id"], handle=handle_value)
        self.state.save()
        return "created"

    # -- suppliers: PeopleSoft -> JAGGAER -------------------------------------------------------
    def _sync_suppliers(self, since: datetime | None) -> None:
        counts = self.ctx.result.kind(SUPPLIERS)
        for rows in self.qas.read_all(self.s.vendor_query):
            for row in rows:
                if _text(row.get("SETID")) not in ("", self.s.vendor_setid):
                    continue
                counts.read += 1
                self._supplier(row)

    def _supplier(self, row: dict[str, Any]) -> None:
        counts = self.ctx.result.kind(SUPPLIERS)
        f = self.s.supplier
        vid = _text(row.get("VENDOR_ID"))
        key = encode_key((self.s.vendor_setid, vid))
        info = supplier_info(self.s, row)
        h = digest(info)
        entry = self.state.entry(SUPPLIERS, key)
        queued = any(i["kind"] == SUPPLIERS and i["key"] == key for i in self.state.replay)
        linked = entry is not None and entry.get("id") and not entry.get("pending")
        if linked and entry.get("hash") == h and not queued:  # type: ignore[union-attr]
            counts.unchanged += 1
            return
        if not linked and info["status"] != "ACTIVE":
            counts.unchanged += 1  # an inactive vendor never used in JAGGAER is not sent
            if not self.dry_run:
                self.state.dequeue(SUPPLIERS, key)
            return
        title = f"PeopleSoft vendor {vid} ({info[f.name]})"
        if linked:
            self._update_supplier(key, row, entry, info, h, title)  # type: ignore[arg-type]
            return
        written = digest(profile_facts(self.s, info))
        result = self._create_on_jaggaer(
            SUPPLIERS, key, row, vid, title,
            lookup=lambda: self.jaggaer.find(self.jcfg.suppliers, f.key, vid),
            id_of=lambda rec: _text(pick(rec, f.id)),
            send=lambda: self.jaggaer.call("POST", self.jcfg.suppliers.path, idempotent=False,
                                           body={"operationCode": "CREATE", "company": {"companyInfo": info}}),
            extra={"hash": h, "written": written})
        if result is None or self.dry_run:
            return
        entry = self.state.entry(SUPPLIERS, key) or {}
        if result == "adopted":
            entry["hash"] = ""  # found by key: its profile is brought to PeopleSoft's values below
            self._update_supplier(key, row, entry, info, h, title, adopted=True)
            return
        self._learn(SUPPLIERS, entry)
        self.state.dequeue(SUPPLIERS, key)

    def _update_supplier(self, key: str, row: dict[str, Any], entry: dict[str, Any], info: dict[str, str], h: str,
                         title: str, *, adopted: bool = False) -> None:
        counts = self.ctx.result.kind(SUPPLIERS)
        f = self.s.supplier
        if self.dry_run:
            counts.updated += 1
            self.ctx.planned(SUPPLIERS, key, "update", id=entry.get("id"))
            return
        written = digest(profile_facts(self.s, info))
        # Recorded before the request: if the write lands and its answer is lost, the profile read back next is
        # still recognised as our own echo.
        entry["written"] = written
        self.state.set_entry(JSUPPLIERS, entry["id"], {"vendor": entry["handle"], "hash": written})
        try:
            self.jaggaer.call("POST", self.jcfg.suppliers.path, idempotent=True,
                              body={"operationCode": "UPDATE",
                                    "company": {"companyInfo": {f.id: entry["id"], **info}}})
        except RemoteError as exc:
            self.ctx.fail(SUPPLIERS, key, row, exc)
            return
        entry["hash"] = h
        self.state.dirty = True
        if not adopted:
            counts.updated += 1
        self.audit.write("updated", SUPPLIERS, key, id=entry["id"])
        self._learn(SUPPLIERS, entry)
        self.state.dequeue(SUPPLIERS, key)

    # -- suppliers: JAGGAER -> links -------------------------------------------------------------
    def _sync_jaggaer_suppliers(self, since: datetime | None) -> None:
        counts = self.ctx.result.kind(JSUPPLIERS)
        start = self.jwindow.start(self.state, JSUPPLIERS, self.jcfg.initial_since, since)
        end = self.ctx.now
        for page in self.jaggaer.changed(self.jcfg.suppliers, start):
            counts.read += len(page)
            for profile in page:
                self._jaggaer_supplier(profile)
        if not self.dry_run and self.jwindow.advance(self.state, JSUPPLIERS, end, since):
            self.state.watermarks_moved = True

    def _jaggaer_supplier(self, profile: dict[str, Any]) -> None:
        counts = self.ctx.result.kind(JSUPPLIERS)
        f = self.s.supplier
        bid = _text(pick(profile, f.id))
        if not bid:
            return
        facts = digest(profile_facts(self.s, profile))
        link = self.state.entry(JSUPPLIERS, bid)
        ext = _text(pick(profile, f.key))
        made = self.vendor_writer.linked(bid)
        if made and ext != made and self.xref.get("vendor", bid) in (None, made):
            # The PeopleSoft supplier made for this profile: its VENDOR_ID still has to reach the profile.
            self._link_profile(bid, profile, made)
            return
        if link is not None and link.get("hash") == facts:
            counts.unchanged += 1  # our own write coming back (an echo)
            if not self.dry_run:
                self.state.dequeue(JSUPPLIERS, bid)
            return
        if link is not None and link.get("vendor"):
            # A person changed a linked profile: PeopleSoft owns the vendor master, so the next suppliers pass
            # writes PeopleSoft's values back (its link hash is cleared to force that).
            sup = self.state.entry(SUPPLIERS, encode_key((self.s.vendor_setid, link["vendor"])))
            if sup is not None and not self.dry_run:
                sup["hash"] = ""
                self.state.dirty = True
                self.audit.write("jaggaer_change_overridden", JSUPPLIERS, bid, vendor=link["vendor"],
                                 why="PeopleSoft owns the vendor master")
            counts.unchanged += 1
            return
        mapped = self.xref.get("vendor", bid)
        if ext or mapped:
            if not self.dry_run:
                self.xref.learn("vendor", bid, mapped or ext)
                self.state.set_entry(JSUPPLIERS, bid, {"vendor": mapped or ext, "hash": facts})
                self.state.dequeue(JSUPPLIERS, bid)
            counts.unchanged += 1
            return
        name = _text(pick(profile, f.name))
        if not self.s.create_vendors:
            self.ctx.fail(JSUPPLIERS, bid, profile, MissingReference(
                "vendor", bid, PairSettings.CONFIG_KEYS["vendor"],
                f"JAGGAER-only supplier {name or bid} (no {f.key}): create_vendors = false in [{SECTION}], so no "
                f"PeopleSoft vendor is created for it. Create the vendor in PeopleSoft and set the profile's {f.key} "
                f"to its VENDOR_ID, or map it (or set create_vendors = true); until then its POs wait. The supplier"))
            return
        self._create_ps_vendor(bid, profile)

    def vendor_write(self, bid: str, profile: dict[str, Any]) -> Any:
        """The VendorWrite of JAGGAER-only supplier ``bid`` (RecordError when it cannot be written as it is)."""
        from mlconnector.peoplesoft.vendor_sink import VendorWrite, split_name, vendor_facts

        s, n, f = self.s, self.vnames, self.s.supplier
        name = _text(pick(profile, f.name))
        title = f"JAGGAER-only supplier {name or bid} (id {bid})"
        if not name:
            raise RecordError(f"{title} has no {f.name}; PeopleSoft needs a NAME1. Give the profile a name in "
                              f"JAGGAER, or create the supplier in PeopleSoft and map it under [{SECTION}.vendors].")
        # VENDOR_NAME_SHORT is an uppercase field: PeopleSoft saves the handle in capitals, so it is written and
        # looked up in capitals, or a lowercase prefix (or supplier id) would never match and a lost answer
        # would create a second supplier.
        h = f"{s.vendor_handle_prefix}{bid}".upper()
        if len(h) > s.vendor_handle_max:
            raise RecordError(f"{title}: its PeopleSoft handle {h!r} does not fit {n.handle} ({s.vendor_handle_max} "
                              f"characters); it is not cut. Shorten vendor_handle_prefix in [{SECTION}], or map the "
                              f"supplier under [{SECTION}.vendors].")
        try:
            name1, name2 = split_name(name)
        except ValueError as exc:
            raise RecordError(f"{title}: {exc}; it is not cut. Shorten the company name in JAGGAER, or create the "
                              f"supplier in PeopleSoft by hand and map it under [{SECTION}.vendors].") from None
        fields: dict[str, Any] = {n.name1: name1, **({n.name2: name2} if name2 else {}), **s.vendor_defaults}
        country = _iso3(_text(pick(profile, f.country)))
        address = {n.city: _text(pick(profile, f.city)), n.country: country}
        if any(address.values()):
            fields[n.addresses] = [{n.address_seq: 1, **{k: x for k, x in address.items() if x}}]
        facts = vendor_facts(n, {n.name1: name1, n.name2: name2, n.status: fields.get(n.status, ""),
                                 n.addresses: fields.get(n.addresses, [])})
        return VendorWrite(key=bid, handle=h, vendor_id="", setid=s.vendor_setid, fields=fields, title=title,
                           row=profile, facts=facts)

    def _create_ps_vendor(self, bid: str, profile: dict[str, Any]) -> None:
        """Create (or adopt, found by its handle) the PeopleSoft supplier of a JAGGAER-only profile, then link the
        profile both ways. A failure is queued under ``ps_vendors`` (its POs wait with it)."""
        try:
            w = self.vendor_write(bid, profile)
        except RecordError as exc:
            self.ctx.fail(PSVENDORS, bid, profile, exc)
            return
        vid = self.vendor_writer.write(w)
        if vid is None or self.dry_run:
            return
        self.state.dequeue(JSUPPLIERS, bid)
        self._link_profile(bid, profile, vid)

    def _link_profile(self, bid: str, profile: dict[str, Any], vid: str) -> None:
        """Learn JAGGAER supplier ``bid`` <-> VENDOR_ID ``vid`` and write ``vid`` to the profile's key field. The
        profile as it will read back is recorded before the request, so its return is an echo, not news."""
        counts = self.ctx.result.kind(JSUPPLIERS)
        f = self.s.supplier
        if self.dry_run:
            counts.updated += 1
            self.ctx.planned(JSUPPLIERS, bid, "update", **{f.key: vid})
            return
        self.xref.learn("vendor", bid, vid)
        facts = profile_facts(self.s, profile)
        facts[f.key] = vid
        self.state.set_entry(JSUPPLIERS, bid, {"vendor": vid, "hash": digest(facts)})
        self.state.dirty = True
        self.state.save()
        try:
            self.jaggaer.call("POST", self.jcfg.suppliers.path, idempotent=True,
                              body={"operationCode": "UPDATE", "company": {"companyInfo": {f.id: bid, f.key: vid}}})
        except RemoteError as exc:
            self.ctx.fail(PSVENDORS, bid, profile, exc)
            return
        counts.updated += 1
        self.audit.write("linked", JSUPPLIERS, bid, vendor=vid, why=f"PeopleSoft vendor written to {f.key}")
        self.state.dequeue(PSVENDORS, bid)
        self.state.dequeue(JSUPPLIERS, bid)

    # -- requisitions: PeopleSoft -> JAGGAER -----------------------------------------------------
    def _sync_requisitions(self, since: datetime | None) -> None:
        counts = self.ctx.result.kind(REQS)
        start = self.pswindow.start(self.state, REQS, self.jcfg.initial_since, since)
        end = self.ctx.now
        headers: dict[str, dict[str, Any]] = {}
        for rows, _ in self.qas.read_window(self.s.requisition_query, start, end):
            for row in rows:
                counts.read += 1
                key = encode_key((_text(row.get("BUSINESS_UNIT")), _text(row.get("REQ_ID"))))
                if key not in headers or _text(row.get("LAST_DTTM_UPDATE")) >= _text(headers[key].get(
                        "LAST_DTTM_UPDATE")):
                    headers[key] = row
        lines = self._requisition_lines(headers, start, end)
        for key, row in sorted(headers.items()):
            self._requisition(row, lines.get(key, []))
        if not self.dry_run and self.pswindow.advance(self.state, REQS, end, since):
            self.state.watermarks_moved = True

    def _requisition_lines(self, headers: dict[str, dict[str, Any]], start: datetime, end: datetime,
                           ) -> dict[str, list[dict[str, Any]]]:
        """The lines of the requisitions in ``headers`` (key -> rows), read with requisition_lines_query.

        Not by the headers' window: a requisition approved after its lines last changed would come without
        them. The window starts at the oldest REQ_DT read (a line is not older than its requisition; a day of
        margin for time zones), or at initial_since when a header has no readable REQ_DT."""
        if not self.s.requisition_lines_query or not headers:
            return {}
        lo = start
        for row in headers.values():
            try:
                day = datetime.fromisoformat(_text(row.get("REQ_DT"))[:10])
            except ValueError:
                lo = min(lo, self.jcfg.initial_since.replace(tzinfo=lo.tzinfo))
                break
            lo = min(lo, day.replace(tzinfo=lo.tzinfo) - timedelta(days=1))
        lines: dict[str, dict[str, dict[str, Any]]] = {}
        for rows, _ in self.qas.read_window(self.s.requisition_lines_query, lo, end):
            for ln in rows:
                k = encode_key((_text(ln.get("BUSINESS_UNIT")), _text(ln.get("REQ_ID"))))
                if k not in headers:
                    continue
                nbr = _text(ln.get("LINE_NBR"))
                old = lines.setdefault(k, {}).get(nbr)
                if old is None or _text(ln.get("LAST_DTTM_UPDATE")) >= _text(old.get("LAST_DTTM_UPDATE")):
                    lines[k][nbr] = ln
        return {k: list(v.values()) for k, v in lines.items()}

    def _requisition(self, row: dict[str, Any], lines: list[dict[str, Any]]) -> None:
        counts = self.ctx.result.kind(REQS)
        bu, req = _text(row.get("BUSINESS_UNIT")), _text(row.get("REQ_ID"))
        key = encode_key((bu, req))
        queued_row = {"header": row, "lines": lines}
        if _text(row.get("REQ_STATUS")) not in self.s.requisition_statuses:
            if not self.dry_run:
                self.state.dequeue(REQS, key)
            return
        title = f"PeopleSoft requisition {bu}/{req}"
        h_value = handle(self.s.requisition_handle_prefix, (bu, req))
        sent = self.state.entry(REQS, key)
        if self.s.requisition_lines_query and not lines and not (sent and sent.get("id") and not sent.get("pending")):
            # Sent as one lump line it could never be corrected (JAGGAER requisitions are not updated).
            self.ctx.fail(REQS, key, queued_row, RecordError(
                f"{title}: {self.s.requisition_lines_query} (requisition_lines_query in [{SECTION}]) returned no "
                f"lines for it, so it is not sent (one lump line could never be corrected in JAGGAER). It waits "
                f"and its lines are read again on the next pass; check that the query returns this requisition's "
                f"lines (BUSINESS_UNIT, REQ_ID, LINE_NBR, ...) and that the requisition has lines in PeopleSoft."))
            return
        try:
            body = requisition_body(self.s, self.xref, row, lines, h_value)
        except RecordError as exc:
            self.ctx.fail(REQS, key, queued_row, exc)
            return
        h = digest(body)
        entry = self.state.entry(REQS, key)
        if entry is not None and entry.get("id") and not entry.get("pending"):
            if entry.get("hash") != h and not self.dry_run:
                # JAGGAER publishes no requisition update; the change is recorded, not resent as a second one.
                self.audit.write("changed_after_send", REQS, key, id=entry["id"],
                                 why="JAGGAER requisitions are not updated through the API")
                entry["hash"] = h
                self.state.dirty = True
            counts.unchanged += 1
            if not self.dry_run:
                self.state.dequeue(REQS, key)
            return
        f = self.s.requisition_handle_field
        result = self._create_on_jaggaer(
            REQS, key, queued_row, h_value, title,
            lookup=lambda: self.jaggaer.find(self.jcfg.requisitions, f, h_value),
            id_of=lambda rec: _text(rec.get("requisitionId")),
            send=lambda: self.jaggaer.call("POST", self.jcfg.requisitions.path, idempotent=False,
                                           body={"requisition": body}),
            extra={"hash": h})
        if result is not None and not self.dry_run:
            self.state.dequeue(REQS, key)

    # -- purchase orders: JAGGAER -> PeopleSoft --------------------------------------------------
    def _sync_purchase_orders(self, since: datetime | None) -> None:
        counts = self.ctx.result.kind(POS)
        newest: dict[str, dict[str, Any]] = {}
        src = self.s.po_source

        def keep(po: dict[str, Any]) -> None:
            number = _text(pick(po, src.number))
            if number and (number not in newest or self._stamp(po) >= self._stamp(newest[number])):
                newest[number] = po

        if self.s.po_transport == "cxml":
            docs = self._cxml_inbox(POS)
            counts.read += len(docs)
            for po in docs:
                keep(po)
            for _, po in sorted(newest.items()):
                self._purchase_order(po)
            self._cxml_done(POS)
            return
        start = self.jwindow.start(self.state, POS, self.jcfg.initial_since, since)
        end = self.ctx.now
        for page in self.jaggaer.changed(self.jcfg.purchase_orders, start):
            counts.read += len(page)
            for po in page:
                keep(po)
        for _, po in sorted(newest.items()):
            self._purchase_order(po)
        if not self.dry_run and self.jwindow.advance(self.state, POS, end, since):
            self.state.watermarks_moved = True

    # -- cXML transport: documents spooled by the receiver (jaggaer/cxml.py) --------------------------
    def _cxml_inbox(self, kind: str) -> list[dict[str, Any]]:
        """The spooled cXML documents of ``kind``. The spool is moved into the state (saved) before it is
        emptied, and a document leaves the state only after its flow has posted it or queued it for replay, so
        a kill at any point repeats a document (found by its handle, changes nothing) and never loses one."""
        from mlconnector.jaggaer.cxml import spool_path
        from mlconnector.webhook import drain_events

        if not self.dry_run and not getattr(self, "_cxml_drained", False):
            def commit(events: list[dict[str, Any]]) -> None:
                self.state.extra.setdefault(CXML_INBOX, []).extend(events)
                self.state.dirty = True
                self.state.save()

            drain_events(spool_path(self.cfg.state_file), commit)
            self._cxml_drained = True
        return [e["doc"] for e in self.state.extra.get(CXML_INBOX, [])
                if isinstance(e, dict) and e.get("kind") == kind and isinstance(e.get("doc"), dict)]

    def _cxml_done(self, kind: str) -> None:
        if self.dry_run or not self.state.extra.get(CXML_INBOX):
            return
        self.state.extra[CXML_INBOX] = [e for e in self.state.extra[CXML_INBOX]
                                        if not (isinstance(e, dict) and e.get("kind") == kind)]
        self.state.dirty = True
        self.state.save()

    def _stamp(self, po: dict[str, Any]) -> str:
        src = self.s.po_source
        return f"{int(_text(pick(po, src.revision)) or 0):06d}|{_text(pick(po, src.modified))}"

    def _purchase_order(self, po: dict[str, Any]) -> None:
        counts = self.ctx.result.kind(POS)
        src = self.s.po_source
        number = _text(pick(po, src.number))
        key = encode_key((number,))
        entry = self.state.entry(POS, key)
        queued = any(i["kind"] == POS and i["key"] == key for i in self.state.replay)
        posted = entry is not None and entry.get("po") and not entry.get("pending")
        stamp = self._stamp(po)
        if posted and not queued and entry.get("stamp", "") >= stamp:  # type: ignore[union-attr]
            counts.unchanged += 1  # this revision (or a newer one) is in PeopleSoft: no PeopleSoft call
            return
        if _text(pick(po, src.status)) not in self.s.po_statuses:
            counts.unchanged += 1
            if not self.dry_run:
                self.state.dequeue(POS, key)
            return
        from mlconnector.peoplesoft.ci import CIError

        # A PO already written keeps the PO_REF it was written with (its hash and lookups stay the same).
        known = _text(entry.get("handle")) if entry is not None else ""
        try:
            w = map_po(self.s, self.xref, po, self.ctx.now.date(), known or None)
            if not known and self._legacy_lookup():
                w = self._legacy_po(po, w, number)
        except (RecordError, CIError) as exc:
            self.ctx.fail(POS, key, po, exc)
            return
        self.writer.write(POS, w)
        done = self.state.entry(POS, key)
        if done is not None and done.get("po") and not self.dry_run and not any(
                i["kind"] == POS and i["key"] == key for i in self.state.replay):
            done["stamp"] = stamp
            self.state.dirty = True

    def _legacy_lookup(self) -> bool:
        """Whether POs may carry the bare JAGGAER number as PO_REF (written before po_handle_prefix had a
        default): "auto" answers from the state, once per pass."""
        mode, prefix = self.s.po_legacy_lookup, self.s.po_handle_prefix
        if not prefix or mode == "never":
            return False
        if mode == "always":
            return True
        if not hasattr(self, "_legacy"):
            self._legacy = any(e.get("handle") and not _text(e.get("handle")).startswith(prefix)
                               for _, e in self.state.keymap.items(POS) if isinstance(e, dict))
        return self._legacy

    def _legacy_po(self, po: dict[str, Any], w: Any, number: str) -> Any:
        """``w``, or ``w`` under the bare number when only a PO written that way (same business unit and vendor)
        is in PeopleSoft: an upgrade adopts it instead of creating a second PO."""
        if number == w.handle or self.writer.lookup(w.business_unit, w.handle, w.vendor_id):
            return w
        if not self.writer.lookup(w.business_unit, number, w.vendor_id):
            return w
        self.audit.write("legacy_handle", POS, w.key, handle=number,
                         why=f"found under the PO_REF written before po_handle_prefix {self.s.po_handle_prefix!r}")
        return map_po(self.s, self.xref, po, self.ctx.now.date(), number)

    # -- invoices: JAGGAER -> PeopleSoft vouchers ------------------------------------------------
    def _sync_invoices(self, since: datetime | None) -> None:
        counts = self.ctx.result.kind(INVOICES)
        src = self.s.invoice_source
        if self.s.invoice_transport == "cxml":
            latest: dict[str, dict[str, Any]] = {}
            for inv in self._cxml_inbox(INVOICES):
                counts.read += 1
                inv_id = _text(pick(inv, src.id))
                if inv_id and (inv_id not in latest or _text(pick(inv, src.modified)) >= _text(
                        pick(latest[inv_id], src.modified))):
                    latest[inv_id] = inv
            for _, inv in sorted(latest.items()):
                self._invoice(inv)
            self._cxml_done(INVOICES)
            return
        start = self.jwindow.start(self.state, INVOICES, self.jcfg.initial_since, since)
        end = self.ctx.now
        newest: dict[str, dict[str, Any]] = {}
        for page in self.jaggaer.changed(self.jcfg.invoices, start):
            counts.read += len(page)
            for inv in page:
                inv_id = _text(pick(inv, src.id))
                if inv_id and (inv_id not in newest or _text(pick(inv, src.modified)) >= _text(
                        pick(newest[inv_id], src.modified))):
                    newest[inv_id] = inv
        for _, inv in sorted(newest.items()):
            self._invoice(inv)
        if not self.dry_run and self.jwindow.advance(self.state, INVOICES, end, since):
            self.state.watermarks_moved = True

    def _invoice(self, inv: dict[str, Any]) -> None:
        counts = self.ctx.result.kind(INVOICES)
        src = self.s.invoice_source
        key = encode_key((_text(pick(inv, src.id)),))
        entry = self.state.entry(INVOICES, key)
        stamp = _text(pick(inv, src.modified))
        queued = any(i["kind"] == INVOICES and i["key"] == key for i in self.state.replay)
        if (entry is not None and entry.get("voucher") and not entry.get("pending") and not queued
                and entry.get("stamp", "") >= stamp):
            counts.unchanged += 1  # already a voucher, and JAGGAER has not changed it since: no PeopleSoft call
            return
        if (_text(pick(inv, src.status)) not in self.s.invoice_statuses
                or _text(pick(inv, src.invoice_type)) not in self.s.invoice_types):
            counts.unchanged += 1
            if not self.dry_run:
                self.state.dequeue(INVOICES, key)
            return
        try:
            w = map_invoice(self.s, self.xref, self.state, inv)
        except RecordError as exc:
            self.ctx.fail(INVOICES, key, inv, exc)
            return
        posted = self.vouchers.write(INVOICES, w)
        done = self.state.entry(INVOICES, key)
        if posted is not None and done is not None and not self.dry_run:
            done["stamp"] = stamp
            self.state.dirty = True


# -- ping -----------------------------------------------------------------------------------------
def _vendor_ci_checks(s: PairSettings, client: Any) -> list[Any]:
    """The supplier CI a JAGGAER-only supplier is created through: reachable, Find/Get/Create, handle searchable."""
    from mlconnector.checks import Check
    from mlconnector.errors import ConnectorError
    from mlconnector.peoplesoft.ci import ADMIN_CI

    n = s.vendor_fields
    name = f"CI_{n.ci}"
    fix = (f"Ask the PeopleSoft admin to generate {name} on the VNDR_ID component with Find, Get and Create and "
           f"{n.handle} among the search fields ({ADMIN_CI}), or set create_vendors = false in [{SECTION}] and map "
           f"JAGGAER-only suppliers under [{SECTION}.vendors].")
    try:
        svc = client.service(n.ci)
    except ConnectorError as exc:
        return [Check("PeopleSoft", f"WSDL {name}", False, exc.message, fix)]
    missing = [m for m in ("F", "G", "C") if m not in svc.operations]
    lacking = [f for f in (n.setid, n.handle) if f not in svc.inputs.get("F", [])]
    ok = not missing and not lacking
    return [Check("PeopleSoft", f"operations {name}", ok, ", ".join(sorted(svc.operations.values())) if ok else
                  f"missing {', '.join(missing) or '-'}; Find lacks {', '.join(lacking) or '-'}", fix)]


def ping_checks(cfg: Config, secrets: SecretStore) -> list[Any]:
    """The PO CI (WSDL, the operations and Find fields the lookup needs) and the PeopleSoft queries the pair
    reads (each answers)."""
    from mlconnector.checks import Check
    from mlconnector.errors import ConnectorError
    from mlconnector.peoplesoft.ci import ADMIN_CI, CIClient
    from mlconnector.peoplesoft.connect import peoplesoft_auth
    from mlconnector.peoplesoft.qas import QASClient
    from mlconnector.state import utcnow

    s = settings(cfg)
    p = s.po
    out: list[Check] = []
    auth = peoplesoft_auth(cfg, secrets)
    qas = QASClient(cfg.peoplesoft, auth)
    try:
        now = utcnow()
        probes: list[tuple[str, Callable[[], Any]]] = [
            (s.vendor_query, lambda: next(iter(qas.read_all(s.vendor_query)), [])),
            (s.requisition_query, lambda: next(iter(qas.read_window(s.requisition_query, now - timedelta(days=1),
                                                                    now)), None))]
        if s.requisition_lines_query:
            probes.append((s.requisition_lines_query, lambda: next(iter(qas.read_window(
                s.requisition_lines_query, now - timedelta(days=1), now)), None)))
        for name, probe in probes:
            try:
                probe()
                out.append(Check("PeopleSoft", f"query {name}", True, "answered"))
            except ConnectorError as exc:
                out.append(Check("PeopleSoft", f"query {name}", False, exc.message,
                                 f"Create the query (public) or set its name in [{SECTION}], and give the user's "
                                 f"permission list access to it."))
    finally:
        qas.close()
    name = f"CI_{s.po_ci}"
    client = CIClient(cfg.peoplesoft, auth)
    try:
        try:
            svc = client.service(s.po_ci)
        except ConnectorError as exc:
            out.append(Check("PeopleSoft", f"WSDL {name}", False, exc.message,
                             f"Set po_ci in [{SECTION}], or ask the PeopleSoft admin to generate {name} with Find, "
                             f"Get, Create and UpdateData ({ADMIN_CI})."))
            return out
        missing = [m for m in ("F", "G", "C", "UD") if m not in svc.operations and not (m == "UD" and "UP" in
                                                                                         svc.operations)]
        out.append(Check("PeopleSoft", f"operations {name}", not missing,
                         ", ".join(sorted(svc.operations.values())) if not missing else f"missing {', '.join(missing)}",
                         f"Ask the PeopleSoft admin to include Find, Get, Create and UpdateData in {name} "
                         f"({ADMIN_CI})."))
        need = [p.business_unit, p.handle, p.vendor_id]
        lacking = [fld for fld in need if fld not in svc.inputs.get("F", [])]
        out.append(Check("PeopleSoft", f"lookup {name}", not lacking,
                         f"Find by {', '.join(need)}" if not lacking else
                         f"the Find of {name} has no field {', '.join(lacking)}: a PO could not be looked up before "
                         f"a create", f"Set [{SECTION}.po_fields] to the CI's names, or ask the admin to add them."))
        if s.create_vendors:
            out += _vendor_ci_checks(s, client)
        try:
            from mlconnector.peoplesoft.voucher_sink import VoucherNames, voucher_checks
        except ImportError:
            pass
        else:
            # The business unit of the first mapping: the voucher lookup's harmless Find needs one.
            bu = next(iter(s.business_units), "")
            out += voucher_checks(client, VoucherNames(ci=s.voucher_ci), bu, SECTION)
    finally:
        client.close()
    return out
from mlconnector.pairs.peoplesoft_jaggaer_reconcile import reconcile_scope  # noqa: E402,F401  (reconcile)
