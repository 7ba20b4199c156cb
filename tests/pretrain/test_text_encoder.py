"""Text encoding with a tiny local sentence-transformers model (built in the conftest, offline)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from recstack.errors import DataError
from recstack.pretrain import encode_text_column, encode_text_main, encode_texts, load_text_model, read_vectors
from recstack.pretrain import text_encoder

TEXTS = ["red running shoe", "italian pasta cookbook", "red running shoe", "blue sneakers for running"]


def test_texts_become_unit_vectors_and_equal_texts_equal_vectors(tiny_text_model: Path) -> None:
    vectors = encode_texts(TEXTS, str(tiny_text_model), batch_size=2, progress=False, device="cpu")
    assert vectors.shape == (4, 32) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(vectors[0], vectors[2])
    assert not np.allclose(vectors[0], vectors[1])

    raw = encode_texts(TEXTS, tiny_text_model, normalize=False, progress=False, device="cpu")
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), vectors, rtol=1e-4, atol=1e-6)
    assert encode_texts([], tiny_text_model, progress=False, device="cpu").shape == (0, 32)


def test_loading_is_offline_by_default(tiny_text_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in text_encoder.OFFLINE_ENV:
        monkeypatch.delenv(name, raising=False)
    text_encoder._load.cache_clear()
    load_text_model(tiny_text_model, device="cpu")
    assert all(os.environ[name] == "1" for name in text_encoder.OFFLINE_ENV)
    # An explicit opt-out in the environment is respected.
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    text_encoder._load.cache_clear()
    load_text_model(tiny_text_model, device="cpu")
    assert os.environ["HF_HUB_OFFLINE"] == "0"


def test_a_missing_model_folder_is_named(tmp_path: Path) -> None:
    pytest.importorskip("sentence_transformers")
    with pytest.raises(FileNotFoundError, match="no_model_here"):
        encode_texts(["x"], str(tmp_path / "no_model_here"), progress=False)


def test_missing_sentence_transformers_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # makes the import fail
    text_encoder._load.cache_clear()
    with pytest.raises(ImportError, match=r"recstack\[text\]"):
        encode_texts(["x"], str(tmp_path), progress=False)
    text_encoder._load.cache_clear()


def test_importing_the_package_loads_neither_gensim_nor_sentence_transformers() -> None:
    code = "import sys, recstack.pretrain; print(sorted({'gensim', 'sentence_transformers'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip() == "[]"


def write_items(path: Path) -> None:
    items = pa.table(
        {
            "item_id": [10, 11, 12, 13, 14],
            "title": [TEXTS[0], TEXTS[1], None, TEXTS[0], TEXTS[3]],
        }
    )
    pcsv.write_csv(items, path) if path.suffix == ".csv" else pq.write_table(items, path)


@pytest.mark.parametrize(("source", "target"), [("items.parquet", "titles.parquet"), ("items.csv", "titles.npy")])
def test_encode_text_column_writes_a_readable_vector_file(
    tiny_text_model: Path, tmp_path: Path, source: str, target: str
) -> None:
    write_items(tmp_path / source)
    table = encode_text_column(
        tmp_path / source, id_column="item_id", text_column="title", model=str(tiny_text_model),
        out_path=tmp_path / target, progress=False, device="cpu",
    )
    read = read_vectors(tmp_path / target)
    assert read.ids == table.ids == ["10", "11", "13", "14"]  # item 12 has no title: no vector
    np.testing.assert_array_equal(read.vectors, table.vectors)
    expected = encode_texts([TEXTS[0], TEXTS[1], TEXTS[0], TEXTS[3]], tiny_text_model, progress=False, device="cpu")
    np.testing.assert_allclose(read.vectors, expected, rtol=1e-5, atol=1e-6)


def test_encode_text_column_rejects_duplicate_ids_before_loading_the_model(tmp_path: Path) -> None:
    pq.write_table(pa.table({"id": ["a", "b", "a"], "text": ["x", None, "z"]}), tmp_path / "items.parquet")
    with pytest.raises(DataError, match=r"items.parquet.*row 3.*duplicate id 'a' \(first at row 1\)"):
        encode_text_column(  # the model folder does not exist: loading it would fail differently
            tmp_path / "items.parquet", id_column="id", text_column="text", model=str(tmp_path / "no_model"),
            out_path=tmp_path / "out.parquet", progress=False, device="cpu",
        )
    assert not (tmp_path / "out.parquet").exists()


def test_encode_text_command(tiny_text_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_items(tmp_path / "items.parquet")
    argv = [
        str(tmp_path / "items.parquet"), "--id-column", "item_id", "--text-column", "title",
        "--model", str(tiny_text_model), "--out", str(tmp_path / "titles.vec"), "--device", "cpu", "--no-progress",
    ]
    assert encode_text_main(argv) == 0
    assert "wrote 4 text vectors of dim 32" in capsys.readouterr().out
    assert read_vectors(tmp_path / "titles.vec").ids == ["10", "11", "13", "14"]
