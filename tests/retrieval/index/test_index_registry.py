"""The shared pieces: registry and manifest, input validation, the exclusion step, lazy imports."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from recstack.retrieval.index import (
    ExactIndex,
    FaissIndex,
    FaissKind,
    available_backends,
    create_index,
    load_index,
)
from recstack.retrieval.index.base import drop_excluded


def test_create_index_builds_a_registered_backend_with_its_options():
    index = create_index("faiss", dim=8, kind="hnsw", hnsw_m=8)
    assert isinstance(index, FaissIndex) and index.kind is FaissKind.HNSW and index.dim == 8
    assert available_backends() == ["exact", "faiss", "milvus"]


def test_create_index_rejects_unknown_backends_kinds_and_options():
    with pytest.raises(ValueError, match="known: \\['exact', 'faiss', 'milvus'\\]"):
        create_index("annoy", dim=8)
    with pytest.raises(ValueError, match="'pq'"):
        create_index("faiss", dim=8, kind="pq")
    with pytest.raises(TypeError):
        create_index("exact", dim=8, nprobe=3)


def test_save_writes_a_manifest_atomically(tmp_path):
    index = ExactIndex(dim=3)
    index.add(np.array([1, 2]), np.eye(2, 3, dtype=np.float32))
    index.save(tmp_path / "idx")
    index.save(tmp_path / "idx")  # overwrite in place: the first save's files are removed
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    files = manifest.pop("files")
    assert manifest == {"backend": "exact", "format_version": 1, "dim": 3, "id_type": "int"}
    assert sorted(files) == ["ids", "vectors"]
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == sorted([*files.values(), "manifest.json"])
    assert isinstance(load_index(tmp_path / "idx"), ExactIndex)


def test_load_index_without_a_manifest_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        load_index(tmp_path)


@pytest.mark.parametrize(
    "ids, vectors, error",
    [
        ([1, 1], np.zeros((2, 4)), "duplicates"),
        ([-1], np.zeros((1, 4)), ">= 0"),
        ([1, 2], np.zeros((2, 5)), r"shape \(N, 4\)"),
        ([1, 2, 3], np.zeros((2, 4)), "3 ids but 2 vectors"),
    ],
)
def test_bad_inputs_are_refused(ids, vectors, error):
    with pytest.raises(ValueError, match=error):
        ExactIndex(dim=4).add(np.array(ids), vectors)


def test_search_checks_k_and_the_exclusion_list():
    index = ExactIndex(dim=2)
    with pytest.raises(ValueError, match="k must be >= 1"):
        index.search(np.zeros((1, 2)), 0)
    with pytest.raises(ValueError, match="2 entries for 1 queries"):
        index.search(np.zeros((1, 2)), 1, exclude=[[1], [2]])


def test_drop_excluded_keeps_rank_order_and_pads():
    """The drawn example in base.py: k=3, exclude [7], only two other items exist."""
    scores = np.array([[0.9, 0.8, 0.7, -np.inf]], dtype=np.float32)
    ids = np.array([[7, 2, 9, -1]])
    kept_scores, kept_ids = drop_excluded(scores, ids, np.array([[7]]), k=3)
    assert kept_ids.tolist() == [[2, 9, -1]]
    assert kept_scores[0, :2].tolist() == pytest.approx([0.8, 0.7]) and np.isneginf(kept_scores[0, 2:]).all()


def test_the_package_imports_without_faiss_or_pymilvus():
    code = (
        "import sys; sys.modules['faiss'] = sys.modules['pymilvus'] = None\n"
        "from recstack.retrieval.index import create_index, FaissIndex\n"
        "assert len(create_index('exact', dim=2)) == 0\n"
        "try:\n    FaissIndex(dim=2)\nexcept ImportError as e:\n    print(e)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "recstack[vectors]" in result.stdout
