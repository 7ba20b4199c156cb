"""The DeepCTR-Torch side of benchmarks/ranking.py, run with the bench venv's python.

Usage: python _deepctr_peer.py DATA_DIR MODEL SEED EPOCHS [DEVICE]  ->  one JSON line on stdout;
       python _deepctr_peer.py --criteo FOLDER SEED EPOCHS  (DeepFM on the Criteo-like files).
Id-only features (the peer's usual MovieLens setup); vocabularies fitted on train only
(unknown values -> row 1, padding -> row 0), histories keep their 50 most recent items and
their length goes in ``hist_length`` (DeepCTR-Torch's DIN masks its attention with it).
``prep_seconds`` times the vocabularies and the conversion to arrays; ``fit`` (timed apart)
converts the arrays to tensors itself.
DeepCTR-Torch must never be a dependency of recstack: this file is not imported by it.
"""

import json
import resource
import sys
import time

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import log_loss, roc_auc_score

from deepctr_torch.inputs import DenseFeat, SparseFeat, VarLenSparseFeat, get_feature_names
from deepctr_torch.models import DCN, DIN, WDL, DeepFM

SPARSE = ["user_id", "item_id", "gender", "age", "occupation", "zip_prefix", "genre"]
HISTORIES = {"hist_item_id": ("hist_item_ids", "item_id"), "hist_genre": ("hist_genres", "genre")}
MAXLEN, DIM = 50, 16


def prepare(data_dir: str, name: str) -> dict:
    """Vocabularies and arrays for ``name``: x/y for train and test, the feature columns, and
    ``prep_seconds`` (reading both splits, the vocabularies, converting train)."""
    started = time.perf_counter()
    frames = {s: pd.read_parquet(f"{data_dir}/{s}.parquet") for s in ("train", "test")}
    train = frames["train"]
    vocab = {c: {v: i + 2 for i, v in enumerate(pd.unique(train[c].astype(str)))} for c in SPARSE}
    item_vocab, genre_vocab = vocab["item_id"], vocab["genre"]
    extra = pd.unique(np.concatenate([np.asarray(list(x), dtype=str) for x in train["hist_genres"] if len(x)]))
    for g in extra:
        genre_vocab.setdefault(g, len(genre_vocab) + 2)

    def inputs(df: pd.DataFrame) -> dict[str, np.ndarray]:
        x = {c: df[c].astype(str).map(vocab[c]).fillna(1).astype(np.int64).to_numpy() for c in SPARSE}
        if name == "din":
            for feat, (column, base) in HISTORIES.items():
                table = vocab[base]
                padded = np.zeros((len(df), MAXLEN), dtype=np.int64)
                for row, values in enumerate(df[column]):
                    recent = [table.get(str(v), 1) for v in list(values)[-MAXLEN:]]
                    padded[row, : len(recent)] = recent
                x[feat] = padded
            x["hist_length"] = np.minimum(df["hist_item_ids"].map(len).to_numpy(), MAXLEN).astype(np.int64)
        return x

    columns = [SparseFeat(c, len(vocab[c]) + 2, embedding_dim=DIM) for c in SPARSE]
    if name == "din":
        columns += [
            VarLenSparseFeat(SparseFeat(f, len(vocab[b]) + 2, embedding_dim=DIM, embedding_name=b), maxlen=MAXLEN, length_name="hist_length")
            for f, (_, b) in HISTORIES.items()
        ]
    x_train = inputs(train)
    prep_seconds = time.perf_counter() - started
    return {
        "x_train": x_train, "y_train": train["label"].to_numpy(np.float32),
        "x_test": inputs(frames["test"]), "y_test": frames["test"]["label"].to_numpy(np.float32),
        "columns": columns, "names": get_feature_names(columns),  # with hist_length for DIN
        "prep_seconds": prep_seconds,
    }


