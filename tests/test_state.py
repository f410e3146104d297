"""State file: atomic writes, refusal to touch corrupt/newer files, replay queue, run lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mlconnector.errors import EXIT_LOCKED, EXIT_STATE, LockedError, StateError
from mlconnector.state import SCHEMA_VERSION, State, run_lock, write_atomic


def test_missing_file_loads_empty_state(tmp_path: Path) -> None:
    st = State.load(tmp_path / "none.json")
    assert st.kinds() == [] and st.replay == [] and st.watermarks == {}
    assert not (tmp_path / "none.json").exists()


def test_save_load_roundtrip(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "state.json"
    st = State(path=path)
    st.watermarks["purchase_orders"] = "2024-03-05T20:02:11+00:00"
    st.set_entry("purchase_orders", "US001|0000000001", {"issue": "PROC-1", "id": "10000", "hash": "abc",
                                                          "comments": {"1": "10001"}})
    st.vendors["SHARE|0000000001"] = {"name": "Müller & Söhne GmbH"}
    st.extra["webhook"] = {"since": 5}
    st.enqueue("vouchers", "US002|00000003", {"VOUCHER_ID": "00000003"}, "boom", raw="<raw/>")
    assert st.dirty
    st.save()
    assert not st.dirty
    again = State.load(path)
    assert again.watermarks == st.watermarks
    assert again.entries("purchase_orders") == st.entries("purchase_orders")
    assert again.vendors == st.vendors
    assert again.replay == st.replay
    assert again.extra == st.extra
    assert json.loads(path.read_text(encoding="utf-8"))["schema"] == SCHEMA_VERSION
    assert again.entry("purchase_orders", "US001|0000000001")["issue"] == "PROC-1"
    assert again.entry("purchase_orders", "nope") is None


def test_write_atomic_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    write_atomic(path, b"one")
    write_atomic(path, b"two")
    assert path.read_bytes() == b"two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_failure_mid_write_keeps_old_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "state.json"
    st = State(path=path)
    st.watermarks["vendors"] = "old"
    st.save()
    before = path.read_bytes()

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    st.watermarks["vendors"] = "new"
    with pytest.raises(OSError):
        st.save()
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
    assert State.load(path).watermarks == {"vendors": "old"}


@pytest.mark.parametrize("content", [b"{not json", b"", b"[1, 2]", b"\xff\xfe garbage", b'{"schema": 1'])
def test_corrupt_file_is_refused_and_left_unchanged(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(content)
    with pytest.raises(StateError) as info:
        State.load(path)
    assert "corrupt" in info.value.message and str(path) in info.value.message
    assert info.value.exit_code == EXIT_STATE
    assert path.read_bytes() == content


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    content = json.dumps({"schema": SCHEMA_VERSION + 1, "keys": {}}).encode()
    path.write_bytes(content)
    with pytest.raises(StateError) as info:
        State.load(path)
    assert "newer" in info.value.message and "Upgrade" in info.value.message
    assert path.read_bytes() == content


def test_missing_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text('{"keys": {}}', encoding="utf-8")
    with pytest.raises(StateError) as info:
        State.load(path)
    assert "no schema version" in info.value.message


def test_unexpected_layout_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text('{"schema": 1, "keys": ["a", "b"]}', encoding="utf-8")
    with pytest.raises(StateError):
        State.load(path)


def test_enqueue_same_key_twice_keeps_one_item(tmp_path: Path) -> None:
    st = State(path=tmp_path / "s.json")
    first = st.enqueue("purchase_orders", "US001|1", {"v": 1}, "first error")
    second = st.enqueue("purchase_orders", "US001|1", {"v": 2}, "second error", raw="raw2")
    assert len(st.replay) == 1
    assert second["id"] == first["id"]
    item = st.replay[0]
    assert item["attempts"] == 2
    assert item["row"] == {"v": 2} and item["error"] == "second error" and item["raw"] == "raw2"
    assert item["first_failed"] <= item["last_failed"]
    assert st.find_replay(item["id"]) is item
    # A comment of the same record is a separate item.
    st.enqueue("purchase_orders", "US001|1", {"c": 1}, "comment failed", what="comment")
    assert len(st.replay) == 2


def test_dequeue_removes_only_the_matching_item(tmp_path: Path) -> None:
    st = State(path=tmp_path / "s.json")
    st.enqueue("purchase_orders", "US001|1", {}, "e")
    st.enqueue("purchase_orders", "US001|1", {}, "e", what="comment")
    st.enqueue("vouchers", "US001|1", {}, "e")
    st.dirty = False
    st.dequeue("purchase_orders", "US001|1")
    assert st.dirty
    assert [(i["kind"], i["what"]) for i in st.replay] == [("purchase_orders", "comment"), ("vouchers", "record")]
    st.dirty = False
    st.dequeue("purchase_orders", "nothing-here")
    assert not st.dirty and len(st.replay) == 2


def test_pending_lists_in_flight_creates(tmp_path: Path) -> None:
    st = State(path=tmp_path / "s.json")
    st.set_entry("requisitions", "A", {"pending": True})
    st.set_entry("requisitions", "B", {"issue": "PROC-2"})
    assert st.pending("requisitions") == ["A"]


HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from mlconnector.state import run_lock
    with run_lock(Path(sys.argv[1])):
        print("locked", flush=True)
        time.sleep(60)
""")


