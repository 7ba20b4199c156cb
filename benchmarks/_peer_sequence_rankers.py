"""The peer side of ``benchmarks/sequence_ranking.py --peers DIR``: one peer sequence ranker on the
MovieLens-100K CTR task, one JSON line on stdout. Run with ``PYTHONPATH=DIR`` (a folder holding
DeepCTR-Torch 0.3.0 and torch-rechub 0.9.0, installed ``--no-deps --target``).

Usage: python _peer_sequence_rankers.py DATA_DIR MODEL SEED EPOCHS [ALPHA]
       (MODEL: deepctr_dien, rechub_bst, rechub_bst_ffn32, rechub_dien)

The features of recstack's run: the 7 id fields plus the item and genre histories (the 50 most
recent, oldest first, padded with 0 at the end), embedding 16, MLP 256-128, batch 1024, Adam
lr 1e-3 without weight decay, fixed epochs. After every epoch the model scores the validation and
test sets (untimed): the JSON holds the last epoch's test figures and, under ``selected``, those of
the epoch with the best validation AUC (the rule recstack's trainer applies with ``monitor: auc``).
Vocabularies are fitted on train
(unknown -> 1, padding -> 0); a history shares its candidate's table. DIEN's auxiliary loss (weight
ALPHA, default 0.2, as recstack's run) reads one sampled negative per behaviour: a uniform item id of the
vocabulary and that item's genre, drawn once before training (DeepCTR-Torch and torch-rechub
take the negatives as input columns). DeepCTR-Torch: ``DIEN(gru_type="AUGRU",
use_negsampling=True)``, its attention 80-40 as recstack's DIN. torch-rechub: ``BST`` (2 heads as
recstack's, dropout 0.2, one layer, the target slot's output; its encoder layer is torch's default
feed-forward width 2048, which it does not expose, so ``rechub_bst_ffn32`` swaps in the same layer
with recstack's width, the model's 32) and ``DIEN`` (its Dice MLP), both
trained with its ``CTRTrainer``. ``samples_per_second`` times ``fit`` alone; GAUC groups by user
and weights by impressions, as ``recstack.evaluation.ranking_metrics.gauc``.
Neither peer is a recstack dependency: this file is never imported by recstack.
"""

import json
import os
import resource
import sys
import tempfile
import time

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import log_loss, roc_auc_score

SPARSE = ["user_id", "item_id", "gender", "age", "occupation", "zip_prefix", "genre"]
HISTORIES = {"hist_item_id": ("hist_item_ids", "item_id"), "hist_genre": ("hist_genres", "genre")}
MAXLEN, DIM = 50, 16


