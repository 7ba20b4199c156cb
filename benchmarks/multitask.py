"""Multi-task rankers vs two single-task DeepFMs on the MovieLens-100K multi-task set, side by side.

Data: ``recstack datasets movielens-multitask`` (ratings + one popularity-drawn unobserved movie
per rating, the CTR set's time split; click = observed, like = rating >= 4 given click). Every
run reads the same features (``schemas/movielens_multitask.yaml``), one thread, Adam lr 1e-3,
batch 1024, at most ``--epochs`` epochs with patience 2, each in its own ``recstack train``
process:

* shared_bottom / esmm / mmoe / ple: ``configs/ml100k_<model>.yaml`` (monitor: click_and_like_auc);
  aitm: ``configs/ml100k_aitm.yaml``, the same features as a funnel
  (``schemas/movielens_multitask_funnel.yaml``: like is P(click and like) over every row, so its
  like AUC is the others' click&like AUC; its "like AUC (clicked)" is that score's AUC among
  clicked rows, from ``recstack predict``; no like GAUC);
  ``--models`` takes any ``configs/ml100k_<name>.yaml`` multi-task config, e.g. ``mmoe_din`` (MMoE
  over DIN's feature part); ``--seeds 0 1 2`` trains each once per seed and prints the medians;
* single-task pairs, DeepFM ([256, 128]) and embedding_mlp (a DNN on the same concatenated
  features as the multi-task bottoms, [128, 64]): one on click over every impression, one on
  like over clicked rows only (the usual CVR model, trained on the clicked space), monitor auc;
  the pair's click-and-like score is the product of its two probabilities; ``--models din`` gives
  the pair of DINs with ``mmoe_din``'s feature part.

Reported on the test split, per target: click AUC (all rows), like AUC and GAUC (clicked rows:
p(like | click)), click_and_like AUC (all rows: pCTCVR against click·like), next to the
popularity baseline's (training rating counts as the score); training seconds and samples/s
from each run's metrics.json.

    .venv/bin/python benchmarks/multitask.py --epochs 6 --out /tmp/multitask_bench

``--peer-path DIR`` (a folder holding DeepCTR-Torch 0.3.0 and torch-rechub 0.9.0, e.g. ``pip install
--target DIR --no-deps deepctr-torch==0.3.0 torch-rechub==0.9.0``) runs instead recstack and the
peers side by side (``--libraries``) on equal features
(the 7 id fields of ``benchmarks/ranking.py``'s peer), fixed ``--epochs`` (no early stopping),
every library keeping its epoch of best validation click_and_like_auc (recstack's trainer keeps
those weights; the peer scripts score every epoch and report that epoch's test AUCs, the last
epoch's beside them), each run under
``/usr/bin/time`` for peak RSS; a peer trains its second head on click·like over every row, as
their examples do (``_deepctr_multitask_peer.py``, ``_rechub_multitask_peer.py``). Compared: click
AUC and click&like AUC (test, every row), training samples/s (the whole fit) and step samples/s (the
training steps alone, without validation passes or set-up), peak RSS; with ``--seeds 0 1 2`` a
round per seed, medians over them and the median per-round ratio of recstack's step samples/s to
each peer's. ``--set model.params.batch_norm=true`` gives recstack's MLPs torch-rechub's batch norm.
recstack's runs there weigh click and like equally, as the peers do (the shipped configs weigh like
0.1; ``--set "task.targets=[...]"`` overrides). ``--rechub-adaptive metabalance`` (or ``uwl``)
trains torch-rechub with its adaptive loss weighting, to pair with recstack's ``--set
task.loss_weighting=metabalance``.

``--like-weights 1 0.3 0.1`` trains each multi-task model once per like loss weight (and seed);
the table then holds each run's validation click&like AUC beside its test figures, the measure to
choose the weight by. ``--seeds`` also repeats the single-task pairs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parent.parent
MULTI = ("shared_bottom", "esmm", "mmoe", "ple", "aitm")
# funnel models read schemas/movielens_multitask_funnel.yaml: their like target is P(click and like) over
# every row (its like_auc is the others' click_and_like_auc); DeepCTR-Torch has no AITM
FUNNEL = ("aitm",)


def run(args: list[str]) -> None:
    subprocess.run([sys.executable, "-m", "recstack.cli", *args], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


SINGLE = {
    "deepfm": {"hidden_dims": [256, 128]},
    "embedding_mlp": {"hidden_dims": [128, 64]},  # DNN: the bottoms' feature part
    "din": {  # configs/ml100k_mmoe_din.yaml's feature part, with DIN's own MLP
        "behaviours": [{"candidate": "item_id", "history": "hist_item_ids"}, {"candidate": "genre", "history": "hist_genres"}],
        "attention_hidden_dims": [80, 40],
    },
}


def single_task_config(out: Path, data: Path, target: str, epochs: int, model: str = "deepfm", seed: int = 0) -> Path:
    """A single-task config on ``target``: every row for click, clicked rows only for like."""
    schema = yaml.safe_load((ROOT / "schemas" / "movielens_multitask.yaml").read_text())
    schema.pop("targets")
    schema["label"] = target
    if target == "like":  # the single-task CVR model sees the clicked space only
        folder = out / "clicked"
        folder.mkdir(parents=True, exist_ok=True)
        for split in ("train", "valid", "test"):
            table = pq.read_table(data / f"{split}.parquet")
            pq.write_table(table.filter(pc.equal(table["click"], 1.0)), folder / f"{split}.parquet")
        data = folder
    config = {
        "name": f"{model}_{target}" + ("" if seed == 0 else f"_seed{seed}"),
        "data": {split: str(data / f"{split}.parquet") for split in ("train", "valid", "test")},
        "schema": schema,
        "task": {"type": "binary"},
        "model": {"name": model, "params": SINGLE[model]},
        "loader": {"batch_size": 1024, "shuffle_buffer": 200000},
        "trainer": {"epochs": epochs, "lr": 0.001, "patience": 2, "monitor": "auc"},
        "output": str(out / f"{model}_{target}" if seed == 0 else out / f"{model}_{target}_seed{seed}"),
        "threads": 1,
        "seed": seed,
    }
    path = out / f"{config['name']}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


ID_FEATURES = ["user_id", "item_id", "gender", "age", "occupation", "zip_prefix", "genre"]
# the peers weigh their two losses equally; the shipped configs weigh like 0.1 (a later --set wins)
EQUAL_WEIGHTS = "task.targets=[{name: click}, {name: like, condition: click}]"
FUNNEL_EQUAL_WEIGHTS = "task.targets=[{name: click}, {name: like}]"


def timed(command: list[str], env: dict | None = None) -> tuple[str, float]:
    """``command``'s stdout and its peak RSS in MiB (``/usr/bin/time -f %M``)."""
    import os

    done = subprocess.run(["/usr/bin/time", "-f", "RSS_KB %M", *command], cwd=ROOT, capture_output=True, text=True, check=True,
                          env={**os.environ, **(env or {})})  # fmt: skip
    rss = [line for line in done.stderr.splitlines() if line.startswith("RSS_KB ")][-1]
    return done.stdout, int(rss.split()[1]) / 1024


