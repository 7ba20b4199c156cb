"""The user's seed articles 000-002 as shipped examples (examples/seedNNN), trained end to end.

Each test trains the example's own config (fewer epochs) into a temporary run folder and checks
the held-out AUC is well above chance: the data carry a planted signal (users click items of the
clusters / topics they like), see examples/make_examples.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from recstack.config import RunConfig
from recstack.evaluation.ranking_metrics import ranking_report
from recstack.export.run_folder import load_run
from recstack.workflows.train import train_run

pytestmark = pytest.mark.slow


def _train(examples_dir: Path, seed: str, out: Path, **overrides) -> dict:
    config = RunConfig.from_yaml(examples_dir / f"seed{seed}" / "config.yaml", overrides={"output": str(out), **overrides})
    return train_run(config, log=lambda _: None)


def test_every_example_is_small(examples_dir: Path) -> None:
    for seed in ("000", "001", "002"):
        folder = examples_dir / f"seed{seed}"
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        assert (folder / "config.yaml").exists() and size < 2 << 20, (seed, size)


def test_seed000_dssm_on_pretrained_vectors_then_towers_apart(examples_dir: Path, tmp_path: Path) -> None:
    """Headerless ``label,u_1..u_128,i_1..i_128`` rows, streamed; early stopping restores the best
    weights; TensorBoard logs; the user and item towers then embed users and items on their own."""
    first = (examples_dir / "seed000" / "train.csv").read_text().split("\n", 1)[0].split(",")
    assert len(first) == 1 + 128 + 128 and first[0] in ("0", "1")

    metrics = _train(examples_dir, "000", tmp_path, **{"trainer.epochs": 6, "trainer.patience": 2})

    assert metrics["test"]["auc"] > 0.8, metrics["test"]
    assert metrics["valid"]["auc"] > 0.8, metrics["valid"]
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    # the model written is the best epoch's: its valid AUC is the best one seen during training
    run = load_run(tmp_path)
    rows = np.loadtxt(examples_dir / "seed000" / "test.csv", delimiter=",", dtype=np.float32)  # (R, 257)
    labels, users, items = rows[:, 0], torch.from_numpy(rows[:, 1:129]), torch.from_numpy(rows[:, 129:])
    with torch.no_grad():
        user_vectors = run.model.user_tower()(users)  # (R, 128), unit rows
        item_vectors = run.model.item_tower()(items)  # (R, 128)
    assert user_vectors.shape == item_vectors.shape == (len(rows), 128)
    torch.testing.assert_close(user_vectors.norm(dim=1), torch.ones(len(rows)))
    cosines = (user_vectors * item_vectors).sum(dim=1).numpy()  # (R,)
    # towers apart score exactly as the trained model: the same test AUC
    assert ranking_report(labels, 1 / (1 + np.exp(-10 * cosines)))["auc"] == pytest.approx(metrics["test"]["auc"], abs=1e-6)


def test_seed001_dssm_production_features(examples_dir: Path, tmp_path: Path) -> None:
    """The article's TSV columns; frozen pretrained post vectors for item_embed and client_embed
    (mean over read_post_id, unknown posts ignored); topic_id's table shared by follow_topic_id and
    all_topic_fav_7; towers 256-256-128; cosine x gamma; weighted BCE (pos_weight 1.2); AUC."""
    header = (examples_dir / "seed001" / "train.tsv").read_text().split("\n", 1)[0].split("\t")
    assert header == ["act", "client_id", "post_id", "client_type", "follow_topic_id", "all_topic_fav_7", "topic_id", "read_post_id"]

    metrics = _train(examples_dir, "001", tmp_path, **{"trainer.epochs": 6})

    assert metrics["test"]["auc"] > 0.75, metrics["test"]
    run = load_run(tmp_path)
    model = run.model
    # one topic table for the three topic fields, one frozen post-vector table for both towers
    assert model.user_tower().embeddings.table("follow_topic_id") is model.user_tower().embeddings.table("all_topic_fav_7")
    assert model.user_tower().embeddings.table("follow_topic_id") is model.item_tower().embeddings.table("topic_id")
    post_table = model.item_tower().embeddings.table("item_embed")
    assert post_table is model.user_tower().embeddings.table("client_embed")
    assert not post_table.weight.requires_grad
    # the frozen rows are still the file's vectors after training
    from recstack.pretrain import read_vectors

    vectors = read_vectors(examples_dir / "seed001" / "post_vectors.txt")
    torch.testing.assert_close(post_table.weight[2 : 2 + len(vectors)], torch.from_numpy(vectors.vectors).float())


def test_seed002_dcn_on_text_vectors(examples_dir: Path, tmp_path: Path) -> None:
    """News text vectors (sentence-transformers) in a frozen table; user vector = mean of the
    clicked news' vectors; DCN on [user vector, news vector]; binary task."""
    metrics = _train(examples_dir, "002", tmp_path, **{"trainer.epochs": 3})

    assert metrics["test"]["auc"] > 0.8, metrics["test"]
    assert load_run(tmp_path).model_spec["name"] == "dcn"
