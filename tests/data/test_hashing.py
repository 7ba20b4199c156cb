"""Hashes key saved vocabularies and hashed tables, so they never change between processes or runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa

from recstack.data.hashing import hash_array, hash_integers, hash_strings
from recstack.data.vocabulary import HashBuckets

VALUES = ["", "a", "abc", "user-12345", "é✓", "a" * 300]


def test_string_hashes_are_the_same_in_another_process():
    here = hash_strings(pa.array(VALUES)).tolist()
    code = (
        "import json, sys, pyarrow as pa\n"
        "from recstack.data.hashing import hash_strings\n"
        f"print(json.dumps(hash_strings(pa.array({VALUES!r})).tolist()))\n"
    )
    # A fresh interpreter with a different hash seed: Python's own hash() would differ.
    there = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={**os.environ, "PYTHONHASHSEED": "123"}
    )
    assert json.loads(there.stdout) == here


def test_hash_buckets_are_the_same_in_another_process():
    values = [f"item-{i}" for i in range(50)]
    here = HashBuckets(97).lookup(pa.array(values)).tolist()
    code = (
        "import json, pyarrow as pa\n"
        "from recstack.data.vocabulary import HashBuckets\n"
        f"print(json.dumps(HashBuckets(97).lookup(pa.array({values!r})).tolist()))\n"
    )
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env={**os.environ, "PYTHONHASHSEED": "7"})
    assert json.loads(there.stdout) == here


def test_hashes_are_pinned():
    # Changing these silently re-buckets every saved hashed table: do it only with a format bump.
    assert hash_strings(pa.array(["abc"])).tolist() == [PINNED_ABC]
    assert hash_integers(np.array([42])).tolist() == [PINNED_42]


def test_string_hash_ignores_array_slicing_and_nulls_hash_like_empty():
    array = pa.array(["x", "abc", None, "abc", ""])
    hashes = hash_strings(array)
    assert hashes[1] == hashes[3] and hashes[2] == hashes[4]
    assert hash_strings(array.slice(1, 2)).tolist() == hashes[1:3].tolist()
    assert len(set(hash_strings(pa.array([f"v{i}" for i in range(10_000)])).tolist())) == 10_000


def test_integers_and_their_text_share_a_bucket():
    buckets = HashBuckets(1000)
    assert buckets.lookup(pa.array([42, 7])).tolist() == buckets.lookup(pa.array(["42", "7"])).tolist()
    assert buckets.lookup(pa.array([42], pa.int32())).tolist() == buckets.lookup(pa.array([42], pa.int64())).tolist()


def test_hash_array_handles_large_strings_and_integers():
    assert hash_array(pa.array(["abc"], pa.large_string())).tolist() == hash_strings(pa.array(["abc"])).tolist()
    assert hash_array(pa.array([42], pa.int16())).tolist() == [PINNED_42]


PINNED_ABC = 5201569464615716368
PINNED_42 = 13679457532755275413