def build(name: str, columns: list, seed: int, device: str = "cpu"):
    """The compiled DeepCTR-Torch model (Adam lr 1e-3, binary cross-entropy) on ``device``."""
    if name == "din":
        model = DIN(columns, ["item_id", "genre"], dnn_hidden_units=(256, 128), att_hidden_size=(80, 40), seed=seed, device=device)
    elif name == "dcn":
        model = DCN(columns, columns, cross_num=2, dnn_hidden_units=(256, 128), seed=seed, device=device)
    else:
        model = {"wide_deep": WDL, "deepfm": DeepFM}[name](columns, columns, dnn_hidden_units=(256, 128), seed=seed, device=device)
    model.compile(torch.optim.Adam(model.parameters(), lr=1e-3), "binary_crossentropy", metrics=[])
    return model


def main() -> None:
    data_dir, name, seed, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    device = sys.argv[5] if len(sys.argv) > 5 else "cpu"
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    np.random.seed(seed)
    data = prepare(data_dir, name)
    x_train, y_train, x_test, y_test, names = (data[k] for k in ("x_train", "y_train", "x_test", "y_test", "names"))
    prep_seconds = data["prep_seconds"]
    model = build(name, data["columns"], seed, device)
    fit_and_report(model, names, x_train, y_train, x_test, y_test, epochs=epochs, prep_seconds=prep_seconds)


def fit_and_report(model, names, x_train, y_train, x_test, y_test, *, epochs: int, prep_seconds: float) -> None:
    """Times ``fit`` alone, scores the test rows and prints the result line the benchmark reads."""
    started = time.perf_counter()
    model.fit({n: x_train[n] for n in names}, y_train, batch_size=1024, epochs=epochs, verbose=0, shuffle=True)
    seconds = time.perf_counter() - started
    probs = model.predict({n: x_test[n] for n in names}, batch_size=4096).reshape(-1)
    print(json.dumps({
        "auc": roc_auc_score(y_test, probs),
        "logloss": log_loss(y_test, np.clip(probs, 1e-7, 1 - 1e-7)),
        "samples_per_second": len(y_train) * epochs / seconds,
        "samples_per_second_with_prep": len(y_train) * epochs / (seconds + prep_seconds),
        "prep_seconds": prep_seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


def criteo_main() -> None:
    """DeepFM as in DeepCTR-Torch's Criteo example: everything in memory as arrays, ids
    label-encoded on train (unseen test values -> 0), counts log1p then min-max scaled."""
    folder, seed, epochs = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    np.random.seed(seed)
    started = time.perf_counter()
    train, test = (pd.read_parquet(f"{folder}/{s}.parquet") for s in ("train", "test"))
    dense, sparse = [f"I{k}" for k in range(1, 14)], [f"C{j}" for j in range(1, 27)]
    x_train, x_test, columns = {}, {}, []
    for c in dense:
        values = np.log1p(train[c].fillna(0).to_numpy(np.float64))
        low, high = values.min(), values.max()
        scale = (high - low) or 1.0
        x_train[c] = (values - low) / scale
        x_test[c] = (np.log1p(test[c].fillna(0).to_numpy(np.float64)) - low) / scale
        columns.append(DenseFeat(c, 1))
    for c in sparse:
        codes, uniques = pd.factorize(train[c])
        x_train[c] = codes + 1
        x_test[c] = pd.Index(uniques).get_indexer(test[c]) + 1  # unseen: -1 + 1 = 0
        columns.append(SparseFeat(c, len(uniques) + 1, embedding_dim=DIM))
    y_train, y_test = train["label"].to_numpy(np.float32), test["label"].to_numpy(np.float32)
    del train, test
    prep_seconds = time.perf_counter() - started
    model = DeepFM(columns, columns, dnn_hidden_units=(256, 128), seed=seed)
    model.compile(torch.optim.Adam(model.parameters(), lr=1e-3), "binary_crossentropy", metrics=[])
    names = get_feature_names(columns)
    fit_and_report(model, names, x_train, y_train, x_test, y_test, epochs=epochs, prep_seconds=prep_seconds)


if __name__ == "__main__":
    criteo_main() if sys.argv[1] == "--criteo" else main()
