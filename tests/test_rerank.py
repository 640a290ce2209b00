import numpy as np

from reid_htg.retrieval.rerank import reranked_distance_blocks


def _dense_reference(qf, gf, k1, k2, lam):
    """The original re-ranking code (Zhong et al. 2017), dense, with cosine distance and exp(-d) weights."""
    x = np.concatenate([qf, gf]).astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    d = 1.0 - x @ x.T
    n, nq = len(x), len(qf)
    rank = np.argsort(d, axis=1, kind="stable")
    v = np.zeros((n, n))
    for i in range(n):
        fwd = rank[i, : k1 + 1]
        back = rank[fwd, : k1 + 1]
        recip = fwd[np.where(back == i)[0]]
        exp = recip
        for c in recip:
            h = int(np.around(k1 / 2))
            cf = rank[c, : h + 1]
            cb = rank[cf, : h + 1]
            crec = cf[np.where(cb == c)[0]]
            if len(np.intersect1d(crec, recip)) > 2 / 3 * len(crec):
                exp = np.append(exp, crec)
        exp = np.unique(exp)
        w = np.exp(-d[i, exp])
        v[i, exp] = w / w.sum()
    v = np.stack([v[rank[i, :k2]].mean(0) for i in range(n)])
    jac = np.zeros((nq, n - nq))
    for i in range(nq):
        mins = np.minimum(v[i][None, :], v[nq:]).sum(1)
        jac[i] = 1 - mins / (2 - mins)
    return jac * (1 - lam) + d[:nq, nq:] * lam


def test_sparse_rerank_equals_dense_original(rng):
    centers = rng.standard_normal((12, 16))
    qf = (centers[rng.integers(0, 12, 25)] + 0.7 * rng.standard_normal((25, 16))).astype(np.float32)
    gf = (centers[rng.integers(0, 12, 90)] + 0.7 * rng.standard_normal((90, 16))).astype(np.float32)
    want = _dense_reference(qf, gf, k1=8, k2=3, lam=0.3)
    got = np.concatenate([b for _, b in reranked_distance_blocks(qf, gf, k1=8, k2=3, lambda_value=0.3, chunk_size=7)])
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_rerank_through_eval_tool(tmp_path, rng):
    import json

    centers = rng.standard_normal((30, 16))
    qp, gp = rng.integers(0, 30, 60), rng.integers(0, 30, 300)
    np.savez(tmp_path / "f.npz", qf=(centers[qp] + 0.9 * rng.standard_normal((60, 16))).astype(np.float32),
             gf=(centers[gp] + 0.9 * rng.standard_normal((300, 16))).astype(np.float32),
             q_pids=qp, g_pids=gp, q_camids=np.zeros(60, int), g_camids=np.ones(300, int))
    from conftest import run_tool_here

    run_tool_here("eval.py", "--features", tmp_path / "f.npz", "--json", tmp_path / "a.json")
    out = run_tool_here("eval.py", "--features", tmp_path / "f.npz", "--rerank", "--json", tmp_path / "b.json")
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("a.json", "b.json"))
    assert "re-ranking" in out.stdout
    assert b["mAP"] > a["mAP"]  # clustered identities: re-ranking helps, as it does on real re-ID data
