"""Jira workflow graphs: which status leads to which, per project and issue type.

Jira's transitions endpoint shows only the ways out of an issue's *current* status, and transition ids
are per workflow. A ``WorkflowGraph`` collects what is known about one workflow:

- from an admin read (``/workflowscheme/project`` + ``/workflow/search?expand=transitions``), when the
  sync user may read workflows (*Administer Jira*): the whole graph at once (``complete``);
- otherwise from the transitions Jira listed for issues in each status, as they are read (every issue
  looked at in a pass teaches the graph the way out of its status).

The live list always wins over what was learned or read earlier (conditions can hide a transition
from this user), so a path planned on the graph is re-checked hop by hop by the client.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

DONE = "done"


@dataclass(frozen=True)
class Edge:
    """One transition: its id and name, the status it leads to, that status's category, and whether it
    has a screen (a screen with required fields makes Jira answer 400 unless they are sent)."""

    id: str
    name: str
    to: str
    category: str = ""  # statusCategory key: new | indeterminate | done; "" when not known
    screen: bool = False


def edges_from_transitions(transitions: Iterable[dict[str, Any]]) -> list[Edge]:
    """Edges from a Jira transitions list (``GET /issue/{key}/transitions`` or ``expand=transitions``)."""
    out = []
    for t in transitions:
        to = t.get("to") or {}
        if t.get("isAvailable") is False or not to.get("name"):
            continue
        out.append(Edge(str(t["id"]), str(t.get("name", "")), str(to["name"]),
                        str((to.get("statusCategory") or {}).get("key", "")), bool(t.get("hasScreen"))))
    return out


@dataclass
class WorkflowGraph:
    """What is known of one workflow: status name (lower-cased) -> {target status lower-cased: Edge}.

    ``explored`` statuses have a known way out (possibly none); a status only seen as a target is not
    explored yet. ``complete`` graphs came from the workflow definition itself.
    """

    name: str = ""
    initial: str | None = None  # start status of new issues, when known
    complete: bool = False
    out: dict[str, dict[str, Edge]] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # lower -> as Jira spells it
    categories: dict[str, str] = field(default_factory=dict)

    def learn(self, status: str, edges: Iterable[Edge]) -> None:
        """Record the live way out of ``status`` (replaces what was known for it)."""
        low = status.lower()
        self.names.setdefault(low, status)
        self.out[low] = {}
        for e in edges:
            self.out[low].setdefault(e.to.lower(), e)
            self.names.setdefault(e.to.lower(), e.to)
            if e.category:
                self.categories[e.to.lower()] = e.category

    def explored(self, status: str) -> bool:
        return status.lower() in self.out

    def path(self, start: str, goal: str) -> list[Edge] | None:
        """Shortest list of hops from ``start`` to ``goal`` over known edges ([] if already there), preferring
        paths that do not pass through a status of the *done* category on the way (Cancelled, Denied...)."""
        return self._bfs(start, goal, avoid_done=True) or self._bfs(start, goal, avoid_done=False)

    def _bfs(self, start: str, goal: str, avoid_done: bool) -> list[Edge] | None:
        start, goal = start.lower(), goal.lower()
        if start == goal:
            return []
        prev: dict[str, tuple[str, Edge]] = {}
        queue = deque([start])
        seen = {start}
        while queue:
            node = queue.popleft()
            for target, edge in sorted(self.out.get(node, {}).items()):
                if target in seen:
                    continue
                seen.add(target)
                prev[target] = (node, edge)
                if target == goal:
                    hops = []
                    while target != start:
                        target, e = prev[target]
                        hops.append(e)
                    return hops[::-1]
                if not (avoid_done and self.categories.get(target) == DONE):
                    queue.append(target)
        return None

    def reachable(self, start: str) -> set[str]:
        """Statuses (lower-cased) reachable from ``start`` over known edges, ``start`` included."""
        seen = {start.lower()}
        queue = deque(seen)
        while queue:
            for target in self.out.get(queue.popleft(), {}):
                if target not in seen:
                    seen.add(target)
                    queue.append(target)
        return seen

    def next_hop(self, current: str, goal: str, visited: set[str]) -> Edge | None:
        """The first hop towards ``goal``: along a known path, else towards the nearest unexplored status.

        Exploring moves a real issue, so it is careful: it never enters a status already visited on this
        walk, nor a status of the *done* category other than the goal (done statuses such as Cancelled or
        Denied are often dead ends, and moving an issue there notifies people for nothing), nor takes a
        transition with a screen (it may want fields).
        """
        known = self.path(current, goal)
        if known:
            return known[0]
        if self.complete:
            return None
        start = current.lower()
        prev: dict[str, tuple[str, Edge]] = {}
        queue = deque([start])
        seen = {start}
        while queue:
            node = queue.popleft()
            for target, edge in sorted(self.out.get(node, {}).items()):
                if (target in seen or target in visited or edge.screen
                        or self.categories.get(target) == DONE):
                    continue
                seen.add(target)
                prev[target] = (node, edge)
                if not self.explored(target):
                    while prev[target][0] != start:
                        target = prev[target][0]
                    return prev[target][1]
                queue.append(target)
        return None

    @classmethod
    def from_definition(cls, workflow: dict[str, Any]) -> WorkflowGraph:
        """A complete graph from ``/workflow/search?expand=transitions,statuses`` (one ``values`` item)."""
        names = {str(s.get("id")): str(s.get("name")) for s in workflow.get("statuses") or []}
        graph = cls(name=str((workflow.get("id") or {}).get("name", "")), complete=True)
        transitions = workflow.get("transitions") or []
        for t in transitions:
            to = str(t.get("to", ""))
            names.setdefault(to, to)
            for s in t.get("from") or []:
                names.setdefault(str(s), str(s))
        for name in names.values():
            graph.names[name.lower()] = name
            graph.out.setdefault(name.lower(), {})
        for t in transitions:
            kind = str(t.get("type", "")).lower()
            to = names[str(t.get("to", ""))]
            edge = Edge(str(t.get("id")), str(t.get("name", "")), to, screen=bool(t.get("screen")))
            if kind == "initial":
                graph.initial = to
                continue
            sources = names.values() if kind == "global" or not t.get("from") else \
                [names[str(s)] for s in t.get("from") or []]
            for src in sources:
                if src.lower() != to.lower():
                    graph.out[src.lower()].setdefault(to.lower(), edge)
        return graph
