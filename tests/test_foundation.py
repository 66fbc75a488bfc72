"""The package skeleton: CLI, errors, atomic writes, dataset split manifest."""

from __future__ import annotations

import pytest

from crisp import __version__
from crisp.atomic import atomic_path, write_text_atomic
from crisp.cli import main
from crisp.dataset import make_split, read_split, write_split
from crisp.errors import CrispError


def test_version_printed(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"crisp {__version__}"


def test_unknown_verb_is_usage_error():
    assert main(["no-such-verb"]) == 2


def test_error_names_path():
    err = CrispError("is broken", "/x/y.mrc")
    assert str(err) == "/x/y.mrc: is broken"
    assert err.path == "/x/y.mrc"


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    write_text_atomic(target, "whole")
    assert target.read_text() == "whole"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_split_is_seeded_disjoint_and_complete(tmp_path):
    names = [f"mic{i:02d}" for i in range(24)]
    a = make_split(names, 16, 6, seed=3)
    b = make_split(list(reversed(names)), 16, 6, seed=3)
    assert a == b
    assert (len(a.train), len(a.val), len(a.test)) == (16, 6, 2)
    assert sorted(a.train + a.val + a.test) == names
    assert make_split(names, 16, 6, seed=4) != a
    write_split(tmp_path / "split.yaml", a)
    assert read_split(tmp_path / "split.yaml") == a


def test_split_too_large_is_error():
    with pytest.raises(CrispError, match="cannot split 5"):
        make_split([str(i) for i in range(5)], 4, 2)


def test_dataset_diameter_from_nested_record(tmp_path):
    from crisp.config import save_yaml
    from crisp.dataset import dataset_diameter_px

    assert dataset_diameter_px(tmp_path) is None
    save_yaml(tmp_path / "labels.yaml", {"method": "disk", "diameter_px": 108})
    assert dataset_diameter_px(tmp_path) == 108.0
    save_yaml(tmp_path / "simulation.yaml", {"reference": {"box": 128, "diameter_px": 106.28}})
    assert dataset_diameter_px(tmp_path) == 106.28  # simulation.yaml is read first


def test_dataset_subset_needs_a_split(tmp_path):
    from crisp.dataset import DatasetFolder

    (tmp_path / "micrographs").mkdir()
    (tmp_path / "micrographs" / "a.mrc").write_bytes(b"")
    folder = DatasetFolder.open(tmp_path)
    with pytest.raises(CrispError, match="no split.yaml"):
        folder.subset("val")
    write_split(folder.split_file, make_split(["a"], 1, 0))
    assert folder.subset("train") == ["a"]
    with pytest.raises(CrispError, match="'val' subset of the split is empty"):
        folder.subset("val")
