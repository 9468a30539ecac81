"""The shared file helpers: atomic writes, canonical hashing, safe output paths."""

from __future__ import annotations

import os
import stat

import pytest

from croft.errors import CroftError
from croft.fileio import (
    atomic_write_json,
    atomic_write_text,
    canonical_hash,
    inside,
    read_json,
    safe_name,
)


def test_atomic_write_honours_umask_and_leaves_no_temp(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "a" / "report.md", "hello\n")
    finally:
        os.umask(old)
    assert path.read_text() == "hello\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["report.md"]


def test_failed_write_keeps_the_old_file(tmp_path):
    from croft.fileio import atomic_write_with

    target = tmp_path / "x.json"
    atomic_write_json(target, {"a": 1})

    def boom(p):
        p.write_text("partial")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write_with(target, boom)
    assert read_json(target, "x") == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_canonical_hash_ignores_key_order():
    assert canonical_hash({"a": 1, "b": [1, 2]}) == canonical_hash({"b": [1, 2], "a": 1})
    assert canonical_hash({"a": 1}) != canonical_hash({"a": 2})
    assert len(canonical_hash({"a": 1}, 12)) == 12


@pytest.mark.parametrize("bad", ["../x", "/abs", "..", ".hidden", "a/b", "", "-x", "a b"])
def test_safe_name_refuses_path_like_labels(bad):
    with pytest.raises(CroftError, match="cannot be used as a folder name"):
        safe_name(bad, "label")


def test_inside_refuses_escape(tmp_path):
    assert inside(tmp_path, "runs", "a") == (tmp_path / "runs" / "a").resolve()
    with pytest.raises(CroftError, match="outside"):
        inside(tmp_path, "..", "elsewhere")


def test_read_json_errors_are_one_line(tmp_path):
    bad = tmp_path / "m.json"
    bad.write_text('{"a": ')
    with pytest.raises(CroftError) as err:
        read_json(bad, "metrics file")
    assert "\n" not in str(err.value) and "not valid JSON" in str(err.value)
