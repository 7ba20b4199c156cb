"""The DeepCTR-Torch side of benchmarks/multitask.py (``--peer-path``): one multi-task model on the
MovieLens-100K multi-task set, one JSON line on stdout.

Usage: python _deepctr_multitask_peer.py DATA_DIR MODEL SEED EPOCHS   (MODEL: shared_bottom esmm mmoe ple)

DeepCTR-Torch's multi-task models as its examples train them: two heads, ``ctr`` on click and
``ctcvr`` on click·like, over every impression (ESMM's second head is pCTR × pCVR; the others
predict it directly, they have no conditioned target). Id-only features, embedding 16,
vocabularies fitted on train (unknown -> 1), Adam lr 1e-3, batch 1024, fixed epochs, one thread,
every epoch scored on the validation and test sets (untimed): the JSON holds the last epoch's test
AUCs and, under ``selected``, those of the epoch of best validation click&like AUC;
sizes as recstack's configs (experts [64], towers [64], linear gates: ``gate_dnn_hidden_units=()``).
DeepCTR-Torch is not a recstack dependency: this file is never imported by it.
"""

import json
import resource
import sys
import time

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from deepctr_torch.inputs import SparseFeat, get_feature_names
from deepctr_torch.models.multitask import ESMM, MMOE, PLE, SharedBottom

SPARSE = ["user_id", "item_id", "gender", "age", "occupation", "zip_prefix", "genre"]
DIM = 16


def main() -> None:
    data_dir, name, seed, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    np.random.seed(seed)
    started = time.perf_counter()
    train, test = (pd.read_parquet(f"{data_dir}/{s}.parquet", columns=SPARSE + ["click", "like"]) for s in ("train", "test"))
    vocab = {c: {v: i + 2 for i, v in enumerate(pd.unique(train[c].astype(str)))} for c in SPARSE}

    def inputs(df: pd.DataFrame) -> dict[str, np.ndarray]:
        return {c: df[c].astype(str).map(vocab[c]).fillna(1).astype(np.int64).to_numpy() for c in SPARSE}

    def labels(df: pd.DataFrame) -> np.ndarray:
        return np.stack([df["click"].to_numpy(np.float32), (df["click"] * df["like"]).to_numpy(np.float32)], axis=1)  # (N, 2)

    columns = [SparseFeat(c, len(vocab[c]) + 2, embedding_dim=DIM) for c in SPARSE]
    names = get_feature_names(columns)
    x_train, y_train = inputs(train), labels(train)
    prep_seconds = time.perf_counter() - started
    common = dict(task_types=("binary", "binary"), task_names=("ctr", "ctcvr"), seed=seed)
    model = {
        "shared_bottom": lambda: SharedBottom(columns, bottom_dnn_hidden_units=(128,), tower_dnn_hidden_units=(64,), **common),
        "esmm": lambda: ESMM(columns, tower_dnn_hidden_units=(128, 64), **common),
        "mmoe": lambda: MMOE(columns, num_experts=4, expert_dnn_hidden_units=(64,), gate_dnn_hidden_units=(), tower_dnn_hidden_units=(64,), **common),
        "ple": lambda: PLE(columns, shared_expert_num=2, specific_expert_num=2, num_levels=2, expert_dnn_hidden_units=(64,),
                           gate_dnn_hidden_units=(), tower_dnn_hidden_units=(64,), **common),
    }[name]()  # fmt: skip
    model.compile(torch.optim.Adam(model.parameters(), lr=1e-3), loss=["binary_crossentropy", "binary_crossentropy"], metrics=[])
    valid, test = (pd.read_parquet(f"{data_dir}/{s}.parquet", columns=SPARSE + ["click", "like"]) for s in ("valid", "test"))
    seconds, scored = 0.0, []  # each epoch's (validation, test) probabilities (N, 2): pCTR, pCTCVR
    for _ in range(epochs):  # one epoch per fit call: the same model and optimizer carry on
        started = time.perf_counter()
        model.fit({n: x_train[n] for n in names}, y_train, batch_size=1024, epochs=1, verbose=0, shuffle=True)
        seconds += time.perf_counter() - started
        scored.append(tuple(model.predict({n: inputs(frame)[n] for n in names}, batch_size=4096) for frame in (valid, test)))
    y_valid, y_test = labels(valid), labels(test)
    best = int(np.argmax([roc_auc_score(y_valid[:, 1], v[:, 1]) for v, _ in scored]))  # recstack's configs' monitor: click&like
    print(json.dumps({
        **scores(y_test, scored[-1][1]),
        "selected": {**scores(y_test, scored[best][1]), "epoch": best + 1},
        "train_seconds": seconds,
        "samples_per_second": len(y_train) * epochs / seconds,
        "step_samples_per_second": len(y_train) * epochs / seconds,  # its fit holds no validation pass
        "prep_seconds": prep_seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))  # fmt: skip


def scores(y: np.ndarray, probs: np.ndarray) -> dict:
    """Click AUC and click&like AUC over every row."""
    return {"click_auc": roc_auc_score(y[:, 0], probs[:, 0]), "click_and_like_auc": roc_auc_score(y[:, 1], probs[:, 1])}


if __name__ == "__main__":
    main()
