"""torch-rechub's DSSM / YouTubeDNN on recstack's MovieLens-100K retrieval split (a peer run).

Runs in its own venv (torch-rechub is not a recstack dependency; recstack is not imported)::

    python3 -m venv /work/bench-venv-rechub
    /work/bench-venv-rechub/bin/pip install torch==2.13.0 torch-rechub pyarrow
    /work/bench-venv-rechub/bin/python benchmarks/_rechub_peer.py --data data/ml100k_retrieval \
        --out runs/bench_retrieval/rechub_dssm_seed0 --model dssm --seed 0

It reads the same parquet files as recstack (train positives with their ``hist_item_ids``; the
test rows' histories for the user vectors; the item catalogue) and writes ``user_ids.npy``,
``user_vectors.npy`` (one per test user), ``item_ids.npy`` and ``item_vectors.npy`` (one per
catalogue item); ``benchmarks/retrieval.py`` scores them with recstack's evaluator, so the
metric code is the one every other method goes through.

Training follows torch-rechub's own MovieLens matching examples (``examples/matching``):
features user_id, gender, age, occupation, zip + mean-pooled history sharing the item table
(user) and item_id + genre (item); negatives drawn with its ``negative_sample`` (word2vec
popularity ** 0.75, 3 per positive); DSSM point-wise (BCE, ``MatchTrainer(mode=0)``), YouTubeDNN
list-wise (softmax over the positive and its 3 negatives, ``mode=2``), temperature 0.02,
Adam, 10 epochs. Only the samples differ: recstack's train rows instead of the examples' own
split.
"""

from __future__ import annotations

import argparse
import random
from collections import Counter, OrderedDict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader
from torch_rechub.basic.features import SequenceFeature, SparseFeature
from torch_rechub.models.matching import DSSM, YoutubeDNN
from torch_rechub.trainers import MatchTrainer
from torch_rechub.utils.data import PredictDataset, TorchDataset, pad_sequences
from torch_rechub.utils.match import negative_sample

USER_COLUMNS = ("user_id", "gender", "age", "occupation", "zip_prefix")
SEQ_LEN = 50
EMBED_DIM = 16
NEG_RATIO = 3


