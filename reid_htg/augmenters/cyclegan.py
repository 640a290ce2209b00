"""CycleGAN between two cameras (Zhu et al., ICCV 2017), used as CamStyle (Zhong et al., CVPR 2018).

Two generators (A -> B, B -> A) and two discriminators, trained with the
least-squares adversarial loss, cycle consistency ``|G_BA(G_AB(a)) - a|_1``
(weight ``lambda_cycle``, 10 in the paper) and the identity loss
``|G_AB(b) - b|_1`` (weight ``lambda_identity``, 0.5 * lambda_cycle in the
paper, which CamStyle keeps to preserve colours). Choices we made:

- Generator: the paper's ResNet generator (7x7 stem, two stride-2
  downsamplings, ``n_res`` residual blocks, two upsamplings, 7x7 tanh output),
  InstanceNorm and reflection padding; ``ngf`` and ``n_res`` are smaller than
  the paper's 64 and 9 by default so that 64x32 crops train on a CPU.
- Discriminator: a PatchGAN (4x4 stride-2 convs, InstanceNorm except the
  first, LeakyReLU 0.2, a per-patch output); ``d_layers`` strided layers.
- D is trained on a history of 50 generated images (the paper's image pool)
  and its loss is halved, as in the paper.
- Adam lr 2e-4, beta1 0.5 for all four networks.

Images are (3, H, W) in [-1, 1]; H and W must be multiples of 4.
"""
from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from reid_htg.augmenters.dcgan import init_weights


class ResidualBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), nn.InstanceNorm2d(ch), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), nn.InstanceNorm2d(ch),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class ResnetGenerator(nn.Module):
    """Image-to-image generator: (B, 3, H, W) in [-1, 1] -> same shape in [-1, 1]."""

    def __init__(self, ngf: int = 32, n_res: int = 6):
        super().__init__()
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(3, ngf, 7), nn.InstanceNorm2d(ngf), nn.ReLU(True)]
        ch = ngf
        for _ in range(2):
            layers += [nn.Conv2d(ch, ch * 2, 3, 2, 1), nn.InstanceNorm2d(ch * 2), nn.ReLU(True)]
            ch *= 2
        layers += [ResidualBlock(ch) for _ in range(n_res)]
        for _ in range(2):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 3, 2, 1, output_padding=1), nn.InstanceNorm2d(ch // 2), nn.ReLU(True)]
            ch //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ch, 3, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] % 4 or x.shape[-1] % 4:
            raise ValueError(f"CycleGAN images need height and width divisible by 4; got {tuple(x.shape[-2:])}")
        return self.net(x)


class PatchDiscriminator(nn.Module):
    """PatchGAN: (B, 3, H, W) -> (B, 1, h, w) real/fake scores, one per overlapping patch."""

    def __init__(self, ndf: int = 64, d_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        ch = ndf
        for i in range(1, d_layers + 1):
            nxt = ndf * min(2 ** i, 8)
            stride = 2 if i < d_layers else 1
            layers += [nn.Conv2d(ch, nxt, 4, stride, 1), nn.InstanceNorm2d(nxt), nn.LeakyReLU(0.2, True)]
            ch = nxt
        layers += [nn.Conv2d(ch, 1, 4, 1, 1)]
        self.net = nn.Sequential(*layers)
        self.apply(init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ImagePool:
    """The paper's history of generated images: D sees a mix of new and earlier fakes."""

    def __init__(self, size: int = 50, generator: torch.Generator | None = None):
        self.size, self.images, self.generator = size, [], generator

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        out = []
        for img in images.detach():
            if len(self.images) < self.size:
                self.images.append(img)
                out.append(img)
            elif torch.rand((), generator=self.generator) < 0.5:
                i = int(torch.randint(len(self.images), (), generator=self.generator))
                out.append(self.images[i].clone())
                self.images[i] = img
            else:
                out.append(img)
        return torch.stack(out)


def _lsgan(pred: torch.Tensor, real: bool) -> torch.Tensor:
    return F.mse_loss(pred, torch.full_like(pred, 1.0 if real else 0.0))


class CycleGAN(nn.Module):
    """Two generators, two PatchGAN discriminators and their optimisers; :meth:`step` is one update of each.

    Args:
        ngf, n_res: generator width and residual blocks.
        ndf, d_layers: discriminator width and strided layers.
        lambda_cycle: weight of the cycle-consistency L1 loss (paper: 10).
        lambda_identity: weight of the identity L1 loss (paper: 0.5 * lambda_cycle).
        lr, beta1: Adam settings (paper: 2e-4, 0.5).
        pool_size: history of generated images shown to D (paper: 50).
    """

    LOG_KEYS = ("g_adv", "cycle", "identity", "g_loss", "d_a", "d_b")

    def __init__(self, ngf: int = 32, n_res: int = 6, ndf: int = 64, d_layers: int = 3, lambda_cycle: float = 10.0,
                 lambda_identity: float = 5.0, lr: float = 2e-4, beta1: float = 0.5, pool_size: int = 50, seed: int = 0):
        super().__init__()
        self.G_AB, self.G_BA = ResnetGenerator(ngf, n_res), ResnetGenerator(ngf, n_res)
        self.D_A, self.D_B = PatchDiscriminator(ndf, d_layers), PatchDiscriminator(ndf, d_layers)
        self.lambda_cycle, self.lambda_identity = lambda_cycle, lambda_identity
        betas = (beta1, 0.999)
        self.opt_g = torch.optim.Adam(itertools.chain(self.G_AB.parameters(), self.G_BA.parameters()), lr=lr, betas=betas)
        self.opt_d = torch.optim.Adam(itertools.chain(self.D_A.parameters(), self.D_B.parameters()), lr=lr, betas=betas)
        pool_rng = torch.Generator().manual_seed(seed)
        self.pool_a, self.pool_b = ImagePool(pool_size, pool_rng), ImagePool(pool_size, pool_rng)

    def generator_losses(self, a: torch.Tensor, b: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """The generators' loss terms on one pair of batches, and the translations (fake B, fake A)."""
        fake_b, fake_a = self.G_AB(a), self.G_BA(b)
        terms = {
            "g_adv": _lsgan(self.D_B(fake_b), True) + _lsgan(self.D_A(fake_a), True),
            "cycle": F.l1_loss(self.G_BA(fake_b), a) + F.l1_loss(self.G_AB(fake_a), b),
        }
        if self.lambda_identity > 0:
            terms["identity"] = F.l1_loss(self.G_AB(b), b) + F.l1_loss(self.G_BA(a), a)
        return terms, fake_b, fake_a

    def step(self, a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
        """One generator update then one discriminator update on batches from camera A and camera B."""
        terms, fake_b, fake_a = self.generator_losses(a, b)
        g_loss = terms["g_adv"] + self.lambda_cycle * terms["cycle"] + self.lambda_identity * terms.get("identity", torch.zeros(()))
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward(inputs=list(self.G_AB.parameters()) + list(self.G_BA.parameters()))
        self.opt_g.step()
        fb, fa = self.pool_b.query(fake_b), self.pool_a.query(fake_a)
        d_a = 0.5 * (_lsgan(self.D_A(a), True) + _lsgan(self.D_A(fa), False))
        d_b = 0.5 * (_lsgan(self.D_B(b), True) + _lsgan(self.D_B(fb), False))
        self.opt_d.zero_grad(set_to_none=True)
        (d_a + d_b).backward(inputs=list(self.D_A.parameters()) + list(self.D_B.parameters()))
        self.opt_d.step()
        out = {k: float(v.detach()) for k, v in terms.items()}
        out.update(g_loss=float(g_loss.detach()), d_a=float(d_a.detach()), d_b=float(d_b.detach()))
        return out

    @torch.no_grad()
    def translate(self, x: torch.Tensor, to: str) -> torch.Tensor:
        """Images of the other camera rendered in camera ``to``'s style ("A" or "B"), in [-1, 1]."""
        if to not in ("A", "B"):
            raise ValueError(f"translate(to=...) takes 'A' or 'B', got {to!r}")
        g = self.G_AB if to == "B" else self.G_BA
        was = g.training
        g.eval()
        out = g(x)
        g.train(was)
        return out
