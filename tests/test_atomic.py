"""kickit.atomic: a failed or refused write never replaces the old file and leaves no temp file behind."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from kickit.atomic import atomic_write


def test_replaces_on_success_with_shareable_permissions(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "x.bin"
    with atomic_write(target, fsync_dir=True) as fh:
        fh.write(b"new")
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in target.parent.iterdir()] == ["x.bin"]


@pytest.mark.parametrize("where", ["body", "check"])
def test_an_error_keeps_the_old_file(tmp_path: Path, where: str) -> None:
    target = tmp_path / "x.txt"
    target.write_text("old")

    def refuse(tmp: Path) -> None:
        assert tmp.read_text() == "half"  # the check sees the finished temp file
        raise ValueError("refused")

    with pytest.raises((RuntimeError, ValueError)):
        with atomic_write(target, "w", before_replace=refuse if where == "check" else None) as fh:
            fh.write("half")
            if where == "body":
                raise RuntimeError("crash while writing")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]