def encode(values: np.ndarray, vocab: dict) -> np.ndarray:
    """Raw values -> 1-based codes (0 is padding / unknown)."""
    return np.array([vocab.get(v, 0) for v in values.tolist()], dtype=np.int64)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", choices=("dssm", "youtube_dnn"), required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)

    train = pq.read_table(args.data / "train.parquet").to_pandas()
    test = pq.read_table(args.data / "test.parquet").to_pandas()
    users = pq.read_table(args.data / "users.parquet").to_pandas()
    items = pq.read_table(args.data / "items.parquet").to_pandas()

    vocabs = {c: {v: i + 1 for i, v in enumerate(sorted(users[c].astype(str).unique()))} for c in USER_COLUMNS}
    item_vocab = {v: i + 1 for i, v in enumerate(items["item_id"].tolist())}
    genre_vocab = {v: i + 1 for i, v in enumerate(sorted(items["genre"].astype(str).unique()))}
    profile = {c: dict(zip(users["user_id"].tolist(), encode(users[c].astype(str).to_numpy(), vocabs[c]).tolist())) for c in USER_COLUMNS}
    item_genre = dict(zip(items["item_id"].tolist(), encode(items["genre"].astype(str).to_numpy(), genre_vocab).tolist()))

    def user_inputs(frame) -> dict[str, np.ndarray]:
        x = {c: np.array([profile[c][u] for u in frame["user_id"].tolist()]) for c in USER_COLUMNS}
        hist = [[item_vocab.get(i, 0) for i in h] for h in frame["hist_item_ids"].tolist()]
        x["hist_item_id"] = pad_sequences(hist, maxlen=SEQ_LEN, value=0, padding="pre", truncating="pre")
        return x

    def item_inputs(item_ids: np.ndarray) -> dict[str, np.ndarray]:
        return {"item_id": encode(item_ids, item_vocab), "genre": np.array([item_genre[i] for i in item_ids.tolist()])}

    # torch-rechub's negative sampler, over the train positives' item counts
    counts = Counter(train["item_id"].tolist())
    ordered = OrderedDict(sorted(counts.items(), key=lambda kv: kv[1], reverse=True))
    negatives = negative_sample(ordered, ratio=len(train) * NEG_RATIO, method_id=1).reshape(len(train), NEG_RATIO)

    user_features = [SparseFeature(c, vocab_size=len(vocabs[c]) + 1, embed_dim=EMBED_DIM) for c in USER_COLUMNS]
    user_features.append(SequenceFeature("hist_item_id", vocab_size=len(item_vocab) + 1, embed_dim=EMBED_DIM, pooling="mean", shared_with="item_id"))

    base = user_inputs(train)
    if args.model == "dssm":
        # point-wise: each positive (label 1) and NEG_RATIO copies with a sampled item (label 0)
        repeat = np.repeat(np.arange(len(train)), 1 + NEG_RATIO)
        item_ids = np.stack([train["item_id"].to_numpy(), *negatives.T], axis=1).reshape(-1)
        x = {k: v[repeat] for k, v in base.items()} | item_inputs(item_ids)
        y = np.tile(np.array([1] + [0] * NEG_RATIO, dtype=np.float32), len(train))
        item_features = [SparseFeature("item_id", vocab_size=len(item_vocab) + 1, embed_dim=EMBED_DIM), SparseFeature("genre", vocab_size=len(genre_vocab) + 1, embed_dim=EMBED_DIM)]
        model = DSSM(
            user_features,
            item_features,
            temperature=0.02,
            user_params={"dims": [256, 128, 64], "activation": "prelu"},
            item_params={"dims": [256, 128, 64], "activation": "prelu"},
        )
        mode = 0
    else:
        # list-wise: the positive first, then its NEG_RATIO sampled items; the label is index 0
        x = base | item_inputs(train["item_id"].to_numpy())
        x["neg_items"] = encode(negatives.reshape(-1), item_vocab).reshape(len(train), NEG_RATIO)
        y = np.zeros(len(train), dtype=np.int64)
        item_features = [SparseFeature("item_id", vocab_size=len(item_vocab) + 1, embed_dim=EMBED_DIM)]
        neg_item_feature = [SequenceFeature("neg_items", vocab_size=len(item_vocab) + 1, embed_dim=EMBED_DIM, pooling="concat", shared_with="item_id")]
        model = YoutubeDNN(user_features, item_features, neg_item_feature, user_params={"dims": [128, 64, EMBED_DIM]}, temperature=0.02)
        mode = 2

    trainer = MatchTrainer(
        model,
        mode=mode,
        optimizer_params={"lr": args.lr, "weight_decay": 1e-6},
        n_epoch=args.epochs,
        device="cpu",
        model_path=str(args.out),
    )
    generator = torch.Generator().manual_seed(args.seed)
    trainer.fit(DataLoader(TorchDataset(x, y), batch_size=args.batch_size, shuffle=True, generator=generator))

    test_x = user_inputs(test)
    catalogue = items["item_id"].to_numpy()
    user_vectors = trainer.inference_embedding(model, "user", DataLoader(PredictDataset(test_x), batch_size=1024), str(args.out))
    item_vectors = trainer.inference_embedding(model, "item", DataLoader(PredictDataset(item_inputs(catalogue)), batch_size=1024), str(args.out))
    np.save(args.out / "user_ids.npy", test["user_id"].to_numpy())
    np.save(args.out / "user_vectors.npy", user_vectors.numpy().astype(np.float32))
    np.save(args.out / "item_ids.npy", catalogue)
    np.save(args.out / "item_vectors.npy", item_vectors.numpy().astype(np.float32))


if __name__ == "__main__":
    main()