def _start_holder(state: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(state)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "locked", f"holder did not take the lock (exit {proc.poll()})"
    return proc


def test_run_lock_excludes_other_process_and_is_released_after_sigkill(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    proc = _start_holder(state)
    try:
        with pytest.raises(LockedError) as info, run_lock(state):
            pass
        assert info.value.exit_code == EXIT_LOCKED
        assert "state.json.lock" in info.value.message
    finally:
        proc.kill()  # SIGKILL: no cleanup code runs in the holder
        proc.wait(timeout=10)
    with run_lock(state):
        pass


def test_run_lock_released_on_normal_exit_and_reusable(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    with run_lock(state):
        pass
    with run_lock(state):
        code = "import sys; from pathlib import Path; from mlconnector.state import run_lock\n" \
               "from mlconnector.errors import LockedError\n" \
               "try:\n    run_lock(Path(sys.argv[1])).__enter__()\nexcept LockedError:\n    sys.exit(4)\n"
        other = subprocess.run([sys.executable, "-c", code, str(state)], timeout=30)
        assert other.returncode == 4


def test_pairs_that_name_their_records_alike_never_share_a_state(tmp_path: Path) -> None:
    from mlconnector.errors import StateError
    from mlconnector.runner import claim_state, pairs_held

    # A state of release 0.1.0 records neither its pairs nor its sites: its purchase orders are peoplesoft-jira's.
    old = State(path=tmp_path / "old.json")
    old.set_entry("purchase_orders", "US001|PO1", {"issue": "PROC-1"})
    assert pairs_held(old) == ["peoplesoft-jira"]
    claim_state(old, "jde-jira")  # built to share it: their records' names do not meet
    assert old.pairs == ["jde-jira", "peoplesoft-jira"]
    for other in ("peoplesoft-jaggaer", "procurify-peoplesoft", "peoplesoft-procore"):
        with pytest.raises(StateError, match="peoplesoft-jira") as err:
            claim_state(old, other)
        assert "instance" in err.value.message
    assert old.pairs == ["jde-jira", "peoplesoft-jira"]

    # A state bound to Procurify and PeopleSoft only (no Jira) holding requisitions is procurify-peoplesoft's.
    prc = State(path=tmp_path / "prc.json", sites={"procurify": "https://x", "peoplesoft": "https://y node N"})
    prc.set_entry("requisitions", "77|3", {"po": "000001"})
    assert pairs_held(prc) == ["procurify-peoplesoft"]
    claim_state(prc, "procurify-peoplesoft")
    prc.save()
    assert State.load(prc.path).pairs == ["procurify-peoplesoft"]
    with pytest.raises(StateError):
        claim_state(State.load(prc.path), "peoplesoft-jaggaer")

    fresh = State(path=tmp_path / "new.json")
    claim_state(fresh, "peoplesoft-procore")
    assert fresh.pairs == ["peoplesoft-procore"] and fresh.dirty
