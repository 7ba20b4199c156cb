"""torch-rechub 0.9.0's SASRec / GRU4Rec on recstack's MovieLens-100K leave-one-out sequences
(a peer run for ``benchmarks/sequence_retrieval.py``; recstack is not imported).

torch-rechub is not a recstack dependency: install it beside the venv's torch, without its
dependencies, and put it on the path::

    .venv/bin/python -m pip install --no-deps --target /tmp/rechub torch-rechub==0.9.0
    PYTHONPATH=/tmp/rechub OMP_NUM_THREADS=1 .venv/bin/python benchmarks/_rechub_sequence_peer.py \\
        --data data/ml100k_sequences --model sasrec --out runs/bench_sequence_retrieval/rechub_sasrec

Same split, max length 50 and embedding size 64 as recstack's configs:

- ``sasrec``: its ``SASRec`` as its matching example trains it, sequence to sequence on
  recstack's training rows (input ``hist_item_ids``, positives ``target_item_ids`` at every
  position, one negative per position drawn uniformly from the catalogue, fresh each epoch),
  pair-wise BPR loss (``MatchTrainer(mode=1)``) over the real (non-padding) positions (its
  ``BPRLoss`` cannot take the ``(B, L)`` scores its ``SASRec`` returns: the script flattens them), 2 blocks, 1 head, dropout 0.2 (recstack's),
  inputs left-aligned (its user tower reads the last non-zero position).
- ``gru4rec``: its ``GRU4Rec`` on one sample per position (history = the items before it, at
  most 50, right-aligned so the GRU's last state follows the last item; target = the next item),
  list-wise softmax over the target and 3 uniform negatives (``MatchTrainer(mode=2)``),
  temperature 0.02, ``user_id`` as the user feature, user MLP [64]. torch-rechub 0.9.0's
  ``GRU4Rec.forward`` sums the user-item product over the candidate axis (``.sum(dim=1)``: a
  ``(B, D)`` "logit" per embedding dimension, not one per candidate), so the loss would not
  rank candidates at all; this script scores candidates by the dot product over D divided by
  the temperature (as its ``MIND`` / ``ComirecSA`` do) and says so in the results.

Adam 1e-3, weight decay 1e-6, batch 128 (sasrec rows) / 256 (gru4rec samples), one thread, a
fixed number of epochs; after every epoch it writes the user vectors of the validation and test
inputs and the item vectors, so ``sequence_retrieval.py --peers DIR`` scores the epoch that is
best on validation NDCG@10 (recstack's early-stopping rule) with recstack's evaluator.
Files: ``user_ids.npy``, ``item_ids.npy``, ``valid_user_vectors.npy`` / ``test_user_vectors.npy``
``(E, U, D)``, ``item_vectors.npy`` ``(E, N, D)``, ``stats.json`` (training seconds per epoch,
excluding the vector dumps; samples per epoch; peak RSS).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader
from torch_rechub.basic.features import SequenceFeature, SparseFeature
from torch_rechub.models.matching import GRU4Rec, SASRec
from torch_rechub.trainers import MatchTrainer
from torch_rechub.utils.data import TorchDataset

SEQ_LEN, DIM, NEGATIVES, TEMPERATURE = 50, 64, 3, 0.02


def lists(table, column: str) -> tuple[np.ndarray, np.ndarray]:
    array = table.column(column).combine_chunks()
    return array.offsets.to_numpy(), array.values.to_numpy()


def padded(values: np.ndarray, starts: np.ndarray, stops: np.ndarray, right: bool) -> np.ndarray:
    """Rows ``values[max(start, stop - L):stop]`` zero padded to ``(N, L)``, vectorised;
    ``right``: aligned to the end (pre-padding), else to the start."""
    begin = np.maximum(starts, stops - SEQ_LEN)
    length = stops - begin
    col = np.arange(SEQ_LEN)[None, :]
    offset = (col - (SEQ_LEN - length)[:, None]) if right else col
    valid = (offset >= 0) & (offset < length[:, None])
    out = np.zeros((len(starts), SEQ_LEN), np.int64)
    out[valid] = values[(begin[:, None] + offset)[valid]]
    return out


def sasrec_pairs(self, x):
    """SASRec's (B, L) positive / negative logits kept at real positions only, flat: torch-rechub's
    ``BPRLoss`` takes one score per pair (it cannot broadcast ``(B, L)``)."""
    if self.mode is not None:
        return SASREC_FORWARD(self, x)
    pos, neg = SASREC_FORWARD(self, x)
    real = x["pos"] > 0
    return pos[real], neg[real]


SASREC_FORWARD = SASRec.forward


def gru4rec_scores(self, x):
    """Candidates scored by the user-item dot product over D / temperature (see the docstring)."""
    user = self.user_tower(x)
    item = self.item_tower(x)
    if self.mode == "user":
        return user
    if self.mode == "item":
        return item
    return (user * item).sum(dim=-1) / TEMPERATURE  # (B, 1 + negatives)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", choices=("sasrec", "gru4rec"), required=True)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    items = pq.read_table(args.data / "items.parquet")["item_id"].to_numpy()
    lookup = np.zeros(int(items.max()) + 2, np.int64)
    lookup[items] = np.arange(1, len(items) + 1)  # 0 = padding
    encode = lambda v: lookup[np.clip(v, 0, len(lookup) - 1)]  # noqa: E731

    train = pq.read_table(args.data / "train.parquet")
    h_off, h_val = lists(train, "hist_item_ids")
    t_off, t_val = lists(train, "target_item_ids")
    h_val, t_val = encode(h_val), encode(t_val)
    users = train["user_id"].to_numpy()
    user_codes = {u: c + 1 for c, u in enumerate(np.unique(users))}
    lengths = np.diff(h_off)

    if args.model == "sasrec":
        seq = padded(h_val, h_off[:-1], h_off[1:], right=False)
        pos = padded(t_val, t_off[:-1], t_off[1:], right=False)
        samples = int((pos > 0).sum())
        features = [
            SequenceFeature("seq", len(items) + 1, embed_dim=DIM, pooling="concat"),
            SequenceFeature("pos", len(items) + 1, embed_dim=DIM, pooling="concat", shared_with="seq"),
            SequenceFeature("neg", len(items) + 1, embed_dim=DIM, pooling="concat", shared_with="seq"),
        ]
        SASRec.forward = sasrec_pairs
        model = SASRec(features, max_len=SEQ_LEN, dropout_rate=0.2, num_blocks=2, num_heads=1)
        mode, batch_size, right = 1, 128, False

        def loader() -> DataLoader:
            neg = np.where(pos > 0, rng.integers(1, len(items) + 1, pos.shape), 0)  # fresh each epoch
            return DataLoader(TorchDataset({"seq": seq, "pos": pos, "neg": neg}, np.zeros(len(seq), np.int64)), batch_size=batch_size, shuffle=True)

        def user_input(history: np.ndarray, user_ids: np.ndarray) -> dict[str, torch.Tensor]:
            return {"seq": torch.from_numpy(history)}

        item_vectors = lambda: model.item_emb.embed_dict["seq"].weight[1:]  # noqa: E731  the shared output layer
    else:
        row = np.repeat(np.arange(len(lengths)), lengths)  # one sample per position
        position = np.arange(len(row)) - np.repeat(h_off[:-1], lengths)
        history = padded(h_val, h_off[row], h_off[row] + position + 1, right=True)  # x1..x_t
        target = t_val
        samples = len(target)
        user_ids = np.array([user_codes[u] for u in users], np.int64)[row]
        user_features = [SparseFeature("user_id", len(user_codes) + 1, embed_dim=16)]
        history_features = [SequenceFeature("hist_item_ids", len(items) + 1, embed_dim=DIM, pooling="concat", shared_with="item_id")]
        item_features = [SparseFeature("item_id", len(items) + 1, embed_dim=DIM)]
        neg_features = [SequenceFeature("neg_items", len(items) + 1, embed_dim=DIM, pooling="concat", shared_with="item_id")]
        GRU4Rec.forward = gru4rec_scores
        model = GRU4Rec(user_features, history_features, item_features, neg_features, user_params={"dims": [DIM]}, temperature=TEMPERATURE)
        mode, batch_size, right = 2, 256, True

        def loader() -> DataLoader:
            x = {"user_id": user_ids, "hist_item_ids": history, "item_id": target, "neg_items": rng.integers(1, len(items) + 1, (samples, NEGATIVES))}
            return DataLoader(TorchDataset(x, np.zeros(samples, np.int64)), batch_size=batch_size, shuffle=True)  # list-wise: positive in column 0

        def user_input(hist: np.ndarray, uids: np.ndarray) -> dict[str, torch.Tensor]:
            return {"user_id": torch.from_numpy(uids), "hist_item_ids": torch.from_numpy(hist)}

        def item_vectors() -> torch.Tensor:
            model.mode = "item"
            out = model({"item_id": torch.arange(1, len(items) + 1)})
            model.mode = None
            return out

    splits = {}
    for split in ("valid", "test"):
        table = pq.read_table(args.data / f"{split}.parquet")
        o, v = lists(table, "hist_item_ids")
        ids = table["user_id"].to_numpy()
        splits[split] = (ids, user_input(padded(encode(v), o[:-1], o[1:], right=right), np.array([user_codes.get(u, 0) for u in ids], np.int64)))
    assert (splits["valid"][0] == splits["test"][0]).all()

    args.out.mkdir(parents=True, exist_ok=True)
    trainer = MatchTrainer(model, mode=mode, optimizer_params={"lr": 1e-3, "weight_decay": 1e-6}, n_epoch=args.epochs, device="cpu", model_path=str(args.out))
    dumps = {"valid": [], "test": [], "items": []}
    epoch_seconds = []
    for epoch in range(args.epochs):
        data = loader()
        started = time.perf_counter()
        trainer.train_one_epoch(data)
        epoch_seconds.append(time.perf_counter() - started)
        model.eval()
        with torch.no_grad():
            model.mode = "user"
            for split in ("valid", "test"):
                dumps[split].append(model(splits[split][1]).reshape(len(splits[split][0]), DIM).numpy().astype(np.float32))
            model.mode = None
            dumps["items"].append(item_vectors().numpy().astype(np.float32))
        print(f"{args.model} epoch {epoch}: {epoch_seconds[-1]:.1f} s", flush=True)
    np.save(args.out / "user_ids.npy", splits["test"][0])
    np.save(args.out / "item_ids.npy", items)
    np.save(args.out / "valid_user_vectors.npy", np.stack(dumps["valid"]))
    np.save(args.out / "test_user_vectors.npy", np.stack(dumps["test"]))
    np.save(args.out / "item_vectors.npy", np.stack(dumps["items"]))
    stats = {
        "model": f"torch-rechub 0.9.0 {args.model}", "samples_per_epoch": samples, "epoch_seconds": epoch_seconds,
        "samples_per_s": samples * len(epoch_seconds) / sum(epoch_seconds), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "patched_forward": args.model == "gru4rec", "threads": torch.get_num_threads(),
    }  # fmt: skip
    (args.out / "stats.json").write_text(json.dumps(stats, indent=2))
    print(json.dumps({k: v for k, v in stats.items() if k != "epoch_seconds"}))


if __name__ == "__main__":
    main()
