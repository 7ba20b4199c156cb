"""torch-rechub 0.9.0's MIND / ComiRec-SA on recstack's MovieLens-100K leave-one-out sequences
(a peer run for ``benchmarks/multi_interest.py``; recstack is not imported).

torch-rechub is not a recstack dependency: install it beside the venv's torch, without its
dependencies, and put it on the path::

    .venv/bin/python -m pip install --no-deps --target /tmp/rechub torch-rechub==0.9.0
    PYTHONPATH=/tmp/rechub OMP_NUM_THREADS=1 .venv/bin/python benchmarks/_rechub_multi_interest_peer.py \\
        --data data/ml100k_sequences --model mind --out runs/bench_multi_interest/rechub_mind

Samples as torch-rechub's matching examples build them, from recstack's training rows: one per
position (history = the items before it, at most 50; target = the next item), 3 negatives drawn
uniformly from the catalogue (its examples' ``neg_ratio=3``), list-wise softmax
(``MatchTrainer(mode=2)``), temperature 0.02, Adam 1e-3 with weight decay 1e-6, batch 256, the
``user_id`` as the user feature, item embedding dim 64 (recstack's). It writes
``user_ids.npy``, ``user_vectors.npy`` ``(U, K, D)`` (its user tower on each test row's input),
``item_ids.npy`` and ``item_vectors.npy``; ``benchmarks/multi_interest.py --rechub DIR`` scores
them with recstack's evaluator (best interest per item, the test input excluded).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader
from torch_rechub.basic.features import SequenceFeature, SparseFeature
from torch_rechub.models.matching import MIND, ComirecSA
from torch_rechub.trainers import MatchTrainer
from torch_rechub.utils.data import TorchDataset

SEQ_LEN, DIM, NEGATIVES = 50, 64, 3


def lists(table, column: str) -> tuple[np.ndarray, np.ndarray]:
    array = table.column(column).combine_chunks()
    return array.offsets.to_numpy(), array.values.to_numpy()


def padded(offsets: np.ndarray, values: np.ndarray, starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """Rows ``values[max(start, stop - L):stop]``, left-aligned, zero padded: ``(N, L)``."""
    out = np.zeros((len(starts), SEQ_LEN), np.int64)
    begin = np.maximum(starts, stops - SEQ_LEN)
    for r, (b, e) in enumerate(zip(begin, stops)):  # peer-side preprocessing, not a timed path
        out[r, : e - b] = values[b:e]
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", choices=("mind", "comirec_sa"), required=True)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    items = pq.read_table(args.data / "items.parquet")["item_id"].to_numpy()
    code = {int(i): c + 1 for c, i in enumerate(items)}  # 0 = padding
    encode = np.vectorize(lambda i: code.get(int(i), 0), otypes=[np.int64])

    train = pq.read_table(args.data / "train.parquet")
    h_off, h_val = lists(train, "hist_item_ids")
    t_off, t_val = lists(train, "target_item_ids")
    users = train["user_id"].to_numpy()
    lengths = np.diff(h_off)
    row = np.repeat(np.arange(len(lengths)), lengths)  # one sample per position
    position = np.arange(len(row)) - np.repeat(h_off[:-1], lengths)
    history = padded(h_off, encode(h_val), h_off[row], h_off[row] + position + 1)  # x1..x_t
    target = encode(t_val)
    user_codes = {u: c + 1 for c, u in enumerate(np.unique(users))}
    x = {
        "user_id": np.array([user_codes[u] for u in users[row]], np.int64),
        "hist_item_ids": history,
        "item_id": target,
        "neg_items": rng.integers(1, len(items) + 1, (len(target), NEGATIVES)),
    }
    y = np.zeros(len(target), np.int64)  # list-wise: the positive is column 0

    user_features = [SparseFeature("user_id", len(user_codes) + 1, embed_dim=16)]
    history_features = [SequenceFeature("hist_item_ids", len(items) + 1, embed_dim=DIM, pooling="concat", shared_with="item_id")]
    item_features = [SparseFeature("item_id", len(items) + 1, embed_dim=DIM)]
    neg_features = [SequenceFeature("neg_items", len(items) + 1, embed_dim=DIM, pooling="concat", shared_with="item_id")]
    if args.model == "mind":
        model = MIND(user_features, history_features, item_features, neg_features, max_length=SEQ_LEN, temperature=0.02, interest_num=4)
    else:
        model = ComirecSA(user_features, history_features, item_features, neg_features, temperature=0.02, interest_num=4)
    args.out.mkdir(parents=True, exist_ok=True)
    trainer = MatchTrainer(model, mode=2, optimizer_params={"lr": 1e-3, "weight_decay": 1e-6}, n_epoch=args.epochs, device="cpu", model_path=str(args.out))
    started = time.perf_counter()
    trainer.fit(DataLoader(TorchDataset(x, y), batch_size=256, shuffle=True))
    train_seconds = time.perf_counter() - started

    test = pq.read_table(args.data / "test.parquet")
    o, v = lists(test, "hist_item_ids")
    test_x = {
        "user_id": np.array([user_codes.get(u, 0) for u in test["user_id"].to_numpy()], np.int64),
        "hist_item_ids": padded(o, encode(v), o[:-1], o[1:]),
    }
    model.eval()
    with torch.no_grad():
        model.mode = "user"
        user_vectors = model({k: torch.from_numpy(a) for k, a in test_x.items()}).numpy()  # (U, K, D)
        model.mode = "item"
        item_vectors = model({"item_id": torch.arange(1, len(items) + 1)}).numpy()  # (N, D)
    np.save(args.out / "user_ids.npy", test["user_id"].to_numpy())
    np.save(args.out / "user_vectors.npy", user_vectors.astype(np.float32))
    np.save(args.out / "item_ids.npy", items)
    np.save(args.out / "item_vectors.npy", item_vectors.astype(np.float32))
    (args.out / "train_seconds.txt").write_text(f"{train_seconds:.1f}\n{len(target)} samples x {args.epochs} epochs\n")
    print(f"{args.model}: {len(target)} samples, {train_seconds:.0f} s, user vectors {user_vectors.shape}")


if __name__ == "__main__":
    main()
