"""Result parts, the journal, and how other tools read them."""
from pathlib import Path

import pyarrow.parquet as pq

from replay.results import Journal, Result, ResultParts, read_journal, read_results, recorded_ids


def test_parts_are_private_numbered_and_tagged(tmp_path: Path) -> None:
    d = tmp_path / "rec" / "results" / "shadow"
    ResultParts(d).write([Result("a-0", "shadow", status=200, headers=[("Server", "x")], body=b"hi", body_len=2)])
    ResultParts(d).write([Result("a-1", "shadow", error="timeout", error_detail="no answer")])
    ResultParts(d, "-w1").write([Result("a-2", "shadow", status=500)])
    names = sorted(p.name for p in d.iterdir())
    assert names == ["part-00000-w1.parquet", "part-00000.parquet", "part-00001.parquet"]
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in d.iterdir())
    assert d.stat().st_mode & 0o777 == 0o700
    rows = {r["id"]: r for r in read_results(tmp_path / "rec", "shadow")}
    assert rows["a-0"]["headers"] == [{"name": "Server", "value": "x"}] and rows["a-0"]["body"] == b"hi"
    assert rows["a-1"]["error"] == "timeout" and rows["a-1"]["status"] is None
    assert recorded_ids(d) == {"a-0", "a-1", "a-2"}


def test_journal_survives_a_cut_line_and_stays_out_of_parquet_readers(tmp_path: Path) -> None:
    d = tmp_path / "shadow"
    j = Journal(d)
    j.add(["c-0", "c-1"])
    j.close()
    Journal(d, "-w1").add(["c-2"])
    with open(d / "_sent.log", "a") as f:
        f.write("c-9")  # a kill in the middle of a write: no newline, so not sent yet
    assert read_journal(d) == {"c-0", "c-1", "c-2"}
    j = Journal(d)  # the next run drops the cut line (never sent) before adding its own
    j.add(["c-3"])
    j.close()
    assert read_journal(d) == {"c-0", "c-1", "c-2", "c-3"}
    assert (d / "_sent.log").read_text() == "c-0\nc-1\nc-3\n"
    assert (d / "_sent.log").stat().st_mode & 0o777 == 0o600
    ResultParts(d).write([Result("c-0", "shadow", status=200)])
    # pandas/pyarrow read the directory as a dataset: the journal's leading _ keeps it out
    assert pq.read_table(d).column("id").to_pylist() == ["c-0"]


def test_lock_is_exclusive_and_the_results_tree_private(tmp_path: Path) -> None:
    import pytest

    from replay.results import Busy, lock_results

    rec = tmp_path / "rec"
    fds = lock_results(rec, ["shadow", "baseline"])
    assert (rec / "results").stat().st_mode & 0o777 == 0o700
    assert (rec / "results" / "shadow").stat().st_mode & 0o777 == 0o700
    with pytest.raises(Busy):
        lock_results(rec, ["baseline"])
    for fd in fds:
        import os

        os.close(fd)
    for fd in lock_results(rec, ["baseline"]):
        os.close(fd)
