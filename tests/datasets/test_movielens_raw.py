"""load_raw: both layouts, folders and zips, clear errors, and the first-use download."""

from __future__ import annotations

import io
import subprocess
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pytest

from recstack.datasets import load_raw
from recstack.datasets import movielens_raw

HAND_RATINGS = 10


def test_official_layout_is_typed_and_cleaned(hand_official: Path) -> None:
    raw = load_raw(hand_official)
    assert raw.ratings.schema == movielens_raw.RATINGS_SCHEMA
    assert raw.users.schema == movielens_raw.USERS_SCHEMA
    assert raw.items.schema == movielens_raw.ITEMS_SCHEMA
    assert raw.ratings.num_rows == HAND_RATINGS
    items = {row["item_id"]: row for row in raw.items.to_pylist()}
    assert items[1] == {"item_id": 1, "title": "Toy Story", "release_year": 1995, "genres": ["Animation", "Children's", "Comedy"]}
    assert items[3]["title"] == "Café au lait"  # u.item is latin-1
    assert items[4]["release_year"] is None
    assert raw.users.to_pylist()[2]["zip_code"] == "T8H1N"


def test_recbole_layout_reads_to_the_same_tables(hand_official: Path, hand_recbole: Path) -> None:
    official, recbole = load_raw(hand_official), load_raw(hand_recbole)
    assert recbole.ratings.equals(official.ratings)
    assert recbole.users.equals(official.users)
    assert recbole.items.equals(official.items)


def test_zip_with_a_top_folder(hand_official: Path, tmp_path: Path) -> None:
    archive_path = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(archive_path, "w") as archive:
        for file in hand_official.iterdir():
            archive.write(file, f"ml-100k/{file.name}")
    assert load_raw(archive_path).items.equals(load_raw(hand_official).items)


def test_missing_file_is_named(hand_official: Path) -> None:
    (hand_official / "u.user").unlink()
    with pytest.raises(FileNotFoundError, match="u.user"):
        load_raw(hand_official)


def test_folder_without_data_says_what_it_expected(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="u.data .*ml-100k.inter"):
        load_raw(tmp_path)


def test_no_source_downloads_recbole_wheel_into_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], fake_ml: SimpleNamespace
) -> None:
    monkeypatch.setenv("RECSTACK_CACHE", str(tmp_path / "cache"))
    fake_data = fake_ml.write_recbole(tmp_path / "wheel-data", fake_ml.hand)
    calls: list[list[str]] = []

    def fake_pip(command: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        calls.append(command)
        wheel = Path(command[command.index("-d") + 1]) / "recbole-1.2.1-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr("recbole/__init__.py", "")
            for file in fake_data.iterdir():
                archive.write(file, f"recbole/dataset_example/ml-100k/{file.name}")
        return subprocess.CompletedProcess(command, 0, stdout="saved")

    monkeypatch.setattr(movielens_raw.subprocess, "run", fake_pip)
    raw = load_raw()
    assert calls and calls[0][1:5] == ["-m", "pip", "download", "--no-deps"] and "recbole==1.2.1" in calls[0]
    assert "recbole==1.2.1" in capsys.readouterr().err
    assert (tmp_path / "cache" / "ml-100k" / "ml-100k.inter").is_file()
    assert raw.ratings.num_rows == HAND_RATINGS
    load_raw()  # second call: served from the cache, no download
    assert len(calls) == 1


def test_recbole_genres_split_on_spaces_and_empty_class_is_empty_list() -> None:
    genres = movielens_raw._split_genres(pa.chunked_array([["Action Sci-Fi", "", "Drama"]]))
    assert genres.to_pylist() == [["Action", "Sci-Fi"], [], ["Drama"]]


def test_flags_become_genre_lists_in_order() -> None:
    import numpy as np

    flags = np.array([[0, 1, 1], [0, 0, 0], [1, 0, 0]])
    assert movielens_raw._lists_from_flags(flags, ("a", "b", "c")).to_pylist() == [["b", "c"], [], ["a"]]


def test_read_csv_bytes_do_not_need_quotes() -> None:
    table = movielens_raw._csv(io.BytesIO(b'1|"quoted title|x\n').getvalue(), "|", ["a", "b", "c"], {"b": pa.string()})
    assert table["b"].to_pylist() == ['"quoted title']
