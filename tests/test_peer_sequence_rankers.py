"""benchmarks/_peer_sequence_rankers.py: the peers' history arrays match what recstack's run reads."""

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "_peer_sequence_rankers.py"


def load():
    spec = importlib.util.spec_from_file_location("_peer_sequence_rankers", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_padded_keeps_the_most_recent_oldest_first_and_codes_unknowns_as_one():
    peers = load()
    table = {str(i): i + 2 for i in range(100)}
    lists = pd.Series([list(range(60)), [], [5, 999], [7]], dtype=object)
    out = peers.padded(lists, table)
    assert out.shape == (4, peers.MAXLEN) and out.dtype == np.int64
    np.testing.assert_array_equal(out[0], np.arange(10, 60) + 2)  # the 50 most recent, oldest first
    assert not out[1].any()  # no history: all padding
    np.testing.assert_array_equal(out[2, :3], [7, 1, 0])  # unknown -> 1, padding 0 at the end
    np.testing.assert_array_equal(out[3, :2], [9, 0])
