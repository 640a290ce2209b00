import torch
import torch.nn.functional as F

from reid_htg.htg import HTG, Discriminator, Generator
from reid_htg.htg.htg import _batch_hard_indices
from reid_htg.losses import triplet_loss
from reid_htg.models import ReIDNet


def _features(seed=0, ids=8, per=4, dim=32, spread=0.35):
    g = torch.Generator().manual_seed(seed)
    centers = F.normalize(torch.randn(ids, dim, generator=g), dim=1)
    labels = torch.arange(ids).repeat_interleave(per)
    return centers[labels] + spread * torch.randn(ids * per, dim, generator=g) / dim**0.5, labels


def _gen_triplet_stats(htg, emb, labels):
    with torch.no_grad():
        gen = htg.G(emb)
        a, p, n = _batch_hard_indices(emb, labels)
        loss, stats = triplet_loss(gen[a], gen[p], gen[n], htg.margin)
    return float(loss), stats["active"]


def test_shapes():
    g, d = Generator(64, bottleneck=16), Discriminator(64, num_classes=10, hidden=32)
    x = torch.randn(5, 64)
    assert g(x).shape == (5, 64) and d(x).shape == (5, 11)
    linears = [m for m in g.net if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [32, 16, 32, 64]  # narrow, then restore
    assert len([m for m in d.net if isinstance(m, torch.nn.Linear)]) == 4


def test_g_steps_make_triplets_harder_but_keep_identity():
    torch.manual_seed(0)
    emb, labels = _features()
    htg = HTG(32, 8, bottleneck=16, d_hidden=64, lr=2e-3, g_label=1.0)
    htg.train()
    for _ in range(30):  # D first learns who is who, and what G's outputs look like
        htg.d_step(emb, labels)
    loss0, active0 = _gen_triplet_stats(htg, emb, labels)
    for _ in range(40):
        htg.g_step(emb, labels)
        htg.d_step(emb, labels)
    loss1, active1 = _gen_triplet_stats(htg, emb, labels)
    assert loss1 > loss0 + 0.05 and active1 > active0
    with torch.no_grad():
        logits = htg.D(htg.G(emb))[:, :8]
    assert (logits.argmax(1) == labels).float().mean() > 0.6  # identities preserved


def test_d_separates_real_from_generated():
    torch.manual_seed(1)
    emb, labels = _features(seed=1)
    htg = HTG(32, 8, bottleneck=16, d_hidden=64, lr=2e-3)
    for _ in range(10):
        htg.g_step(emb, labels)  # G moves features away from the real ones
    stats = {}
    for _ in range(60):
        stats = htg.d_step(emb, labels)
    assert stats["d_acc_real"] > 0.9 and stats["d_acc_fake"] > 0.9


def test_each_step_moves_only_its_own_weights():
    torch.manual_seed(2)
    model = ReIDNet("resnet18", num_classes=4, keypoint_blocks=()).train()
    htg = HTG(model.dim, 4, bottleneck=16, d_hidden=32)
    x, y = torch.randn(8, 3, 32, 16), torch.arange(4).repeat_interleave(2)
    emb = model(x)["embedding"]
    f_before = {k: v.clone() for k, v in model.state_dict().items()}
    g_before = {k: v.clone() for k, v in htg.G.named_parameters()}
    htg.g_step(emb.detach(), y, model.classifier, model.neck)
    assert all(torch.equal(f_before[k], v) for k, v in model.state_dict().items())  # G step: F untouched (BN stats too)
    assert any(not torch.equal(g_before[k], v) for k, v in htg.G.named_parameters())
    g_after = {k: v.clone() for k, v in htg.G.named_parameters()}
    htg.opt_g.zero_grad(set_to_none=True)  # clear the G step's own gradients
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    out = model(x)
    loss, _ = htg.hard_triplet_loss(out["embedding"], y)
    opt.zero_grad()
    loss.backward()
    assert all(p.grad is None for p in htg.G.parameters())  # no gradient reaches G
    opt.step()
    assert all(torch.equal(g_after[k], v) for k, v in htg.G.named_parameters())  # embedding step: G untouched
    assert any(not torch.equal(f_before[k], v) for k, v in model.state_dict().items() if v.is_floating_point())


def test_state_round_trip():
    a, b = HTG(16, 3, bottleneck=8, d_hidden=8), HTG(16, 3, bottleneck=8, d_hidden=8)
    emb, y = torch.randn(6, 16), torch.tensor([0, 0, 1, 1, 2, 2])
    a.d_step(emb, y)
    a.g_step(emb, y)
    b.load_state_dict(a.state_dict())
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert b.opt_g.state_dict()["state"]