def peers(args: argparse.Namespace) -> None:
    """recstack and the peers on the same id features and epochs (module docstring): one round per
    ``--seeds`` value (each library trains with that seed), every (model, library) back to back;
    then, per model and library, the median click / click&like AUC over the seeds and recstack's
    step samples/s over each peer's, per round, as medians."""
    import statistics

    print("| model | library | seed | click AUC | click&like AUC | epoch kept | last epoch: click / click&like AUC | train samples/s "
          "| step samples/s | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    features = "[" + ",".join(ID_FEATURES) + "]"
    scripts = {"deepctr": ("DeepCTR-Torch 0.3.0", "_deepctr_multitask_peer.py"), "rechub": ("torch-rechub 0.9.0", "_rechub_multitask_peer.py")}
    results: dict[tuple[str, str], list[dict]] = {}
    for seed in args.seeds:
        for name in (m for m in args.models if m in MULTI):
            for library in (lib for lib in ("recstack", "deepctr", "rechub") if lib in args.libraries and not (lib == "deepctr" and name in FUNNEL)):
                if library == "recstack":
                    output = args.out / f"{name}_ids"
                    _, rss = timed([sys.executable, "-m", "recstack.cli", "train", str(ROOT / "configs" / f"ml100k_{name}.yaml"), "--overwrite",
                                    "--set", f"output={output}", "--set", f"data.dir={args.data}", "--set", f"trainer.epochs={args.epochs}",
                                    "--set", "trainer.patience=null", "--set", f"model.params.features={features}", "--set", "threads=1",
                                    "--set", f"seed={seed}", "--set", FUNNEL_EQUAL_WEIGHTS if name in FUNNEL else EQUAL_WEIGHTS,
                                    *[flag for setting in args.set for flag in ("--set", setting)]])  # fmt: skip
                    metrics = json.loads((output / "metrics.json").read_text())
                    if name in FUNNEL:  # like is P(click and like) over every row
                        metrics["test"]["click_and_like_auc"] = metrics["test"]["like_auc"]
                    label, result = "recstack", {**metrics["test"], **metrics}
                    result["selected"] = {**metrics["test"], "epoch": metrics["best_epoch"]}  # the weights it keeps
                else:
                    label, script = scripts[library]
                    adaptive = [args.rechub_adaptive] if library == "rechub" and args.rechub_adaptive else []
                    out, rss = timed([sys.executable, str(ROOT / "benchmarks" / script), str(args.data), name, str(seed), str(args.epochs), *adaptive],
                                     env={"PYTHONPATH": str(args.peer_path), "OMP_NUM_THREADS": "1"})  # fmt: skip
                    result = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
                results.setdefault((name, library), []).append({**result, "rss": rss})
                kept = result["selected"]
                last = "–" if library == "recstack" and kept["epoch"] != args.epochs else f"{result['click_auc']:.4f} / {result['click_and_like_auc']:.4f}"
                print(f"| {name} | {label} | {seed} | {kept['click_auc']:.4f} | {kept['click_and_like_auc']:.4f} | {kept['epoch']} | {last} | "
                      f"{result['samples_per_second']:,.0f} | {result['step_samples_per_second']:,.0f} | {rss:.0f} |", flush=True)  # fmt: skip
    print(f"\nMedians over seeds {args.seeds} (AUCs at each run's epoch of best validation click&like AUC):\n")
    print("| model | library | click AUC | click&like AUC | step samples/s | recstack / library, step samples/s per round | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    for (name, library), runs in results.items():
        median = lambda key: statistics.median(r["selected"].get(key, r[key]) for r in runs)  # noqa: E731
        ratio = "–"
        if library != "recstack" and (name, "recstack") in results:
            ratios = [ours["step_samples_per_second"] / theirs["step_samples_per_second"] for ours, theirs in zip(results[(name, "recstack")], runs)]
            ratio = f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"
        label = "recstack" if library == "recstack" else scripts[library][0]
        print(f"| {name} | {label} | {median('click_auc'):.4f} | {median('click_and_like_auc'):.4f} | {median('step_samples_per_second'):,.0f} | "
              f"{ratio} | {median('rss'):.0f} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/multitask_bench"))
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "ml100k_multitask")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--models", nargs="*", default=[*MULTI, *SINGLE])
    parser.add_argument("--peer-path", type=Path, default=None, help="a folder holding deepctr_torch / torch_rechub: run the peer comparison")
    parser.add_argument("--seeds", type=int, nargs="*", default=[0], help="one run of each multi-task model per seed (medians printed); peer comparison: one round of every (model, library) per seed")
    parser.add_argument("--libraries", nargs="*", default=["recstack", "deepctr", "rechub"], help="peer comparison: which libraries run")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for recstack's multi-task runs (e.g. model.params.batch_norm=true, as torch-rechub's MLPs)")
    parser.add_argument("--rechub-adaptive", choices=["uwl", "metabalance"], default=None,
                        help="peer comparison: torch-rechub's adaptive loss weighting (pair it with --set task.loss_weighting=...)")
    parser.add_argument("--like-weights", type=float, nargs="*", default=[None],
                        help="one multi-task run per like loss weight (task.targets' like weight; default: the config's)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    run(["datasets", "movielens-multitask", "--out", str(args.data)])
    if args.peer_path is not None:
        peers(args)
        return
    stats = json.loads((args.data / "stats.json").read_text())
    from recstack.evaluation.ranking_metrics import auc

    test_rows = pq.read_table(args.data / "test.parquet")
    click, like = test_rows["click"].to_numpy(), test_rows["like"].to_numpy()
    rows = []
    for name in args.models:
        if name in SINGLE:
            continue
        for weight in args.like_weights:
            per_seed = []
            for seed in args.seeds:
                suffix = ("" if seed == 0 else f"_seed{seed}") + ("" if weight is None else f"_like{weight:g}")
                output = args.out / f"{name}{suffix}"
                condition = "" if name in FUNNEL else ", condition: click"
                weighting = [] if weight is None else ["--set", f"task.targets=[{{name: click}}, {{name: like{condition}, weight: {weight}}}]"]
                run(["train", str(ROOT / "configs" / f"ml100k_{name}.yaml"), "--overwrite", "--set", f"output={output}",
                     "--set", f"data.dir={args.data}", "--set", f"trainer.epochs={args.epochs}", "--set", f"seed={seed}",
                     *weighting, *[flag for setting in args.set for flag in ("--set", setting)]])  # fmt: skip
                metrics = json.loads((output / "metrics.json").read_text())
                test = metrics["test"]
                if name in FUNNEL:  # like is P(click and like) over every row; its AUC among clicks from the scores
                    path = args.out / f"{output.name}_test_scores.parquet"
                    run(["predict", str(output), "--data", str(args.data / "test.parquet"), "--out", str(path)])
                    clicked = click == 1
                    like_among_clicks = auc(like[clicked], pq.read_table(path)["like"].to_numpy()[clicked])
                    per_seed.append((test["click_auc"], like_among_clicks, float("nan"), test["like_auc"],
                                     metrics["valid"]["like_auc"], metrics["train_seconds"], metrics["samples_per_second"]))  # fmt: skip
                else:
                    per_seed.append((test["click_auc"], test["like_auc"], test["like_gauc"], test["click_and_like_auc"],
                                     metrics["valid"]["click_and_like_auc"], metrics["train_seconds"], metrics["samples_per_second"]))  # fmt: skip
                epochs = metrics["epochs_run"]
            medians = np.median(np.array(per_seed), axis=0)
            label = name if weight is None else f"{name}, like weight {weight:g}"
            if len(args.seeds) > 1:
                label += f" (median of seeds {' '.join(map(str, args.seeds))})"
            rows.append((label, *medians, epochs if len(args.seeds) == 1 else "–"))
    valid_rows = pq.read_table(args.data / "valid.parquet")
    valid_click, valid_like = valid_rows["click"].to_numpy(), valid_rows["like"].to_numpy()
    for model in (m for m in args.models if m in SINGLE):
        per_seed = []
        for seed in args.seeds:
            single, scores, valid_scores = {}, {}, {}
            for target in ("click", "like"):
                output = args.out / f"{model}_{target}" if seed == 0 else args.out / f"{model}_{target}_seed{seed}"
                run(["train", str(single_task_config(args.out, args.data, target, args.epochs, model, seed)), "--overwrite"])
                single[target] = json.loads((output / "metrics.json").read_text())
                for split, into in (("test", scores), ("valid", valid_scores)):  # the pair's product is scored on every row
                    path = args.out / f"{output.name}_{split}_scores.parquet"
                    run(["predict", str(output), "--data", str(args.data / f"{split}.parquet"), "--out", str(path)])
                    into[target] = pq.read_table(path)["score"].to_numpy()
            seconds = single["click"]["train_seconds"] + single["like"]["train_seconds"]
            samples = single["click"]["train_samples"] + single["like"]["train_samples"]
            per_seed.append((single["click"]["test"]["auc"], single["like"]["test"]["auc"], single["like"]["test"]["gauc"],
                             auc(click * like, scores["click"] * scores["like"]),
                             auc(valid_click * valid_like, valid_scores["click"] * valid_scores["like"]), seconds, samples / seconds))  # fmt: skip
            epochs = f'{single["click"]["epochs_run"]}+{single["like"]["epochs_run"]}'
        label = f"2 × {model} (click; like on clicked rows)"
        if len(args.seeds) > 1:
            label += f" (median of seeds {' '.join(map(str, args.seeds))})"
        rows.append((label, *np.median(np.array(per_seed), axis=0), epochs if len(args.seeds) == 1 else "–"))
    popularity = stats["popularity_auc"]["test"]
    print("| model | click AUC | like AUC (clicked) | like GAUC | click&like AUC | valid click&like AUC | train s | samples/s | epochs |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| popularity (train counts) | {popularity['click']:.4f} | {popularity['like']:.4f} | – | {popularity['click_and_like']:.4f} | – | – | – | – |")
    for name, c, l, lg, j, valid_j, secs, sps, epochs in rows:
        gauc = "–" if np.isnan(lg) else f"{lg:.4f}"  # a funnel model has no like-given-click GAUC
        print(f"| {name} | {c:.4f} | {l:.4f} | {gauc} | {j:.4f} | {valid_j:.4f} | {secs:.1f} | {sps:,.0f} | {epochs} |")


if __name__ == "__main__":
    main()
