"""RecBole 1.2.1's SASRec / GRU4Rec on recstack's MovieLens-100K leave-one-out sequences
(a peer run for ``benchmarks/sequence_retrieval.py``; recstack is not imported).

RecBole is not a recstack dependency: install it beside the venv's torch, without its
dependencies, with the few pure-Python packages it imports that the venv lacks, and put it on
the path (pandas, scipy, colorlog, tensorboard, pyyaml come from the venv)::

    .venv/bin/python -m pip install --no-deps --target /tmp/recbole recbole==1.2.1 colorama texttable tabulate
    PYTHONPATH=/tmp/recbole OMP_NUM_THREADS=1 .venv/bin/python benchmarks/_recbole_sequence_peer.py \\
        --data data/ml100k_sequences --model sasrec --out runs/bench_sequence_retrieval/recbole_sasrec

Data: recstack's training rows (``train.parquet``: ``hist_item_ids`` and, per position, the next
item ``target_item_ids``) are written as RecBole atomic files in a temporary folder, one RecBole
"user" (``session_id``) per training row holding the row's items followed by its last target,
with the position as ``timestamp``; every catalogue item is listed in a ``.item`` file so it gets
a RecBole id (items never seen in training keep their untrained embedding). RecBole's own
``SequentialDataset`` augmentation then makes one sample per target position (history = the
row's items up to that position, at most 50, left-aligned as RecBole pads them; target = the
next item): exactly recstack's training inputs and targets, 97,171 samples per epoch on
the shipped split. It is trained by RecBole's ``Trainer._train_epoch`` on RecBole's
``TrainDataLoader`` (shuffled each epoch); RecBole's own validation (``Trainer.fit``) is not run:
after every epoch the script writes the user vectors (``model.forward``, the sequence output at
the last real position) of the validation and test inputs (``hist_item_ids`` of
``valid.parquet`` / ``test.parquet``) and the item vectors (``item_embedding``, the output layer
of RecBole's CE loss), so ``sequence_retrieval.py --peers DIR`` scores the epoch that is best on
validation NDCG@10 (recstack's early-stopping rule) with recstack's evaluator, targets and
exclusions.

Same split, max length 50 and embedding size 64 as recstack's configs; RecBole's CE loss (full
softmax over the catalogue; RecBole's logits include the padding row, as it ships them):

- ``sasrec``: 2 layers, 1 head, ``hidden_dropout_prob`` = ``attn_dropout_prob`` = 0.2
  (recstack's dropout), ``inner_size`` 64 (recstack's feed-forward width is D), otherwise
  RecBole's defaults (gelu, layer-norm eps 1e-12, init std 0.02).
- ``gru4rec``: embedding and hidden size 64, 1 layer, dropout 0.3 (RecBole's default and
  recstack's), CE.

Adam 1e-3, no weight decay (RecBole's default and recstack's), batch ``--batch-size`` samples
(default 2048, RecBole's ``train_batch_size``; recstack's 128 rows hold about 5,200 positions),
one thread, a fixed number of epochs.
Files: ``user_ids.npy``, ``item_ids.npy``, ``valid_user_vectors.npy`` / ``test_user_vectors.npy``
``(E, U, D)``, ``item_vectors.npy`` ``(E, N, D)``, ``stats.json`` (training seconds per epoch,
excluding the vector dumps; samples per epoch; peak RSS).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from recbole.config import Config
from recbole.data.dataloader import TrainDataLoader
from recbole.data.dataset import SequentialDataset
from recbole.model.sequential_recommender import GRU4Rec, SASRec
from recbole.trainer import Trainer
from recbole.utils import init_seed

# RecBole 1.2.1's ``Config.compatibility_settings`` aliases ``np.float = np.float_`` etc., names NumPy 2
# removed: give it those names back (the only change to RecBole's behaviour; its code is untouched).
for _old, _new in (("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_)):
    if _old not in np.__dict__:
        setattr(np, _old, _new)

SEQ_LEN, DIM = 50, 64
DATASET = "recstack_rows"
MODELS = {
    "sasrec": (SASRec, {"n_layers": 2, "n_heads": 1, "hidden_size": DIM, "inner_size": DIM, "hidden_dropout_prob": 0.2, "attn_dropout_prob": 0.2, "loss_type": "CE"}),
    "gru4rec": (GRU4Rec, {"embedding_size": DIM, "hidden_size": DIM, "num_layers": 1, "dropout_prob": 0.3, "loss_type": "CE"}),
}


def lists(table, column: str) -> tuple[np.ndarray, np.ndarray]:
    array = table.column(column).combine_chunks()
    return array.offsets.to_numpy(), array.values.to_numpy()


def padded(values: np.ndarray, starts: np.ndarray, stops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``values[max(start, stop - L):stop]`` left-aligned and zero padded to ``(N, L)`` (as
    RecBole pads ``item_id_list``), and their lengths; vectorised."""
    begin = np.maximum(starts, stops - SEQ_LEN)
    length = stops - begin
    col = np.arange(SEQ_LEN)[None, :]
    valid = col < length[:, None]
    out = np.zeros((len(starts), SEQ_LEN), np.int64)
    out[valid] = values[(begin[:, None] + col)[valid]]
    return out, length.astype(np.int64)