def padded(lists: pd.Series, table: dict) -> np.ndarray:
    """``(N, MAXLEN)`` codes of each row's ``MAXLEN`` most recent values, oldest first, 0-padded at the end."""
    recent = lists.map(lambda values: list(values)[-MAXLEN:])
    lengths = recent.map(len).to_numpy()
    flat = pd.Series(np.concatenate([np.asarray(v, dtype=object) for v in recent if len(v)])).astype(str)
    codes = flat.map(table).fillna(1).astype(np.int64).to_numpy()
    out = np.zeros((len(lists), MAXLEN), dtype=np.int64)
    rows = np.repeat(np.arange(len(lists)), lengths)
    cols = np.arange(len(rows)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    out[rows, cols] = codes
    return out


def prepare(data_dir: str, seed: int) -> dict:
    """Arrays for train and test: ids, histories, sampled negatives, lengths, labels; the vocabulary sizes."""
    frames = {s: pd.read_parquet(f"{data_dir}/{s}.parquet") for s in ("train", "valid", "test")}
    train = frames["train"]
    vocab = {c: {v: i + 2 for i, v in enumerate(pd.unique(train[c].astype(str)))} for c in SPARSE}
    for g in pd.unique(np.concatenate([np.asarray(list(x), dtype=str) for x in train["hist_genres"] if len(x)])):
        vocab["genre"].setdefault(g, len(vocab["genre"]) + 2)
    for i in pd.unique(np.concatenate([np.asarray(list(x)).astype(str) for x in train["hist_item_ids"] if len(x)])):
        vocab["item_id"].setdefault(i, len(vocab["item_id"]) + 2)
    item_genre = np.ones(len(vocab["item_id"]) + 2, dtype=np.int64)  # an item's genre code (unknown: 1)
    pairs = train[["item_id", "genre"]].astype(str).drop_duplicates("item_id")
    item_genre[pairs["item_id"].map(vocab["item_id"]).to_numpy()] = pairs["genre"].map(vocab["genre"]).fillna(1).astype(np.int64).to_numpy()
    rng = np.random.default_rng(seed)

    def inputs(df: pd.DataFrame) -> dict[str, np.ndarray]:
        x = {c: df[c].astype(str).map(vocab[c]).fillna(1).astype(np.int64).to_numpy() for c in SPARSE}
        for feature, (column, base) in HISTORIES.items():
            x[feature] = padded(df[column], vocab[base])
        valid = x["hist_item_id"] > 0
        negatives = rng.integers(2, len(vocab["item_id"]) + 2, size=valid.shape) * valid
        x["neg_hist_item_id"], x["neg_hist_genre"] = negatives, item_genre[negatives] * valid
        x["hist_length"] = valid.sum(axis=1).astype(np.int64)
        return x

    return {
        "x_train": inputs(train), "y_train": train["label"].to_numpy(np.float32),
        "x_valid": inputs(frames["valid"]), "y_valid": frames["valid"]["label"].to_numpy(np.float32),
        "x_test": inputs(frames["test"]), "y_test": frames["test"]["label"].to_numpy(np.float32),
        "users": frames["test"]["user_id"].to_numpy(), "sizes": {c: len(vocab[c]) + 2 for c in SPARSE},
    }  # fmt: skip


def deepctr_dien(data: dict, seed: int, epochs: int, alpha: float) -> tuple[float, list[tuple[np.ndarray, np.ndarray]]]:
    """DeepCTR-Torch's DIEN with AUGRU and its auxiliary loss: (fit seconds, per epoch (validation, test) probabilities)."""
    from deepctr_torch.inputs import SparseFeat, VarLenSparseFeat, get_feature_names
    from deepctr_torch.models import DIEN

    sizes = data["sizes"]
    columns = [SparseFeat(c, sizes[c], embedding_dim=DIM) for c in SPARSE]
    for prefix in ("hist_", "neg_hist_"):
        columns += [
            VarLenSparseFeat(SparseFeat(prefix + b, sizes[b], embedding_dim=DIM, embedding_name=b), maxlen=MAXLEN, length_name="hist_length")
            for b in ("item_id", "genre")
        ]  # fmt: skip
    model = DIEN(columns, ["item_id", "genre"], gru_type="AUGRU", use_negsampling=True, alpha=alpha, dnn_hidden_units=(256, 128),
                 att_hidden_units=(80, 40), seed=seed)  # fmt: skip
    model.compile(torch.optim.Adam(model.parameters(), lr=1e-3), "binary_crossentropy", metrics=[])
    names = get_feature_names(columns)
    seconds, scored = 0.0, []
    for _ in range(epochs):  # one epoch per fit call: the same model and optimizer carry on
        started = time.perf_counter()
        model.fit({n: data["x_train"][n] for n in names}, data["y_train"], batch_size=1024, epochs=1, verbose=0, shuffle=True)
        seconds += time.perf_counter() - started
        scored.append(tuple(model.predict({n: data[split][n] for n in names}, batch_size=4096).reshape(-1) for split in ("x_valid", "x_test")))
    return seconds, scored


def rechub(name: str, data: dict, epochs: int, alpha: float) -> tuple[float, list[tuple[np.ndarray, np.ndarray]]]:
    """torch-rechub's BST or DIEN with its CTRTrainer: (fit seconds, per epoch (validation, test) probabilities)."""
    from torch.utils.data import DataLoader
    from torch_rechub.basic.features import SequenceFeature, SparseFeature
    from torch_rechub.models.ranking import BST, DIEN
    from torch_rechub.trainers import CTRTrainer
    from torch_rechub.utils.data import DataGenerator, TorchDataset

    sizes = data["sizes"]
    context = [SparseFeature(c, vocab_size=sizes[c], embed_dim=DIM) for c in SPARSE if c not in ("item_id", "genre")]
    targets = [SparseFeature(c, vocab_size=sizes[c], embed_dim=DIM, padding_idx=0) for c in ("item_id", "genre")]

    def sequences(prefix: str) -> list:
        return [SequenceFeature(prefix + b, vocab_size=sizes[b], embed_dim=DIM, pooling="concat", shared_with=b, padding_idx=0)
                for b in ("item_id", "genre")]  # fmt: skip

    if name == "rechub_bst":
        model = BST(context, sequences("hist_"), targets, mlp_params={"dims": [256, 128]}, nhead=2, dropout=0.2, num_layers=1, max_seq_len=MAXLEN + 1)
    elif name == "rechub_bst_ffn32":  # BST's own layer, built as its __init__ does, with recstack's feed-forward width
        model = BST(context, sequences("hist_"), targets, mlp_params={"dims": [256, 128]}, nhead=2, dropout=0.2, num_layers=1, max_seq_len=MAXLEN + 1)
        layer = torch.nn.TransformerEncoderLayer(d_model=2 * DIM, nhead=2, dim_feedforward=2 * DIM, dropout=0.2, activation=torch.nn.LeakyReLU(),
                                                 batch_first=True)  # fmt: skip
        model.transformer_layers = torch.nn.TransformerEncoder(layer, num_layers=1)
    else:
        model = DIEN(context, sequences("hist_"), sequences("neg_hist_"), targets, mlp_params={"dims": [256, 128]}, alpha=alpha)
    keys = SPARSE + ["hist_item_id", "hist_genre"] + (["neg_hist_item_id", "neg_hist_genre"] if name == "rechub_dien" else [])
    x_train, x_valid, x_test = ({k: data[split][k] for k in keys} for split in ("x_train", "x_valid", "x_test"))
    loader = DataGenerator(x_train, data["y_train"]).generate_dataloader(x_val=None, y_val=None, x_test=None, y_test=None, batch_size=1024)[0]
    with tempfile.TemporaryDirectory() as folder, open(os.devnull, "w") as null:
        trainer = CTRTrainer(model, optimizer_params={"lr": 1e-3, "weight_decay": 0.0}, n_epoch=epochs, earlystop_patience=epochs + 1,
                             device="cpu", loss_mode=name != "rechub_dien", model_path=folder)  # fmt: skip
        stdout, sys.stdout = sys.stdout, null  # the trainer prints every epoch
        seconds, scored = 0.0, []
        for _ in range(epochs):  # the epoch of CTRTrainer.fit, without its validation and saving
            started = time.perf_counter()
            trainer.train_one_epoch(loader)
            seconds += time.perf_counter() - started
            scored.append(tuple(
                np.asarray(trainer.predict(model, DataLoader(TorchDataset(x, data[y]), batch_size=4096))).reshape(-1)
                for x, y in ((x_valid, "y_valid"), (x_test, "y_test"))
            ))  # fmt: skip
        sys.stdout = stdout
    return seconds, scored


def main() -> None:
    data_dir, name, seed, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    alpha = float(sys.argv[5]) if len(sys.argv) > 5 else 0.2
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    np.random.seed(seed)
    data = prepare(data_dir, seed)
    seconds, scored = deepctr_dien(data, seed, epochs, alpha) if name == "deepctr_dien" else rechub(name, data, epochs, alpha)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
    from recstack.evaluation.ranking_metrics import gauc  # the same GAUC as recstack's rows (numpy only)

    def test_metrics(probs: np.ndarray) -> dict:
        return {
            "auc": roc_auc_score(data["y_test"], probs),
            "gauc": gauc(data["y_test"], probs, data["users"]),
            "logloss": log_loss(data["y_test"], np.clip(probs, 1e-7, 1 - 1e-7)),
        }

    valid_aucs = [roc_auc_score(data["y_valid"], valid) for valid, _ in scored]
    best = int(np.argmax(valid_aucs))  # the first epoch of the highest validation AUC
    print(json.dumps({
        **test_metrics(scored[-1][1]),
        "selected": {**test_metrics(scored[best][1]), "epoch": best + 1, "valid_auc": valid_aucs[best]},
        "valid_aucs": valid_aucs,
        "samples_per_second": len(data["y_train"]) * epochs / seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
