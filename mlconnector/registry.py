"""The pairs ml-connector runs: the one place that names them. The CLI's `sync <pair>`, `replay` and the
demo are driven from here. Specs are light (module names, not modules), so `mlconnector --help` imports
no system package."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PairSpec:
    """A pair as the CLI and the runner see it.

    ``module`` exposes ``configured(cfg)``; ``connect(cfg, secrets, redactor, *, refresh_wsdl)``, a context
    manager yielding the pair's open clients; ``make_pass(cfg, clients, state, audit, *, dry_run, progress,
    kinds)``, the pass steps (sync/engine.py's PassSteps); and ``before_replay(steps, items)``, run before
    `replay retry`. ``kinds`` are the entities `--kind` accepts.
    """

    name: str
    help: str
    module: str
    kinds: tuple[str, ...]
    sections: tuple[str, ...]  # configuration sections it needs
    # The watermarks of its source reads, by their first dotted part ("purchase_orders.comments" ->
    # "purchase_orders"; empty: its kinds): what `state rebuild <pair>` forgets. Not a cursor over the target's
    # changes (jde-jira's back-flow): forgetting that would skip the changes made since.
    watermark_roots: tuple[str, ...] = ()
    # Pairs with the same non-empty scope keep their records under different names and may share one state
    # file; any other two pairs may not (several of them name records "vendors" or "purchase_orders").
    state_scope: str = ""

    def load(self) -> Any:
        return importlib.import_module(self.module)

    def owns_watermark(self, name: str) -> bool:
        """Whether ``name`` is the watermark of one of this pair's source reads."""
        return name.split(".", 1)[0] in (self.watermark_roots or self.kinds)


# The pairs of release 0.1.0, built to share one state file (their records' names do not meet). A state
# written before states recorded their pairs, and before they recorded their sites, came from them.
LEGACY_SCOPE = "0.1"

PAIRS: dict[str, PairSpec] = {p.name: p for p in (
    PairSpec("peoplesoft-jira", "PeopleSoft requisitions, purchase orders and vouchers -> Jira issues (one pass).",
             "mlconnector.pairs.peoplesoft_jira", ("vendors", "requisitions", "purchase_orders", "vouchers"),
             ("peoplesoft", "jira"), state_scope=LEGACY_SCOPE),
    PairSpec("jde-jira", "JD Edwards work and change orders -> Jira issues; Jira status changes -> JDE "
             "orchestration (one pass).", "mlconnector.pairs.jde_jira",
             ("work_orders", "change_orders", "jira_status"), ("jde", "jira"), ("jde",),
             state_scope=LEGACY_SCOPE),
    PairSpec("procurify-peoplesoft", "Approved Procurify requisitions -> PeopleSoft purchase orders through the PO "
             "component interface (one pass).", "mlconnector.pairs.procurify_peoplesoft", ("requisitions",),
             ("procurify", "peoplesoft", "procurify_peoplesoft")),
    PairSpec("peoplesoft-jaggaer", "PeopleSoft vendors and requisitions -> JAGGAER; JAGGAER suppliers and purchase "
             "orders and invoices -> PeopleSoft (PO and voucher CIs), reference data first (one pass).",
             "mlconnector.pairs.peoplesoft_jaggaer", ("suppliers", "jaggaer_suppliers", "requisitions",
                                                      "purchase_orders", "invoices"),
             ("jaggaer", "peoplesoft", "peoplesoft_jaggaer")),
    PairSpec("peoplesoft-procore", "PeopleSoft vendors and GL accounts -> Procore directory and cost codes; "
             "PeopleSoft POs <-> Procore commitments; project costs -> GL journals (one pass).",
             "mlconnector.pairs.peoplesoft_procore",
             ("vendors", "cost_codes", "purchase_orders", "commitments", "direct_costs", "change_orders"),
             ("peoplesoft", "procore", "peoplesoft_procore")),
)}

# Configuration sections parsed by a system package of their own: section -> "module:function".
SECTIONS: dict[str, str] = {"jde": "mlconnector.jde.config:parse_jde",
                            "procurify": "mlconnector.procurify.config:parse_procurify",
                            "jaggaer": "mlconnector.jaggaer.config:parse_jaggaer",
                            "peoplesoft_jaggaer": "mlconnector.pairs.peoplesoft_jaggaer_config:parse_section",
                            "procurify_peoplesoft": "mlconnector.pairs.procurify_peoplesoft_config:parse_section",
                            "procore": "mlconnector.procore.config:parse_procore",
                            "peoplesoft_procore": "mlconnector.pairs.peoplesoft_procore_config:parse_section"}


def section_parser(name: str) -> Any:
    module, _, func = SECTIONS[name].partition(":")
    return getattr(importlib.import_module(module), func)
