"""String item ids ("p463") on every backend: stored, searched, excluded, saved and returned as
the caller's strings; integer ids stay integers. Each test would fail on an int64-only index."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recstack.retrieval.index import ExactIndex, FaissIndex, MilvusIndex, load_index
from recstack.retrieval.index.ids import IdType, found_mask

from .conftest import BACKENDS, DIM, fill


def _string_ids(ids: np.ndarray) -> np.ndarray:
    """``p<id>`` plus a few awkward characters (quotes, backslash, non-ASCII) Milvus must escape."""
    names = np.array([f"p{i}" for i in ids], dtype=object)
    names[:3] = ['p"quoted"', "p'single'", "p\\ünï"]
    return names


@pytest.fixture
def named(data):
    ids, vectors, queries = data
    return _string_ids(ids), ids, vectors, queries


@pytest.fixture(params=list(BACKENDS))
def string_backend(request, tmp_path):
    """(name, empty index declared string-keyed, is-exact): Milvus fixes its key type when the
    collection is created; the others would also take it from the first add."""
    make, exact = BACKENDS[request.param]
    index = make(tmp_path, id_type="str")
    yield request.param, index, exact
    index.close()


def test_string_ids_give_the_same_neighbours_as_int_ids(string_backend, named):
    name, index, exact = string_backend
    names, ids, vectors, queries = named
    fill(index, names, vectors)
    reference = ExactIndex(dim=DIM)
    reference.add(ids, vectors)
    scores, found = index.search(queries, k=10)
    true_scores, true_ids = reference.search(queries, k=10)
    assert found.dtype == object and all(isinstance(i, str) for i in found.ravel())
    as_int = {n: i for n, i in zip(names, ids)}
    mapped = np.vectorize(as_int.__getitem__)(found)
    if exact:
        np.testing.assert_array_equal(mapped, true_ids)
        np.testing.assert_allclose(scores, true_scores, rtol=1e-5, atol=1e-5)
    else:  # approximate: most of the true top 10
        hits = (mapped[:, :, None] == true_ids[:, None, :]).any(axis=2).mean()
        assert hits >= 0.9, (name, hits)


def test_string_exclusions_padding_and_missing_ids(string_backend, named):
    name, index, _ = string_backend
    names, _, vectors, queries = named
    fill(index, names[:5], vectors[:5])
    scores, found = index.search(queries[:2], k=7, exclude=[names[:2], np.array(["never-indexed"], dtype=object)])
    assert found.dtype == object
    assert set(found[0, :3]) == set(names[2:5]) and list(found[0, 3:]) == [None] * 4
    assert set(found[1, :5]) == set(names[:5]) and list(found[1, 5:]) == [None, None]
    assert found_mask(found).tolist() == [[True] * 3 + [False] * 4, [True] * 5 + [False] * 2]
    assert np.isneginf(scores[~found_mask(found)]).all()


def test_string_ids_upsert_delete_and_survive_save_load(string_backend, named, tmp_path):
    name, index, _ = string_backend
    names, _, vectors, queries = named
    fill(index, names[:50], vectors[:50])
    index.upsert(names[[0, 60]], vectors[[1, 60]])  # replace one, add one
    index.delete(names[[5, 6]])
    if isinstance(index, MilvusIndex):
        index.flush()
    assert len(index) == 49
    with pytest.raises(ValueError, match="already indexed"):
        index.add(names[:1], vectors[:1])
    _, before = index.search(queries, k=5)
    assert not np.isin(before, names[[5, 6]]).any()
    index.save(tmp_path / "saved")
    index.close()
    reloaded = load_index(tmp_path / "saved")
    try:
        assert reloaded.id_type is IdType.STR
        _, after = reloaded.search(queries, k=5)
        np.testing.assert_array_equal(after, before)
        _, top = reloaded.search(vectors[1:2], k=1)
        assert top[0, 0] in (names[0], names[1])  # names[0] now holds vectors[1]
    finally:
        reloaded.close()


def test_an_index_keeps_one_id_type(backend, named):
    name, index, _ = backend
    names, ids, vectors, queries = named
    fill(index, ids[:5], vectors[:5])
    with pytest.raises(TypeError, match="int ids"):
        index.add(names[10:12], vectors[10:12])
    with pytest.raises(TypeError, match="int ids"):
        index.search(queries[:1], k=3, exclude=[names[:1]])
    _, found = index.search(queries[:1], k=3)
    assert found.dtype == np.int64 and set(found[0]) <= set(ids[:5].tolist())


def test_exact_and_faiss_take_the_id_type_from_the_first_add(named):
    names, _, vectors, queries = named
    for index in (ExactIndex(dim=DIM), FaissIndex(dim=DIM, kind="ivf", nprobe=4)):
        assert index.id_type is None
        index.add(names, vectors)
        assert index.id_type is IdType.STR
        _, found = index.search(queries, k=3)
        assert np.isin(found, names).all()


@pytest.mark.parametrize("make", [lambda tmp: ExactIndex(dim=DIM), lambda tmp: FaissIndex(dim=DIM, kind="hnsw")])
def test_the_id_strings_are_replaced_with_the_index_or_not_at_all(make, named, tmp_path, monkeypatch):
    """A save that dies after writing some files leaves the previous save whole (its manifest
    names its own files), and a finished save removes the files it replaced."""
    names, _, vectors, queries = named
    index = make(tmp_path)
    index.add(names[:20], vectors[:20])
    index.save(tmp_path / "idx")
    first_files = set(json.loads((tmp_path / "idx" / "manifest.json").read_text())["files"].values())
    _, expected = load_index(tmp_path / "idx").search(queries, k=5)

    index.add(names[20:40], vectors[20:40])
    import recstack.retrieval.index.base as base

    real_write_manifest = base.write_manifest

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(base, "write_manifest", crash)
    with pytest.raises(OSError, match="disk full"):
        index.save(tmp_path / "idx")
    _, found = load_index(tmp_path / "idx").search(queries, k=5)
    np.testing.assert_array_equal(found, expected)  # the old strings, with the old index

    monkeypatch.setattr(base, "write_manifest", real_write_manifest)
    index.save(tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert "id_strings" in manifest["files"] and manifest["id_type"] == "str"
    on_disk = {p.name for p in (tmp_path / "idx").iterdir()}
    assert set(manifest["files"].values()) <= on_disk and not first_files & on_disk  # replaced files removed
    strings = np.load(tmp_path / "idx" / manifest["files"]["id_strings"], allow_pickle=False)
    assert strings.dtype.kind == "U" and set(strings) == set(names[:40])
    assert len(load_index(tmp_path / "idx")) == 40


def test_integer_ids_come_back_as_integers(named):
    _, ids, vectors, queries = named
    for index in (ExactIndex(dim=DIM), FaissIndex(dim=DIM)):
        index.add(ids, vectors)
        _, found = index.search(queries, k=3)
        assert found.dtype == np.int64 and np.isin(found, ids).all()



@pytest.mark.parametrize(
    "ids, error, message",
    [
        (np.array(["a", 1], dtype=object), TypeError, "integers or strings"),
        (np.array(["a", None], dtype=object), ValueError, "1 missing"),
        (np.array(["a", "a"]), ValueError, "duplicates"),
        (np.array([1.5, 2.5]), TypeError, "integers or strings"),
    ],
)
def test_bad_ids_are_refused_clearly(ids, error, message):
    with pytest.raises(error, match=message):
        ExactIndex(dim=2).add(ids, np.zeros((2, 2), np.float32))


def test_python_ints_in_an_object_array_are_int_ids():
    index = ExactIndex(dim=2)
    index.add(np.array([5, 9], dtype=object), np.eye(2, dtype=np.float32))
    assert index.id_type is IdType.INT and index.search(np.eye(2, dtype=np.float32), k=1)[1].tolist() == [[5], [9]]
