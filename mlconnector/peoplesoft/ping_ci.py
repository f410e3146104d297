"""`ping` checks for a CI a writer posts through: WSDL, operations, the Find fields of the lookup before every
create, and one harmless Find (a value no record carries)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlconnector.checks import Check
from mlconnector.errors import AuthError, ConnectorError
from mlconnector.peoplesoft.ci import ADMIN_CI, CIClient

SYSTEM = "PeopleSoft"


def writer_ci_checks(client: CIClient, ci: str, noun: str, find_fields: list[str], probe: Mapping[str, Any],
                     section: str, ci_key: str) -> list[Check]:
    """Checks that ``ci`` can be written once-only: it has Find, Get and Create, its Find takes ``find_fields``,
    and a Find by ``probe`` is allowed. ``section``/``ci_key`` name the configuration the fixes point at."""
    name = f"CI_{ci}"
    try:
        svc = client.service(ci)
    except ConnectorError as exc:
        return [Check(SYSTEM, f"WSDL {name}", False, exc.message,
                      f"Set {ci_key} in [{section}] to the {noun} component interface, or ask the PeopleSoft admin to "
                      f"generate {name} with Find, Get and Create ({ADMIN_CI}) and activate its service operations.")]
    out: list[Check] = []
    missing = [m for m in ("F", "G", "C") if m not in svc.operations]
    out.append(Check(SYSTEM, f"operations {name}", not missing,
                     ", ".join(sorted(svc.operations.values())) if not missing else
                     f"missing {', '.join({'F': 'Find', 'G': 'Get', 'C': 'Create'}[m] for m in missing)} (has: "
                     f"{', '.join(svc.all_operations) or 'none'})",
                     f"Ask the PeopleSoft admin to include Find, Get and Create in {name} ({ADMIN_CI}), then ping "
                     f"with --refresh-wsdl."))
    lacking = [f for f in find_fields if f not in svc.inputs.get("F", [])]
    out.append(Check(SYSTEM, f"lookup {name}", not lacking,
                     f"Find by {', '.join(find_fields)}" if not lacking else
                     f"the Find of {name} has no field {', '.join(lacking)} (it has: "
                     f"{', '.join(svc.inputs.get('F', []))}): a {noun} could not be looked up before a create",
                     f"Set the field names in [{section}] to the CI's, or ask the admin to add {', '.join(lacking)} "
                     f"to the component's search keys."))
    if not missing and not lacking:
        try:
            client.find(ci, probe)
            out.append(Check(SYSTEM, f"find {name}", True, f"{svc.operations['F']} allowed"))
        except (AuthError, ConnectorError) as exc:
            out.append(Check(SYSTEM, f"find {name}", False, exc.message,
                             "Do the admin action the message names, then ping again."))
    return out