def write_atomic(data: Path, folder: Path, items: np.ndarray) -> None:
    """recstack's training rows as RecBole atomic files: one session per row (its items, then its
    last target), the position as the timestamp; every catalogue item in the ``.item`` file."""
    train = pq.read_table(data / "train.parquet")
    h_off, h_val = lists(train, "hist_item_ids")
    t_off, t_val = lists(train, "target_item_ids")
    assert (np.diff(h_off) == np.diff(t_off)).all()
    with open(folder / f"{DATASET}.inter", "w") as f:
        f.write("session_id:token\titem_id:token\ttimestamp:float\n")
        for row in range(len(h_off) - 1):
            hist, target = h_val[h_off[row] : h_off[row + 1]], t_val[t_off[row] : t_off[row + 1]]
            assert (hist[1:] == target[:-1]).all()  # targets are the next items of the row
            for t, item in enumerate(np.r_[hist, target[-1:]]):
                f.write(f"{row}\t{item}\t{t}\n")
    with open(folder / f"{DATASET}.item", "w") as f:
        f.write("item_id:token\n" + "".join(f"{i}\n" for i in items))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", choices=("sasrec", "gru4rec"), required=True)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=2048, help="training samples (target positions) per step")
    args = parser.parse_args()
    data, out = args.data.resolve(), args.out.resolve()
    torch.set_num_threads(1)
    items = pq.read_table(data / "items.parquet")["item_id"].to_numpy()
    work = Path(tempfile.mkdtemp(prefix="recbole_peer_"))
    os.chdir(work)  # RecBole's Trainer writes log_tensorboard/ and saved/ under the working directory
    (work / DATASET).mkdir()
    write_atomic(data, work / DATASET, items)
    model_class, params = MODELS[args.model]
    config = Config(model=model_class, dataset=DATASET, config_dict={
        "data_path": str(work), "checkpoint_dir": str(work / "saved"), "seed": args.seed, "reproducibility": True,
        "USER_ID_FIELD": "session_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["session_id", "item_id", "timestamp"], "item": ["item_id"]},
        "MAX_ITEM_LIST_LENGTH": SEQ_LEN, "train_neg_sample_args": None, "eval_args": {"split": {"RS": [1.0, 0.0, 0.0]}, "order": "TO", "group_by": None, "mode": "full"},
        "learner": "adam", "learning_rate": 1e-3, "weight_decay": 0.0, "train_batch_size": args.batch_size, "shuffle": True,
        "show_progress": False, "device": "cpu", "use_gpu": False, **params,
    })  # fmt: skip
    logging.getLogger().setLevel(logging.WARNING)
    init_seed(args.seed, True)
    torch.set_num_threads(1)
    dataset = SequentialDataset(config)  # loads and remaps the atomic files
    train_set = dataset.build()[0]  # augmented (one sample per position) and split RS 1/0/0: every sample trains
    samples = len(train_set)
    train_data = TrainDataLoader(config, train_set, None, shuffle=True)
    init_seed(args.seed, True)
    model = model_class(config, dataset)
    trainer = Trainer(config, model)
    code = np.zeros(int(items.max()) + 1, np.int64)
    code[items] = dataset.token2id("item_id", [str(i) for i in items])  # recstack item id -> RecBole id

    splits = {}
    for split in ("valid", "test"):
        table = pq.read_table(data / f"{split}.parquet")
        o, v = lists(table, "hist_item_ids")
        seq, length = padded(code[v], o[:-1], o[1:])
        splits[split] = (table["user_id"].to_numpy(), torch.from_numpy(seq), torch.from_numpy(length))
    assert (splits["valid"][0] == splits["test"][0]).all()

    out.mkdir(parents=True, exist_ok=True)
    dumps = {"valid": [], "test": [], "items": []}
    epoch_seconds, losses = [], []
    for epoch in range(args.epochs):
        started = time.perf_counter()
        loss = trainer._train_epoch(train_data, epoch)
        epoch_seconds.append(time.perf_counter() - started)
        losses.append(float(loss) / len(train_data))
        model.eval()
        with torch.no_grad():
            for split in ("valid", "test"):
                dumps[split].append(model(splits[split][1], splits[split][2]).numpy().astype(np.float32))
            dumps["items"].append(model.item_embedding.weight[torch.from_numpy(code[items])].numpy().astype(np.float32))
        print(f"{args.model} epoch {epoch}: {epoch_seconds[-1]:.1f} s, loss {losses[-1]:.4f}", flush=True)
        np.save(out / "user_ids.npy", splits["test"][0])  # all files rewritten every epoch: a run cut short is still scorable
        np.save(out / "item_ids.npy", items)
        np.save(out / "valid_user_vectors.npy", np.stack(dumps["valid"]))
        np.save(out / "test_user_vectors.npy", np.stack(dumps["test"]))
        np.save(out / "item_vectors.npy", np.stack(dumps["items"]))
        stats = {
            "model": f"RecBole 1.2.1 {args.model}", "samples_per_epoch": samples, "epoch_seconds": epoch_seconds, "epoch_losses": losses,
            "samples_per_s": samples * len(epoch_seconds) / sum(epoch_seconds), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "batch_size": args.batch_size, "patched_forward": False, "threads": torch.get_num_threads(),
        }  # fmt: skip
        (out / "stats.json").write_text(json.dumps(stats, indent=2))
    print(json.dumps({k: v for k, v in stats.items() if k not in ("epoch_seconds", "epoch_losses")}))


if __name__ == "__main__":
    main()
