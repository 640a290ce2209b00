import itertools

import pytest
import torch
import torch.nn.functional as F

from reid_htg.losses import (
    batch_hard_triplet_loss,
    identity_cross_entropy,
    triplet_loss,
)


def _naive_batch_hard(emb, labels, margin, normalize):
    if normalize:
        emb = F.normalize(emb, dim=1)
    losses, active, gaps = [], [], []
    n = len(labels)
    for i in range(n):
        pos = [torch.dist(emb[i], emb[j]) for j in range(n) if j != i and labels[j] == labels[i]]
        neg = [torch.dist(emb[i], emb[j]) for j in range(n) if labels[j] != labels[i]]
        if not pos or not neg:
            continue
        ap, an = max(pos), min(neg)
        losses.append(F.softplus(ap - an) if margin is None else torch.relu(ap - an + margin))
        active.append(float(an - ap < (margin or 0.0)))
        gaps.append(float(an - ap))
    return torch.stack(losses).mean(), sum(active) / len(active), sum(gaps) / len(gaps)


@pytest.mark.parametrize("margin,normalize", list(itertools.product([0.3, None], [True, False])))
def test_batch_hard_matches_naive_loop(margin, normalize):
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(12, 5, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3, 4, 4, 4])  # identity 3 has no positive: skipped
    loss, stats = batch_hard_triplet_loss(emb, labels, margin, normalize)
    ref, ref_active, ref_gap = _naive_batch_hard(emb.float(), labels, margin, normalize)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    assert stats["active"] == pytest.approx(ref_active) and stats["gap"] == pytest.approx(ref_gap, rel=1e-5)
    assert stats["anchors"] == 11


def test_batch_hard_gradient_flows_and_degenerate_batch_is_loud():
    emb = torch.randn(8, 4, requires_grad=True)
    loss, _ = batch_hard_triplet_loss(emb, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
    loss.backward()
    assert torch.isfinite(emb.grad).all() and emb.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="positive and a negative"):
        batch_hard_triplet_loss(torch.randn(4, 3), torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="positive and a negative"):
        batch_hard_triplet_loss(torch.randn(4, 3), torch.zeros(4, dtype=torch.long))


def test_explicit_triplets_against_loop():
    a, p, n = torch.randn(6, 3), torch.randn(6, 3), torch.randn(6, 3)
    loss, _ = triplet_loss(a, p, n, margin=0.2, normalize=False)
    ref = torch.stack([torch.relu(torch.dist(a[i], p[i]) - torch.dist(a[i], n[i]) + 0.2) for i in range(6)]).mean()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)


def test_identity_cross_entropy_with_smoothing_against_loop():
    logits, y = torch.randn(5, 4, dtype=torch.float64), torch.tensor([0, 3, 1, 1, 2])
    eps = 0.1
    ref = 0.0
    for i in range(5):
        logp = torch.log_softmax(logits[i], 0)
        q = torch.full((4,), eps / 4)
        q[y[i]] += 1 - eps
        ref += -(q * logp).sum() / 5
    assert identity_cross_entropy(logits, y, eps).item() == pytest.approx(ref.item(), rel=1e-5)
    uniform = torch.full((5, 4), 0.25)
    assert identity_cross_entropy(logits, uniform).item() == pytest.approx(-(torch.log_softmax(logits, 1).mean(1)).mean().item(), rel=1e-6)
    with pytest.raises(ValueError, match="lie in"):
        identity_cross_entropy(logits, torch.tensor([0, 4, 1, 1, 2]))


def _brute_triplets(d, labels):
    n = len(labels)
    return [(a, p, q) for a in range(n) for p in range(n) for q in range(n)
            if a != p and labels[a] == labels[p] and labels[q] != labels[a]]


def test_miners_against_brute_force():
    from reid_htg.losses.miners import active_fraction_all, mine_from_distances

    g = torch.Generator().manual_seed(5)
    x = torch.randn(12, 4, generator=g)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3, 3, 3, 4])  # identity 4 has no positive
    d = torch.cdist(x, x)
    every = _brute_triplets(d, labels.tolist())
    a, p, n = mine_from_distances(d, labels, "batch_all")
    assert sorted(zip(a.tolist(), p.tolist(), n.tolist())) == sorted(every)
    a, p, n = mine_from_distances(d, labels, "batch_hard")
    for ai, pi, ni in zip(a.tolist(), p.tolist(), n.tolist()):
        cands = [t for t in every if t[0] == ai]
        assert d[ai, pi] == max(d[t[0], t[1]] for t in cands) and d[ai, ni] == min(d[t[0], t[2]] for t in cands)
    assert 11 not in a.tolist()
    a, p, n = mine_from_distances(d, labels, "semi_hard")
    expected = {}
    for ai, pi, ni in every:
        if d[ai, ni] > d[ai, pi] and ((ai, pi) not in expected or d[ai, ni] < d[ai, expected[(ai, pi)]]):
            expected[(ai, pi)] = ni
    assert {(ai, pi): ni for ai, pi, ni in zip(a.tolist(), p.tolist(), n.tolist())} == expected
    for margin in (0.0, 0.5):
        brute = sum(float(d[t[0], t[1]] - d[t[0], t[2]] + margin > 0) for t in every) / len(every)
        assert abs(active_fraction_all(d, labels, margin) - brute) < 1e-9
    with pytest.raises(ValueError, match="valid names"):
        mine_from_distances(d, labels, "hardest")
