"""Nearest-label accuracy with ties (docs/model.md §1): labels that coincide share the credit."""
import numpy as np
import pytest

from symcollapse.numerics.metrics import accuracy, nearest_label


def _brute(X, Y, labels, W=None):
    """Independent reference without ties: own label strictly nearest, by a Python loop."""
    Q = X if W is None else X @ W.T
    hits = [int(np.argmin([np.linalg.norm(q - y) for y in Y]) == c) for q, c in zip(Q, labels) if c >= 0]
    return sum(hits) / len(hits)


def test_without_ties_it_is_the_fraction_nearest_to_their_own_label():
    rng = np.random.default_rng(3)
    X, Y = rng.normal(size=(200, 3)), rng.normal(size=(5, 3))
    labels = rng.integers(-1, 5, size=200)
    W = rng.normal(size=(3, 3))
    assert accuracy(X, Y, labels) == _brute(X, Y, labels)
    assert accuracy(X, Y, labels, W) == _brute(X, Y, labels, W)
    assert np.mean(nearest_label(X[labels >= 0], Y) == labels[labels >= 0]) == _brute(X, Y, labels)


def test_rows_decided_by_the_fast_path_agree_with_the_exact_distances():
    """Mixed rows (some near-tied, most clear): the same credit as the all-differences rule."""
    from symcollapse.numerics.metrics import label_distances

    rng = np.random.default_rng(5)
    Y = rng.normal(size=(4, 3))
    Y[1] = Y[0] + 1e-17
    X = np.vstack([rng.normal(size=(50, 3)), Y[0] + 1e-15 * rng.normal(size=(10, 3))])
    labels = rng.integers(0, 4, size=60)
    D = label_distances(X, Y)
    s = np.linalg.norm(X, axis=1) + np.linalg.norm(Y, axis=1).max()
    tied = D <= D.min(axis=1, keepdims=True) + 1e-9 * s[:, None]
    want = np.mean(tied[np.arange(60), labels] / tied.sum(axis=1))
    assert accuracy(X, Y, labels) == pytest.approx(want, abs=1e-15)


def test_complete_collapse_scores_chance_whatever_the_round_off():
    """All labels at one point up to round-off (Δ_min ~ 1e-16): every sample's credit is 1/K.
    argmin used to pick a label by the round-off (0.169 < 1/4 in the README example)."""
    rng = np.random.default_rng(0)
    K, d = 4, 2
    centre = rng.normal(size=d)
    Y = centre + 1e-16 * rng.normal(size=(K, d))
    X = centre + 1e-16 * rng.normal(size=(80, d))
    labels = np.repeat(np.arange(K), 20)
    assert accuracy(X, Y, labels) == pytest.approx(1 / K, abs=1e-15)
    # unbalanced labels, exactly equal Y: argmin (first index) would give 0 for class 2 samples
    assert accuracy(X, np.tile(centre, (3, 1)), np.full(80, 2)) == pytest.approx(1 / 3, abs=1e-15)


def test_partial_collapse_shares_credit_between_the_merged_labels_only():
    Y = np.array([[0.0, 0.0], [0.0, 0.0], [5.0, 0.0]])  # labels 0 and 1 merged, 2 apart
    X = np.array([[0.1, 0.0], [0.0, 0.1], [4.9, 0.0]])
    assert accuracy(X, Y, np.array([1, 1, 2])) == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert accuracy(X, Y, np.array([2, 2, 0])) == 0.0  # a wrong unique nearest label earns nothing


@pytest.mark.parametrize("gap", [1e-6, 1e-8])
def test_small_but_real_separation_is_not_a_tie(gap):
    """Labels 1e-6 or 1e-8 apart (late collapse, far above round-off, but below what
    ‖q‖² − 2q·y + ‖y‖² resolves near the labels) are still told apart."""
    Y = np.array([[1.0, 0.0], [1.0 + gap, 0.0]])
    X = np.array([[1.0 - 0.1 * gap, 0.0], [1.0 + 1.1 * gap, 0.0]])
    assert accuracy(X, Y, np.array([0, 1])) == 1.0
    assert accuracy(X, Y, np.array([1, 0])) == 0.0
    assert accuracy(X, Y, np.array([1, 0]), rtol=10 * gap) == 0.5  # a coarser tolerance ties them


def test_collapsed_embedding_model_ends_at_chance():
    """The README example: B(4, 40, 4) collapses completely by t = 300; the accuracy there
    is chance, 1/K, not noise."""
    from symcollapse.models.couplings import balanced_couplings
    from symcollapse.models.embedding import EmbeddingModel

    m = EmbeddingModel(balanced_couplings(K=4, n=40, mu=4), d=2)
    tr = m.simulate(t_end=300.0, seed=0)
    assert tr.accuracy[0] < 1.0 and max(tr.accuracy) == 1.0
    assert tr.d_min[-1] < 1e-12
    assert tr.accuracy[-1] == pytest.approx(0.25, abs=1e-12)


def test_batched_metrics_equal_the_single_ones_including_ties():
    """d_min_many / accuracy_many over B states = d_min / accuracy state by state, also where
    labels coincide (ties, the collapsed state) and through a head W."""
    from symcollapse.numerics.metrics import accuracy, accuracy_many, d_min, d_min_many

    rng = np.random.default_rng(5)
    B, N, K, d = 6, 40, 3, 2
    X, Y, W = rng.normal(size=(B, N, d)), rng.normal(size=(B, K, d)), rng.normal(size=(B, d, d))
    Y[1, 2] = Y[1, 0]            # two labels tied exactly
    Y[2] = Y[2, 0]               # complete collapse: every label tied (credit 1/K)
    X[3, :5] = 0.5 * (Y[3, 0] + Y[3, 1])  # samples equidistant from two labels
    labels = rng.integers(0, K, size=N)
    labels[::7] = -1             # frustrated samples do not count
    for Wb in (None, W):
        got = accuracy_many(X, Y, labels, Wb)
        want = [accuracy(X[b], Y[b], labels, None if Wb is None else Wb[b]) for b in range(B)]
        np.testing.assert_array_equal(got, want)
    assert abs(accuracy_many(X, Y, labels)[2] - 1.0 / K) < 1e-15
    np.testing.assert_array_equal(d_min_many(Y), [d_min(Y[b]) for b in range(B)])
