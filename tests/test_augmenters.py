"""DCGAN, CycleGAN, LSRO/CamStyle targets and FGSM (reid_htg.augmenters)."""
import pytest
import torch
import torch.nn.functional as F

from reid_htg.augmenters import (
    DCGAN,
    CycleGAN,
    fgsm,
    from_uint8,
    metric_attack_loss,
    normalized_bounds,
    pixel_step,
    smoothed_targets,
    to_uint8,
    uniform_targets,
)
from reid_htg.augmenters.dcgan import DCGANDiscriminator, DCGANGenerator
from reid_htg.data.transforms import IMAGENET_STD
from reid_htg.losses import identity_cross_entropy


def tiny_images(n=16, h=32, w=16, seed=0):
    """Images in [-1, 1]: a bright vertical bar on a dark background at a random column, a few colours."""
    g = torch.Generator().manual_seed(seed)
    x = torch.full((n, 3, h, w), -0.8)
    for i in range(n):
        c = int(torch.randint(2, w - 4, (1,), generator=g))
        x[i, :, 4:h - 4, c:c + 3] = torch.rand(3, 1, 1, generator=g) * 1.6 - 0.6
    return x


@pytest.mark.parametrize("h,w,levels", [(64, 32, 4), (128, 64, 5), (32, 16, 3)])
def test_dcgan_shapes_and_layers(h, w, levels):
    g, d = DCGANGenerator(h, w, nz=16, ngf=8), DCGANDiscriminator(h, w, ndf=8)
    z = torch.randn(3, 16)
    x = g(z)
    assert x.shape == (3, 3, h, w) and x.min() >= -1 and x.max() <= 1
    assert d(x).shape == (3,)
    convs_t = [m for m in g.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs_t) == levels + 1 and len(convs) == levels + 1
    assert not any(isinstance(m, (torch.nn.Linear, torch.nn.MaxPool2d, torch.nn.AvgPool2d)) for m in [*g.modules(), *d.modules()])
    # BatchNorm everywhere except G's output layer and D's input layer
    g_layers, d_layers = list(g.net), list(d.net)
    assert isinstance(g_layers[-1], torch.nn.Tanh) and isinstance(g_layers[-2], torch.nn.ConvTranspose2d)
    assert isinstance(d_layers[1], torch.nn.LeakyReLU)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in g_layers) == levels
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in d_layers) == levels - 1


def test_dcgan_rejects_other_aspects():
    with pytest.raises(ValueError, match="H = 2W"):
        DCGANGenerator(64, 64)
    with pytest.raises(ValueError, match="H = 2W"):
        DCGANDiscriminator(48, 24)


