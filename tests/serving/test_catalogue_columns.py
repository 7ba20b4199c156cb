"""The catalogue reads users and histories by the columns a data set really has (seed 001:
``client_id`` users, ``act`` as the positive flag), not only MovieLens's names."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recstack.errors import RecstackError
from recstack.serving.catalogue import Catalogue


def _files(tmp_path: Path) -> dict[str, Path]:
    paths = {name: tmp_path / f"{name}.parquet" for name in ("items", "users", "events")}
    pq.write_table(pa.table({"post_id": ["p1", "p2", "p3"], "title": ["a", "b", "c"]}), paths["items"])
    pq.write_table(pa.table({"client_id": ["u1", "u2"], "age": [30, 40]}), paths["users"])
    pq.write_table(
        pa.table({
            "client_id": ["u1", "u1", "u1", "u2", "u2"],
            "post_id": ["p3", "p1", "p2", "p2", "p3"],
            "act": [1, 1, 0, 1, 1],
            "ts": [30, 10, 20, 5, 1],
        }),
        paths["events"],
    )
    return paths


def test_users_and_histories_keyed_by_the_given_columns(tmp_path: Path) -> None:
    paths = _files(tmp_path)
    catalogue = Catalogue.from_files(catalog=paths["items"], users=paths["users"], history=paths["events"], item_column="post_id",
                                     user_column="client_id", history_label_column="act", history_time_column="ts")
    assert catalogue.histories.get("u1").tolist() == ["p1", "p3"]  # act=0 row left out, oldest first by ts
    assert catalogue.histories.get("u2").tolist() == ["p3", "p2"]
    assert catalogue.users.keys.tolist() == ["u1", "u2"]


def test_without_a_label_column_every_history_row_counts(tmp_path: Path) -> None:
    paths = _files(tmp_path)
    catalogue = Catalogue.from_files(catalog=paths["items"], users=None, history=paths["events"], item_column="post_id",
                                     user_column="client_id", history_label_column=None, history_time_column="ts")
    assert catalogue.histories.get("u1").tolist() == ["p1", "p2", "p3"]


def test_a_user_column_the_history_lacks_names_it(tmp_path: Path) -> None:
    paths = _files(tmp_path)
    with pytest.raises(RecstackError, match="user_id"):
        Catalogue.from_files(catalog=paths["items"], users=None, history=paths["events"], item_column="post_id")
