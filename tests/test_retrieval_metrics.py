import numpy as np
import pytest

from reid_htg.metrics import map_at_r, nmi, recall_at_k


def _brute(x, y):
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    d = 1 - xn @ xn.T
    np.fill_diagonal(d, np.inf)
    return np.argsort(d, axis=1, kind="stable")


def test_recall_and_map_at_r_against_brute_force(rng):
    x = rng.standard_normal((120, 8))
    y = rng.integers(0, 7, 120)
    order = _brute(x, y)
    rec = recall_at_k(x, y, ks=(1, 4, 10))
    for k in (1, 4, 10):
        expect = np.mean([(y[order[i, :k]] == y[i]).any() for i in range(len(y))])
        assert rec[k] == pytest.approx(expect)
    aps = []
    for i in range(len(y)):
        r = int((y == y[i]).sum() - 1)
        if r == 0:
            continue
        hits = y[order[i, :r]] == y[i]
        prec = np.cumsum(hits) / np.arange(1, r + 1)
        aps.append((prec * hits).sum() / r)
    assert map_at_r(x, y) == pytest.approx(np.mean(aps))


def test_nmi_separates_clean_from_random_labels(rng):
    centers = rng.standard_normal((5, 16)) * 5
    y = np.repeat(np.arange(5), 20)
    x = centers[y] + rng.standard_normal((100, 16)) * 0.1
    assert nmi(x, y) > 0.95
    assert nmi(x, rng.permutation(y)) < 0.3


def test_recall_k_too_large_raises():
    with pytest.raises(ValueError, match="Recall@5"):
        recall_at_k(np.eye(3), [0, 1, 2], ks=(5,))


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_class_level_exact_with_ties_and_duplicates(rng, metric):
    from reid_htg.metrics import class_level_reference, evaluate_class_level

    x = rng.integers(0, 3, (90, 4)).astype(np.float32) + 1.0  # few distinct vectors: many ties, many duplicates
    x[10:20] = x[0]  # exact duplicates across classes
    y = rng.integers(0, 9, 90)
    y[0] = 99  # a class with a single image: no possible match
    res = evaluate_class_level(x, y, metric=metric)
    ref = class_level_reference(x, y, metric=metric)
    for k in (1, 2, 4, 8):
        assert res.recall[k] == pytest.approx(ref[f"recall@{k}"], abs=1e-12)
    assert res.map_at_r == pytest.approx(ref["map@r"], abs=1e-12)
    d = res.as_dict()
    assert d["num_query"] == 90 and d["num_classes"] == 10 and d["num_single"] == 1
    assert set(d) >= {"recall@1", "recall@2", "recall@4", "recall@8", "map@r", "nmi"}
    assert 0.0 <= d["nmi"] <= 1.0 and "alone in their class" in res.format()
