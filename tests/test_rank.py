import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reid_htg.metrics import evaluate_features, evaluate_rank, evaluate_rank_reference

# DESIGN.md's golden case: query (pid 1, cam 1); gallery in ascending distance.
GOLDEN = dict(
    distmat=np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]]),
    q_pids=[1],
    g_pids=[1, -1, 2, 1, 0, 1],
    q_camids=[1],
    g_camids=[1, 1, 2, 2, 3, 3],
)


@pytest.mark.parametrize("fn", [evaluate_rank, evaluate_rank_reference])
def test_golden_case(fn):
    r = fn(**GOLDEN, max_rank=3, ap="noninterp")
    assert r.mAP == pytest.approx(0.5)
    assert r.cmc.tolist() == [0.0, 1.0, 1.0]  # rank-1 miss, rank-2 hit
    assert r.mINP == pytest.approx(2 / 4)
    assert fn(**GOLDEN, max_rank=3, ap="official").mAP == pytest.approx(1 / 3)


def _random_problem(rng, ties):
    nq, ng = int(rng.integers(1, 40)), int(rng.integers(1, 150))
    npid = int(rng.integers(1, 10))
    d = rng.random((nq, ng)).astype(np.float32)
    if ties:
        d = np.round(d * 4) / 4  # many exact ties, between matches and negatives too
    return (d, rng.integers(-1, npid, nq), rng.integers(-1, npid, ng), rng.integers(0, 3, nq), rng.integers(0, 3, ng))


@pytest.mark.parametrize("ap", ["noninterp", "official"])
@pytest.mark.parametrize("ties", [False, True])
def test_matches_reference_loop(rng, ap, ties):
    checked = 0
    for _ in range(40):
        prob = _random_problem(rng, ties)
        try:
            ref = evaluate_rank_reference(*prob, max_rank=10, ap=ap)
        except ValueError:
            with pytest.raises(ValueError, match="no query has a true match"):
                evaluate_rank(*prob, max_rank=10, ap=ap)
            continue
        for bins in (1, 3, 2048):  # one bin sends everything down the exact comparison path
            got = evaluate_rank(*prob, max_rank=10, ap=ap, chunk_size=int(rng.integers(1, 9)), num_bins=bins)
            np.testing.assert_allclose(got.cmc, ref.cmc, atol=1e-12)
            assert got.mAP == pytest.approx(ref.mAP, abs=1e-12)
            assert got.mINP == pytest.approx(ref.mINP, abs=1e-12)
            np.testing.assert_allclose(got.all_ap, ref.all_ap, atol=1e-12)
            assert got.num_valid_query == ref.num_valid_query
        checked += 1
    assert checked > 10


def test_larger_problem_against_reference(rng):
    nq, ng = 200, 3000
    qp, gp = rng.integers(1, 60, nq), rng.integers(0, 60, ng)
    qc, gc = rng.integers(0, 6, nq), rng.integers(0, 6, ng)
    d = rng.random((nq, ng)).astype(np.float32)
    for ap in ("noninterp", "official"):
        ref, got = evaluate_rank_reference(d, qp, gp, qc, gc, ap=ap), evaluate_rank(d, qp, gp, qc, gc, ap=ap)
        assert abs(ref.mAP - got.mAP) < 1e-9
        np.testing.assert_allclose(ref.cmc, got.cmc)


def test_queries_without_match_are_counted_and_skipped():
    d = np.array([[0.1, 0.2], [0.3, 0.4]])
    r = evaluate_rank(d, [1, 2], [1, 1], [0, 0], [1, 2], max_rank=2)
    assert (r.num_query, r.num_valid_query) == (2, 1)
    assert r.valid.tolist() == [True, False]


def test_distractors_are_negatives_and_junk_is_dropped():
    d = np.array([[0.1, 0.2, 0.3]])
    # junk at the top is ignored: the match is rank 1
    assert evaluate_rank(d, [5], [-1, 5, 0], [0], [1, 1, 1], max_rank=1).cmc[0] == 1.0
    # a distractor at the top is a negative: the match is rank 2
    assert evaluate_rank(d, [5], [0, 5, 0], [0], [1, 1, 1], max_rank=1).cmc[0] == 0.0


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="AP formula"):
        evaluate_rank(**GOLDEN, ap="interp")
    with pytest.raises(ValueError, match="finite"):
        evaluate_rank(np.array([[np.nan, 0.1]]), [1], [1, 2], [0], [1, 1])
    with pytest.raises(ValueError, match="g_pids has 2 entries"):
        evaluate_rank(np.zeros((1, 3)), [1], [1, 2], [0], [1, 1, 1])


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_features_path_matches_distance_path(rng, metric):
    nq, ng, dim = 60, 400, 16
    qp, gp = rng.integers(1, 20, nq), rng.integers(-1, 20, ng)
    qc, gc = rng.integers(0, 4, nq), rng.integers(0, 4, ng)
    qf = torch.from_numpy(rng.standard_normal((nq, dim))).float()
    gf = torch.from_numpy(rng.standard_normal((ng, dim))).float()
    q64, g64 = qf.double(), gf.double()
    if metric == "cosine":
        d = 1 - F.normalize(q64, dim=1) @ F.normalize(g64, dim=1).T
    else:
        d = torch.cdist(q64, g64)
    for ap in ("noninterp", "official"):
        ref = evaluate_rank_reference(d.numpy(), qp, gp, qc, gc, ap=ap)
        got = evaluate_features(qf, gf, qp, gp, qc, gc, metric=metric, ap=ap, block_size=17, chunk_size=5)
        assert got.mAP == pytest.approx(ref.mAP, abs=1e-9)
        assert got.mINP == pytest.approx(ref.mINP, abs=1e-9)
        np.testing.assert_allclose(got.cmc, ref.cmc)


def test_features_reject_nan_and_shape_mismatch():
    with pytest.raises(ValueError, match="NaN"):
        evaluate_features(torch.full((1, 2), float("nan")), torch.ones(2, 2), [1], [1, 1], [0], [1, 1])
    with pytest.raises(ValueError, match="one D"):
        evaluate_features(torch.ones(1, 3), torch.ones(2, 2), [1], [1, 1], [0], [1, 1])
