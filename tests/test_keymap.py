"""The key map on disk: lookups without parsing the whole map, same JSON shape, any other layout still read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlconnector.state import State

# Keys that stress the encoding: quotes, backslashes, separators, non-ASCII, lone surrogates.
KEYS = st.one_of(
    st.from_regex(r"US00[1-3]\|[0-9]{1,4}", fullmatch=True),
    st.text(alphabet=st.sampled_from('ab"\\|:,{}\n é€\ud800'), min_size=0, max_size=6),
)
KINDS = st.sampled_from(["purchase_orders", "vouchers", "work_orders"])
OPS = st.lists(st.one_of(
    st.tuples(st.just("set"), KINDS, KEYS, st.integers(0, 9)),
    st.tuples(st.just("drop"), KINDS, KEYS, st.just(0)),
    st.tuples(st.just("mutate"), KINDS, KEYS, st.integers(0, 9)),
    st.tuples(st.just("pending"), KINDS, KEYS, st.just(0)),
    st.tuples(st.just("save"), KINDS, KEYS, st.just(0)),
    st.tuples(st.just("release"), KINDS, KEYS, st.just(0)),
    st.tuples(st.just("reload"), KINDS, KEYS, st.just(0)),
), max_size=60)


def _entry(n: int) -> dict[str, Any]:
    return {"issue": f"PROC-{n}", "hash": f"h{n}", "status": "A", "ts": f"2026-11-{n + 10}T00:00:00+00:00"}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_key_map_behaves_like_a_dict_across_saves_releases_and_reloads(tmp_path: Path, ops: list) -> None:
    path = tmp_path / "state.json"
    path.unlink(missing_ok=True)
    state = State.load(path)
    model: dict[str, dict[str, dict[str, Any]]] = {}
    saved: dict[str, dict[str, dict[str, Any]]] = {}
    for op, kind, key, n in ops:
        if op == "set":
            state.set_entry(kind, key, _entry(n))
            model.setdefault(kind, {})[key] = _entry(n)
        elif op == "drop":
            state.drop_entry(kind, key)
            model.get(kind, {}).pop(key, None)
        elif op == "mutate":  # in place, as the writer does; saved by the next save
            entry = state.entry(kind, key)
            if entry is not None:
                entry["status"] = str(n)
                model[kind][key]["status"] = str(n)
                state.dirty = True
        elif op == "pending":
            state.set_entry(kind, key, {"pending": True, "label": "x"})
            model.setdefault(kind, {})[key] = {"pending": True, "label": "x"}
        elif op == "save":
            state.save()
            saved = json.loads(json.dumps(model))
        elif op == "release":
            state.release()
            saved = json.loads(json.dumps(model))
        elif op == "reload":
            state = State.load(path)
            model = json.loads(json.dumps(saved))
        for k in ("purchase_orders", "vouchers", "work_orders"):
            assert state.entry(k, key) == model.get(k, {}).get(key)
    for kind in ("purchase_orders", "vouchers", "work_orders"):
        want = model.get(kind, {})
        assert state.entries(kind) == want
        assert state.keymap.count(kind) == len(want)
        assert sorted(state.pending(kind)) == sorted(k for k, e in want.items() if e.get("pending"))
    state.save()
    # The file is ordinary JSON of the documented shape, and reads back the same.
    on_disk = json.loads(path.read_text(encoding="utf-8"))
    assert on_disk["keys"] == {k: v for k, v in model.items() if v}
    again = State.load(path)
    for kind, entries in model.items():
        for key, entry in entries.items():
            assert again.entry(kind, key) == entry


def _big_state(path: Path, n: int) -> State:
    state = State(path=path)
    for i in range(n):
        state.set_entry("purchase_orders", f"US001|{(i * 7919) % n:010d}", _entry(i))
    state.save()
    return State.load(path)


def test_a_lookup_parses_only_the_entries_it_touches(tmp_path: Path) -> None:
    state = _big_state(tmp_path / "state.json", 5000)
    assert state.entry("purchase_orders", "US001|0000004999")["issue"].startswith("PROC-")
    assert state.entry("purchase_orders", "US001|9999999999") is None
    touched = state.keymap._touched.get("purchase_orders", {})
    assert list(touched) == ["US001|0000004999"]
    state.release()
    assert state.keymap._touched == {}


def test_release_saves_in_place_changes_first_and_keeps_them_in_dry_run(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    state = _big_state(path, 100)
    entry = state.entry("purchase_orders", "US001|0000000042")
    entry["status"] = "Z"  # changed in place without marking the state dirty
    state.release(can_save=False)
    assert state.entry("purchase_orders", "US001|0000000042")["status"] == "Z"  # still held, not lost
    assert State.load(path).entry("purchase_orders", "US001|0000000042")["status"] == "A"
    state.release()
    assert State.load(path).entry("purchase_orders", "US001|0000000042")["status"] == "Z"


def test_hand_edited_or_reindented_file_is_read_in_full_and_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    _big_state(path, 50)
    data = json.loads(path.read_text(encoding="utf-8"))
    # An admin appends an entry by hand at the end (out of order) and re-indents the file.
    data["keys"]["purchase_orders"]["AAA|first"] = _entry(7)
    data["keys"]["purchase_orders"]["US001|0000000003"]["issue"] = "PROC-999"
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    state = State.load(path)
    assert state.entry("purchase_orders", "AAA|first") == _entry(7)
    assert state.entry("purchase_orders", "US001|0000000003")["issue"] == "PROC-999"
    assert state.keymap.count("purchase_orders") == 51
    state.save()
    # Edited in this layout without re-indenting: the digest no longer matches, so the file is read whole.
    text = path.read_text(encoding="utf-8").replace('"issue":"PROC-999"', '"issue":"PROC-998"')
    path.write_text(text, encoding="utf-8")
    assert State.load(path).entry("purchase_orders", "US001|0000000003")["issue"] == "PROC-998"


def test_file_of_the_previous_layout_is_read(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"schema": 1, "watermarks": {"vouchers": "2026-01-01T00:00:00+00:00"},
                                "keys": {"vouchers": {"US001|1": {"issue": "PROC-1", "pending": True, "label": "l"},
                                                      "US001|2": {"issue": "PROC-2"}}},
                                "vendors": {}, "replay": [], "extra": {}}, separators=(",", ":")), encoding="utf-8")
    state = State.load(path)
    assert state.entry("vouchers", "US001|2") == {"issue": "PROC-2"}
    assert state.pending("vouchers") == ["US001|1"]
    assert state.watermarks == {"vouchers": "2026-01-01T00:00:00+00:00"}


def test_find_issues_maps_jira_keys_back_to_records(tmp_path: Path) -> None:
    state = _big_state(tmp_path / "state.json", 300)
    state.set_entry("purchase_orders", "US002|new", {"issue": "PROC-5000", "hash": "x"})
    wanted = {"PROC-5", "PROC-299", "PROC-5000", "PROC-77777"}
    found = state.find_issues(["purchase_orders", "vouchers"], wanted)
    assert set(found) == {"PROC-5", "PROC-299", "PROC-5000"}
    kind, key, entry = found["PROC-5"]
    assert (kind, entry["issue"]) == ("purchase_orders", "PROC-5")
    assert state.entry(kind, key) is entry  # the live entry: changes to it are saved


@pytest.mark.parametrize("rows", [0, 1])
def test_empty_and_single_entry_files_are_valid_json(tmp_path: Path, rows: int) -> None:
    path = tmp_path / "state.json"
    state = State(path=path)
    for i in range(rows):
        state.set_entry("vouchers", f"k{i}", _entry(i))
    state.save()
    assert len(json.loads(path.read_bytes())["keys"].get("vouchers", {})) == rows
    state.drop_entry("vouchers", "k0")
    state.save()
    assert json.loads(path.read_bytes())["keys"] == {}


def test_a_pending_hint_in_the_header_never_drops_a_real_entry(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    state = _big_state(path, 20)
    state.set_entry("purchase_orders", "US009|1", {"pending": True, "label": "psft-po-US009-1"})
    state.save()
    text = path.read_text(encoding="utf-8")
    assert '"pending":{"purchase_orders":["US009|1"]}' in text
    # The header is outside the digest: an edit naming a synced record must not make it look pending.
    path.write_text(text.replace('["US009|1"]', '["US009|1","US001|0000000003"]'), encoding="utf-8")
    assert State.load(path).pending("purchase_orders") == ["US009|1"]


def test_a_save_read_back_that_is_not_the_file_written_stops_instead_of_forgetting(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlconnector import keymap
    from mlconnector.errors import StateError

    other = tmp_path / "other.json"
    _big_state(other, 3)
    state = _big_state(tmp_path / "state.json", 10)
    state.set_entry("purchase_orders", "US002|1", _entry(1))
    real = keymap.read_buffer
    monkeypatch.setattr(keymap, "read_buffer", lambda path: real(other))  # e.g. a stale network file system
    with pytest.raises(StateError, match="could not be read back"):
        state.save()
    with pytest.raises(StateError):  # never a silent "not found", which would create a duplicate issue
        state.entry("purchase_orders", "US001|0000000001")
    monkeypatch.undo()
    assert State.load(tmp_path / "state.json").entry("purchase_orders", "US002|1") == _entry(1)


def test_a_malformed_pending_hint_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    _big_state(path, 5)
    text = path.read_text(encoding="utf-8")
    assert '"pending":{}' in text
    text = text.replace('"pending":{}', '"pending":{"purchase_orders":[5,["x"]]}')
    path.write_text(text, encoding="utf-8")
    assert State.load(path).pending("purchase_orders") == []
