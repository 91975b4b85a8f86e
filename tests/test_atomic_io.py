from pathlib import Path

import pytest

from iasa.atomic_io import atomic_output, write_json


def test_output_appears_only_when_the_block_succeeds(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "result.txt"
    with atomic_output(target) as temporary:
        assert temporary.parent == target.parent and temporary.suffix == ".txt"
        temporary.write_text("complete")
        assert not target.exists()
    assert target.read_text() == "complete"
    assert target.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in target.parent.iterdir()) == ["result.txt"]


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "result.json"
    write_json(target, {"version": 1})
    with pytest.raises(RuntimeError):
        with atomic_output(target) as temporary:
            temporary.write_text("half")
            raise RuntimeError("writer failed")
    assert target.read_text() == '{\n  "version": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]
