"""Classic retrieval baselines over a user-item interaction matrix: Popularity, ItemKNN, EASE, ALS.

Shape legend: U users, N items, C users in one scoring chunk, K neighbours kept per item.

Each baseline is fitted on a ``scipy.sparse`` CSR matrix ``X`` of shape (U, N) whose values are
interaction weights (1 for an implicit interaction, or a count); binarise it first if counts
should not weigh more. ``score(user_rows)`` returns dense ``(C, N)`` float32 scores for rows of
that same matrix (a user's history is their row of ``X``), a fresh array each call, so it plugs
straight into ``recstack.evaluation.retrieval_metrics.evaluate_ranked_scores``::

    model = EASE(l2=200.0).fit(train)                         # train: csr_matrix (U, N)
    metrics = evaluate_ranked_scores(model.score, test_items,
                                     exclude=(train.indptr, train.indices))

Example:
    >>> import scipy.sparse as sp
    >>> train = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 0], [0, 1, 1]], dtype=np.float32))
    >>> Popularity().fit(train).score(np.array([0])).tolist()
    [[2.0, 2.0, 1.0]]
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import scipy.sparse as sp


class InteractionBaseline(ABC):
    """The contract every baseline keeps: ``fit(X) -> self`` then ``score(user_rows)``."""

    def __init__(self) -> None:
        self._interactions: sp.csr_matrix | None = None

    def fit(self, interactions: sp.spmatrix) -> InteractionBaseline:
        """Fit on ``(U, N)`` sparse interactions; returns ``self`` so calls chain."""
        self._interactions = _as_csr(interactions)
        self._fit(self._interactions)
        return self

    def score(self, user_rows: np.ndarray) -> np.ndarray:
        """``(C, N)`` float32 scores of every item for the users at ``user_rows`` ``(C,)``."""
        if self._interactions is None:
            raise RuntimeError(f"{type(self).__name__}.score called before fit")
        rows = np.asarray(user_rows, dtype=np.int64).reshape(-1)
        return np.ascontiguousarray(self._score(rows), dtype=np.float32)

    @property
    def interactions(self) -> sp.csr_matrix:
        """The fitted ``(U, N)`` matrix."""
        if self._interactions is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted")
        return self._interactions

    @abstractmethod
    def _fit(self, interactions: sp.csr_matrix) -> None: ...

    @abstractmethod
    def _score(self, user_rows: np.ndarray) -> np.ndarray: ...


class Popularity(InteractionBaseline):
    """Every user gets the same ranking: items by total interaction weight (a count for 0/1 X)."""

    def _fit(self, interactions: sp.csr_matrix) -> None:
        totals = interactions.sum(axis=0, dtype=np.float64)
        self.item_counts = np.asarray(totals).reshape(-1)  # (N,)

    def _score(self, user_rows: np.ndarray) -> np.ndarray:
        return np.tile(self.item_counts.astype(np.float32), (len(user_rows), 1))  # (C, N)


class ItemKNN(InteractionBaseline):
    """Item-based kNN with shrunk cosine similarity (Sarwar et al. 2001; Deshpande & Karypis 2004).

    ``sim(i, j) = x_i . x_j / (|x_i| |x_j| + shrink)`` over item columns of X, self-similarity
    removed. For each candidate item only its ``k`` most similar items vote, and a user's score
    for item i is the sum of ``sim(i, j)`` over the items j in their history.

    Args:
        k: neighbours kept per candidate item.
        shrink: added to the cosine denominator; damps similarities resting on few co-occurrences.
    """

    def __init__(self, *, k: int = 100, shrink: float = 0.0) -> None:
        super().__init__()
        if k < 1 or shrink < 0:
            raise ValueError(f"need k >= 1 and shrink >= 0, got k={k}, shrink={shrink}")
        self.k = k
        self.shrink = shrink

    def _fit(self, interactions: sp.csr_matrix) -> None:
        num_items = interactions.shape[1]
        gram = (interactions.T @ interactions).tocoo()  # (N, N) co-occurrence, sparse
        norms = np.sqrt(np.asarray(gram.diagonal(), dtype=np.float64))  # (N,)
        row, col = gram.row, gram.col
        sims = gram.data / (norms[row] * norms[col] + self.shrink)
        keep = (row != col) & (sims != 0)
        row, col, sims = row[keep], col[keep], sims[keep]

        # Top-k per column (candidate item), vectorised: sort by (column, -similarity), then
        # keep entries whose position inside their column is below k.
        order = np.lexsort((-sims, col))
        row, col, sims = row[order], col[order], sims[order]
        per_column = np.bincount(col, minlength=num_items)  # (N,)
        column_start = np.cumsum(per_column) - per_column  # (N,)
        keep = np.arange(len(col)) - column_start[col] < self.k
        # weights[j, i] = sim(j, i) for the k neighbours j of candidate i
        self.weights = sp.csr_matrix(
            (sims[keep].astype(np.float32), (row[keep], col[keep])), shape=(num_items, num_items)
        )

    def _score(self, user_rows: np.ndarray) -> np.ndarray:
        return (self.interactions[user_rows] @ self.weights).toarray()  # (C, N)


class EASE(InteractionBaseline):
    """Embarrassingly Shallow Autoencoder (Steck 2019): a closed-form item-item linear model.

    ``B = I - P diag(1 / diag(P))`` with ``P = (X^T X + l2 I)^-1``, which is the ridge regression
    of each item's column on all others under the constraint ``diag(B) = 0``. Scores are
    ``X[user_rows] @ B``. B is a dense (N, N) matrix and fitting inverts one: fine up to some
    tens of thousands of items.

    Args:
        l2: ridge penalty lambda; Steck reports hundreds to thousands on typical data.
    """

    def __init__(self, *, l2: float = 500.0) -> None:
        super().__init__()
        if l2 <= 0:
            raise ValueError(f"l2 must be positive (it makes X^T X invertible), got {l2}")
        self.l2 = l2

    def _fit(self, interactions: sp.csr_matrix) -> None:
        gram = (interactions.T.astype(np.float64) @ interactions).toarray()  # (N, N)
        gram[np.diag_indices_from(gram)] += self.l2
        precision = np.linalg.inv(gram)  # P, (N, N); symmetric positive definite
        weights = precision / -np.diag(precision)  # (N, N): column j divided by -P_jj
        weights[np.diag_indices_from(weights)] = 0.0
        self.weights = weights.astype(np.float32)  # B

    def _score(self, user_rows: np.ndarray) -> np.ndarray:
        return self.interactions[user_rows] @ self.weights  # (C, N)


class ALS(InteractionBaseline):
    """Implicit-feedback ALS (Hu, Koren & Volinsky 2008) through the optional ``implicit`` package.

    Args:
        factors: latent dimension.
        regularization: L2 penalty on the factors.
        alpha: confidence scale on positive interactions, ``C = 1 + alpha * X`` in the paper.
        iterations: ALS sweeps.
        random_state: seed of the factor initialisation.

    Raises:
        ImportError: when ``implicit`` (>= 0.5) is not installed.
    """

    def __init__(
        self,
        *,
        factors: int = 64,
        regularization: float = 0.01,
        alpha: float = 1.0,
        iterations: int = 15,
        random_state: int | None = 0,
    ) -> None:
        super().__init__()
        try:
            from implicit.cpu.als import AlternatingLeastSquares
        except ImportError as error:
            raise ImportError(
                "recstack.retrieval.baselines.ALS needs the optional `implicit` package "
                "(>= 0.5): pip install implicit"
            ) from error
        self._model = AlternatingLeastSquares(
            factors=factors,
            regularization=regularization,
            alpha=alpha,
            iterations=iterations,
            random_state=random_state,
        )

    def _fit(self, interactions: sp.csr_matrix) -> None:
        self._model.fit(interactions, show_progress=False)  # implicit >= 0.5 takes (U, N)
        self.user_factors = np.asarray(self._model.user_factors)  # (U, D)
        self.item_factors = np.asarray(self._model.item_factors)  # (N, D)

    def _score(self, user_rows: np.ndarray) -> np.ndarray:
        return self.user_factors[user_rows] @ self.item_factors.T  # (C, N)


def _as_csr(interactions: sp.spmatrix) -> sp.csr_matrix:
    if not sp.issparse(interactions):
        raise TypeError(f"interactions must be a scipy.sparse matrix, got {type(interactions)}")
    matrix = sp.csr_matrix(interactions, dtype=np.float32)
    matrix.sum_duplicates()
    return matrix
