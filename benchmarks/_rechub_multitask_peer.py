"""The torch-rechub side of benchmarks/multitask.py (``--rechub-path``): one multi-task model on the
MovieLens-100K multi-task set, one JSON line on stdout.

Usage: python _rechub_multitask_peer.py DATA_DIR MODEL SEED EPOCHS [ADAPTIVE]
(MODEL: shared_bottom esmm mmoe ple aitm; ADAPTIVE: uwl or metabalance, ``MTLTrainer``'s
``adaptive_params={"method": ADAPTIVE}`` with its defaults; not for esmm, whose loss it ignores).
torch-rechub 0.9.0's ``train_one_epoch`` raises ``UnboundLocalError`` (``loss`` unset) under
metabalance and gradnorm; for metabalance this script runs its step as that method's branch
does (``meta_optimizer.step(losses)``, then the shared and task optimizers), without the line that
fails (its regularization, 0 here).

torch-rechub's multi-task models with its ``MTLTrainer`` as its examples use them: heads ``ctr``
(click) and ``ctcvr`` (click·like) over every impression; ESMM returns [cvr, ctr, ctcvr] and is
trained on ctr and ctcvr only (the trainer's rule), with a cvr label column it never reads. Id-only
features, embedding 16, vocabularies fitted on train (unknown -> 1), Adam lr 1e-3 without weight
decay, batch 1024, fixed epochs: ``MTLTrainer.fit``'s epoch loop (its early stopping, patience
above the epochs, never fires) with every epoch scored on the valid and test splits; the JSON holds
the last epoch's test AUCs and, under ``selected``, those of the epoch of best validation
click&like AUC (recstack's configs' monitor); sizes as recstack's configs. ``train_seconds`` holds
training and the per-epoch scoring, as recstack's ``train_seconds`` holds its validation passes;
``step_samples_per_second`` times its ``train_one_epoch`` calls alone (recstack's
``step_samples_per_second`` likewise leaves its validation out).
torch-rechub is not a recstack dependency: this file is never imported by it.
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
from sklearn.metrics import roc_auc_score

from torch_rechub.basic.features import SparseFeature
from torch_rechub.models.multi_task import AITM, ESMM, MMOE, PLE, SharedBottom
from torch_rechub.trainers import MTLTrainer
from torch.utils.data import DataLoader
from torch_rechub.utils.data import DataGenerator, PredictDataset

SPARSE = ["user_id", "item_id", "gender", "age", "occupation", "zip_prefix", "genre"]
USER_SIDE = ["user_id", "gender", "age", "occupation", "zip_prefix"]
DIM = 16


def main() -> None:
    data_dir, name, seed, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    adaptive = {"method": sys.argv[5]} if len(sys.argv) > 5 else None
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    np.random.seed(seed)
    frames = {s: pd.read_parquet(f"{data_dir}/{s}.parquet", columns=SPARSE + ["click", "like"]) for s in ("train", "valid", "test")}
    vocab = {c: {v: i + 2 for i, v in enumerate(pd.unique(frames["train"][c].astype(str)))} for c in SPARSE}

    def inputs(df: pd.DataFrame) -> dict[str, np.ndarray]:
        return {c: df[c].astype(str).map(vocab[c]).fillna(1).astype(np.int64).to_numpy() for c in SPARSE}

    def labels(df: pd.DataFrame) -> np.ndarray:
        click, joint = df["click"].to_numpy(np.float32), (df["click"] * df["like"]).to_numpy(np.float32)
        columns = [df["like"].to_numpy(np.float32), click, joint] if name == "esmm" else [click, joint]
        return np.stack(columns, axis=1)  # (N, T)

    features = [SparseFeature(c, vocab_size=len(vocab[c]) + 2, embed_dim=DIM) for c in SPARSE]
    tasks = ["classification"] * (3 if name == "esmm" else 2)
    towers = [{"dims": [64]}, {"dims": [64]}]
    model = {
        "shared_bottom": lambda: SharedBottom(features, tasks, bottom_params={"dims": [128]}, tower_params_list=towers),
        "esmm": lambda: ESMM([f for f in features if f.name in USER_SIDE], [f for f in features if f.name not in USER_SIDE],
                             cvr_params={"dims": [128, 64]}, ctr_params={"dims": [128, 64]}),
        "mmoe": lambda: MMOE(features, tasks, n_expert=4, expert_params={"dims": [64]}, tower_params_list=towers),
        "ple": lambda: PLE(features, tasks, n_level=2, n_expert_specific=2, n_expert_shared=2, expert_params={"dims": [64]},
                           tower_params_list=towers),
        # as configs/ml100k_aitm.yaml: each step's tower [128, 64], its logit straight off the transfer
        "aitm": lambda: AITM(features, 2, bottom_params={"dims": [128, 64]}, tower_params_list=[{"dims": []}, {"dims": []}]),
    }[name]()  # fmt: skip
    train, valid, test = (frames[s] for s in ("train", "valid", "test"))
    loaders = DataGenerator(inputs(train), labels(train)).generate_dataloader(
        x_val=inputs(valid), y_val=labels(valid), x_test=inputs(test), y_test=labels(test), batch_size=1024
    )
    with tempfile.TemporaryDirectory() as folder, open(os.devnull, "w") as null:
        trainer = MTLTrainer(model, task_types=tasks, optimizer_params={"lr": 1e-3, "weight_decay": 0.0}, n_epoch=epochs,
                             earlystop_patience=epochs + 1, device="cpu", model_path=folder, adaptive_params=adaptive)  # fmt: skip
        stdout, sys.stdout = sys.stdout, null  # the trainer prints every epoch's scores
        step_seconds, scored = [], []  # train_one_epoch alone; each epoch's (validation, test) probabilities (N, T)
        started = time.perf_counter()
        for _ in range(epochs):  # MTLTrainer.fit's epoch, with every epoch scored (its early stopper never fired here)
            began = time.perf_counter()
            if adaptive is not None and adaptive["method"] == "metabalance":
                metabalance_epoch(trainer, model, loaders[0])
            else:
                trainer.train_one_epoch(loaders[0])
            step_seconds.append(time.perf_counter() - began)
            scored.append(tuple(np.asarray(trainer.predict(model, DataLoader(PredictDataset(inputs(frame)), batch_size=4096)))
                                for frame in (valid, test)))  # fmt: skip
        seconds = time.perf_counter() - started
        sys.stdout = stdout
    click, joint = (1, 2) if name == "esmm" else (0, 1)
    print(json.dumps({
        **scores(labels(test), scored[-1][1], click, joint),
        "selected": selected(labels(valid), labels(test), scored, click, joint),
        "train_seconds": seconds,
        "samples_per_second": len(train) * epochs / seconds,
        "step_samples_per_second": len(train) * epochs / sum(step_seconds),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))  # fmt: skip


def metabalance_epoch(trainer: MTLTrainer, model: torch.nn.Module, loader: DataLoader) -> None:
    """``MTLTrainer.train_one_epoch``'s metabalance branch (torch-rechub 0.9.0), which the trainer
    itself cannot reach (module docstring)."""
    model.train()
    for x_dict, ys in loader:
        predictions = model(x_dict)
        losses = [trainer.loss_fns[i](predictions[:, i], ys[:, i].float()) for i in range(trainer.n_task)]
        trainer.share_optimizer.zero_grad()
        trainer.task_optimizer.zero_grad()
        trainer.meta_optimizer.step(losses)
        trainer.share_optimizer.step()
        trainer.task_optimizer.step()


def scores(y: np.ndarray, probs: np.ndarray, click: int, joint: int) -> dict:
    """Click AUC and click&like AUC over every row."""
    return {"click_auc": roc_auc_score(y[:, click], probs[:, click]), "click_and_like_auc": roc_auc_score(y[:, joint], probs[:, joint])}


def selected(y_valid: np.ndarray, y_test: np.ndarray, scored: list, click: int, joint: int) -> dict:
    """The test scores of the epoch of best validation click&like AUC (recstack's configs' monitor)."""
    valid = [roc_auc_score(y_valid[:, joint], v[:, joint]) for v, _ in scored]
    best = int(np.argmax(valid))
    return {**scores(y_test, scored[best][1], click, joint), "epoch": best + 1}


if __name__ == "__main__":
    main()