def test_dcgan_steps_lower_each_players_loss():
    torch.manual_seed(0)
    gan = DCGAN(32, 16, nz=16, ngf=8, ndf=8)
    real = tiny_images()
    z = torch.randn(16, 16)
    ones, zeros = torch.ones(16), torch.zeros(16)

    def d_loss():
        with torch.no_grad():
            return float(F.binary_cross_entropy_with_logits(gan.D(real), ones) + F.binary_cross_entropy_with_logits(gan.D(gan.G(z)), zeros))

    def g_loss():
        with torch.no_grad():
            return float(F.binary_cross_entropy_with_logits(gan.D(gan.G(z)), ones))

    before = d_loss()
    for _ in range(10):  # D alone
        loss = F.binary_cross_entropy_with_logits(gan.D(real), ones) + F.binary_cross_entropy_with_logits(gan.D(gan.G(z).detach()), zeros)
        gan.opt_d.zero_grad()
        loss.backward()
        gan.opt_d.step()
    assert d_loss() < before
    before = g_loss()
    for _ in range(10):  # G alone against the fixed D
        loss = F.binary_cross_entropy_with_logits(gan.D(gan.G(z)), ones)
        gan.opt_g.zero_grad()
        loss.backward(inputs=list(gan.G.parameters()))
        gan.opt_g.step()
    assert g_loss() < before
    # the joint step runs, moves both networks and reports finite numbers
    g0, d0 = [p.clone() for p in gan.G.parameters()], [p.clone() for p in gan.D.parameters()]
    out = gan.step(real, torch.Generator().manual_seed(0))
    assert set(out) == set(DCGAN.LOG_KEYS) and all(torch.isfinite(torch.tensor(v)) for v in out.values())
    assert any(not torch.equal(a, b) for a, b in zip(g0, gan.G.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(d0, gan.D.parameters()))
    s = gan.sample(5)
    assert s.shape == (5, 3, 32, 16) and gan.G.training


def test_cyclegan_round_trip_shape_and_range():
    torch.manual_seed(0)
    gan = CycleGAN(ngf=8, n_res=1, ndf=8, d_layers=2)
    a = tiny_images(4)
    ab = gan.translate(a, "B")
    aba = gan.translate(ab, "A")
    assert ab.shape == a.shape == aba.shape
    assert ab.min() >= -1 and ab.max() <= 1 and aba.min() >= -1 and aba.max() <= 1
    u8 = to_uint8(aba)
    assert u8.dtype == torch.uint8 and torch.allclose(from_uint8(u8), aba, atol=1 / 127.5)
    with pytest.raises(ValueError, match="divisible by 4"):
        gan.G_AB(torch.zeros(1, 3, 30, 16))
    with pytest.raises(ValueError, match="'A' or 'B'"):
        gan.translate(a, "C")


def test_cyclegan_steps_lower_its_losses():
    torch.manual_seed(0)
    gan = CycleGAN(ngf=8, n_res=1, ndf=8, d_layers=2, pool_size=0)
    a, b = tiny_images(8, seed=1), -tiny_images(8, seed=2)  # camera B: inverted colours

    def losses():
        with torch.no_grad():
            terms, fake_b, fake_a = gan.generator_losses(a, b)
            d = 0.5 * (F.mse_loss(gan.D_A(a), torch.ones_like(gan.D_A(a))) + F.mse_loss(gan.D_A(fake_a), torch.zeros_like(gan.D_A(fake_a))))
            return float(terms["cycle"]), float(terms["identity"]), float(d)

    cycle0, ident0, d0 = losses()
    for _ in range(15):
        out = gan.step(a, b)
    cycle1, ident1, d1 = losses()
    assert set(out) == set(CycleGAN.LOG_KEYS)
    assert cycle1 < 0.8 * cycle0 and ident1 < 0.8 * ident0
    assert d1 < d0


def test_lsro_targets_are_uniform():
    t = uniform_targets(5, 7)
    assert t.shape == (5, 7) and torch.allclose(t, torch.full((5, 7), 1 / 7)) and torch.allclose(t.sum(1), torch.ones(5))
    logits = torch.randn(5, 7)
    assert torch.isclose(identity_cross_entropy(logits, t), -F.log_softmax(logits, 1).mean())


def test_smoothed_targets_match_cross_entropy_label_smoothing():
    logits, y = torch.randn(6, 9), torch.tensor([0, 3, 8, 3, 1, 2])
    t = smoothed_targets(y, 9, 0.1)
    assert torch.allclose(t.sum(1), torch.ones(6))
    assert torch.isclose(identity_cross_entropy(logits, t), F.cross_entropy(logits, y, label_smoothing=0.1), atol=1e-6)


def test_fgsm_moves_by_exactly_eps_in_sign_and_raises_the_loss():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 8 * 4, 5))
    x, y = torch.randn(6, 3, 8, 4), torch.tensor([0, 1, 2, 3, 4, 0])

    def loss_fn(v):
        return F.cross_entropy(net(v), y)

    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss_fn(xg), xg)
    eps = 0.01
    xa = fgsm(x, loss_fn, eps)
    moved = grad != 0
    assert moved.float().mean() > 0.5
    assert torch.allclose((xa - x)[moved], eps * grad.sign()[moved], atol=1e-7, rtol=0)
    assert torch.equal(xa[~moved], x[~moved])
    assert loss_fn(xa) > loss_fn(x)
    with pytest.raises(ValueError, match="eps"):
        fgsm(x, loss_fn, -1.0)


def test_fgsm_pixel_step_and_bounds_in_normalised_space():
    # eps in [0, 1] pixel units becomes eps / std on ImageNet-normalised inputs, and results stay valid pixels
    lo, hi = normalized_bounds()
    x = torch.rand(2, 3, 4, 4) * (hi - lo) + lo
    xa = fgsm(x, lambda v: v.sum(), pixel_step(0.02), (lo, hi))  # gradient +1 everywhere
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    pix_before, pix_after = x * std, xa * std
    inside = xa < hi
    assert torch.allclose((pix_after - pix_before)[inside], torch.full_like(pix_after, 0.02)[inside], atol=1e-6)
    assert torch.all(xa <= hi + 1e-6)


def test_metric_attack_loss_is_mean_distance_to_true_matches():
    q, g = torch.randn(3, 4), torch.randn(5, 4)
    pos = torch.tensor([[1, 0, 1, 0, 0], [0, 0, 0, 0, 0], [0, 1, 0, 0, 0]], dtype=torch.bool)
    d = 1 - F.normalize(q, dim=1) @ F.normalize(g, dim=1).T
    expected = (d[0, 0] + d[0, 2]) / 2 + d[2, 1]
    assert torch.isclose(metric_attack_loss(q, g, pos), expected)
