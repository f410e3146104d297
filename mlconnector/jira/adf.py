"""Atlassian Document Format builders: Jira v3 rejects plain strings and empty text nodes."""

from __future__ import annotations

import re
from typing import Any

# Jira's limit for a rich-text field is 32,767 characters of serialised content; stay well inside it.
MAX_TEXT = 30_000
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f]")
_LINE_BREAKS = re.compile(r"\r\n|[\r\x85\u2028\u2029]")
_BLANK_RUNS = re.compile(r"\n{3,}")
# A line break costs a hardBreak node and the next line's text node wrapper, with JSON separators.
HARD_BREAK_COST = len('{"type": "hardBreak"}, {"type": "text", "text": ""}, ') + 4


_SURROGATES = re.compile("[\ud800-\udfff]")


def scrub(text: str) -> str:
    """Lone surrogates (a JSON "\\ud800" from a source system) cannot be encoded: show them as U+FFFD."""
    return _SURROGATES.sub("\ufffd", text)


def clean(text: Any) -> str:
    return _CONTROL.sub("", _LINE_BREAKS.sub("\n", scrub(str(text))))


def one_line(text: Any) -> str:
    """Text for single-line places (summary, text fields): no line breaks, no control characters."""
    return " ".join(clean(text).split())


def text_nodes(text: str, marks: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Text with newlines as hardBreaks; never an empty text node."""
    nodes: list[dict[str, Any]] = []
    for i, line in enumerate(clean(text).split("\n")):
        if i:
            nodes.append({"type": "hardBreak"})
        if line:
            node: dict[str, Any] = {"type": "text", "text": line}
            if marks:
                node["marks"] = marks
            nodes.append(node)
    while nodes and nodes[-1]["type"] == "hardBreak":
        nodes.pop()
    while nodes and nodes[0]["type"] == "hardBreak":
        nodes.pop(0)
    return nodes


def paragraph(text: str) -> dict[str, Any] | None:
    nodes = text_nodes(text)
    return {"type": "paragraph", "content": nodes} if nodes else None


def heading(text: str, level: int = 3) -> dict[str, Any] | None:
    nodes = text_nodes(clean(text).replace("\n", " "))
    return {"type": "heading", "attrs": {"level": level}, "content": nodes} if nodes else None


def facts(pairs: list[tuple[str, str]]) -> dict[str, Any] | None:
    """A bullet list of 'Label: value' lines, skipping empty values."""
    items = []
    for label, value in pairs:
        value_nodes = text_nodes(str(value)) if value not in (None, "") else []
        if not value_nodes:
            continue
        items.append({"type": "listItem", "content": [{"type": "paragraph", "content": [
            {"type": "text", "text": f"{label}: ", "marks": [{"type": "strong"}]}, *value_nodes]}]})
    return {"type": "bulletList", "content": items} if items else None


def doc(*blocks: dict[str, Any] | None) -> dict[str, Any]:
    content = [b for b in blocks if b]
    if not content:
        content = [{"type": "paragraph", "content": [{"type": "text", "text": "-"}]}]
    return {"type": "doc", "version": 1, "content": content}


def truncate(text: str, limit: int = MAX_TEXT) -> str:
    """Cut text so its ADF form stays under ``limit`` serialised characters.

    Each line break becomes a hardBreak node, and a non-ASCII character may be escaped as \\uXXXX, so
    the budget is counted in serialised characters, not in characters of text.
    """
    text = _BLANK_RUNS.sub("\n\n", clean(text))
    cost = 0
    for i, ch in enumerate(text):
        cost += HARD_BREAK_COST if ch == "\n" else (1 if ch < "\x80" else 6)
        if cost > limit - 60:
            return text[:i].rstrip() + "\n… (truncated; full text in PeopleSoft)"
    return text


def plain_text(node: Any) -> str:
    """Concatenated text of an ADF document (used to find our own markers in comments)."""
    if isinstance(node, dict):
        if node.get("type") == "text":
            return str(node.get("text", ""))
        return "".join(plain_text(c) for c in node.get("content", []) or [])
    if isinstance(node, list):
        return "".join(plain_text(c) for c in node)
    return ""
