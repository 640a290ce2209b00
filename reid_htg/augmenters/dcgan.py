"""DCGAN at person-crop aspect (Radford et al., ICLR 2016), the image source of LSRO (Zheng et al., ICCV 2017).

As the design reads it: all-convolutional (no pooling, no fully-connected
hidden layer); G upsamples with transposed convolutions, D downsamples with
strided convolutions; BatchNorm everywhere except G's output layer and D's
input layer; ReLU in G with a tanh output, LeakyReLU(0.2) in D; Adam lr 2e-4,
beta1 0.5; the non-saturating loss (G maximises log D(G(z))).

Images are (3, H, W) with H = 2W and H = 4 * 2**L: 64x32 (L = 4, trains on a
CPU) or 128x64 (L = 5). The first layer of G maps z to a 4x2 map with a
(4, 2) kernel, and the last layer of D reduces 4x2 to one logit the same way.
Images are in [-1, 1] (tanh); :func:`to_uint8` turns them into training images.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _levels(height: int, width: int) -> int:
    levels = math.log2(height / 4) if height > 4 else 0
    if height != 2 * width or levels != int(levels) or levels < 2:
        raise ValueError(f"DCGAN images must be H x W with H = 2W = 4 * 2**L and L >= 2 (e.g. 64x32, 128x64); got {height}x{width}")
    return int(levels)


def init_weights(m: nn.Module) -> None:
    """DCGAN initialisation: conv weights N(0, 0.02), BatchNorm weights N(1, 0.02) and biases 0."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.weight is not None:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class DCGANGenerator(nn.Module):
    """z (B, nz) -> images (B, 3, H, W) in [-1, 1]."""

    def __init__(self, height: int = 64, width: int = 32, nz: int = 100, ngf: int = 64):
        super().__init__()
        levels = _levels(height, width)
        self.nz, self.height, self.width = nz, height, width
        ch = ngf * 2 ** (levels - 1)
        layers: list[nn.Module] = [nn.ConvTranspose2d(nz, ch, (4, 2), 1, 0, bias=False), nn.BatchNorm2d(ch), nn.ReLU(True)]
        for _ in range(levels - 1):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch // 2), nn.ReLU(True)]
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, 3, 4, 2, 1), nn.Tanh()]  # output layer: no BatchNorm
        self.net = nn.Sequential(*layers)
        self.apply(init_weights)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(z.shape[0], self.nz, 1, 1))


class DCGANDiscriminator(nn.Module):
    """Images (B, 3, H, W) in [-1, 1] -> (B,) real/fake logits."""

    def __init__(self, height: int = 64, width: int = 32, ndf: int = 64):
        super().__init__()
        levels = _levels(height, width)
        layers: list[nn.Module] = [nn.Conv2d(3, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]  # input layer: no BatchNorm
        ch = ndf
        for _ in range(levels - 1):
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch * 2), nn.LeakyReLU(0.2, True)]
            ch *= 2
        layers += [nn.Conv2d(ch, 1, (4, 2), 1, 0)]
        self.net = nn.Sequential(*layers)
        self.apply(init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()


class DCGAN(nn.Module):
    """Generator, discriminator and their Adam optimisers; :meth:`step` is one D update then one G update.

    Args:
        height, width: image size (H = 2W, 64x32 or 128x64).
        nz: latent size.
        ngf, ndf: base widths of G and D.
        lr, beta1: Adam settings of both (DCGAN: 2e-4, 0.5).
    """

    def __init__(self, height: int = 64, width: int = 32, nz: int = 100, ngf: int = 64, ndf: int = 64, lr: float = 2e-4, beta1: float = 0.5):
        super().__init__()
        self.G = DCGANGenerator(height, width, nz, ngf)
        self.D = DCGANDiscriminator(height, width, ndf)
        self.nz = nz
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=lr, betas=(beta1, 0.999))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=lr, betas=(beta1, 0.999))

    LOG_KEYS = ("d_loss", "g_loss", "d_real", "d_fake")

    def noise(self, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        device = device or next(self.parameters()).device
        return torch.randn(n, self.nz, generator=generator, device=device)

    def step(self, real: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, float]:
        """One D step and one G step on a batch of real images in [-1, 1]; returns the losses and D's mean outputs."""
        b = real.shape[0]
        fake = self.G(self.noise(b, generator, real.device))
        ones, zeros = torch.ones(b, device=real.device), torch.zeros(b, device=real.device)
        # D: real -> 1, generated -> 0
        d_real, d_fake = self.D(real), self.D(fake.detach())
        d_loss = F.binary_cross_entropy_with_logits(d_real, ones) + F.binary_cross_entropy_with_logits(d_fake, zeros)
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt_d.step()
        # G: non-saturating, generated -> 1 under the updated D
        g_loss = F.binary_cross_entropy_with_logits(self.D(fake), ones)
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward(inputs=list(self.G.parameters()))
        self.opt_g.step()
        return {
            "d_loss": float(d_loss.detach()), "g_loss": float(g_loss.detach()),
            "d_real": float(torch.sigmoid(d_real.detach()).mean()), "d_fake": float(torch.sigmoid(d_fake.detach()).mean()),
        }

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, 3, H, W) images in [-1, 1] from G in eval mode (BatchNorm running statistics)."""
        was = self.G.training
        self.G.eval()
        out = self.G(self.noise(n, generator))
        self.G.train(was)
        return out


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] -> uint8 in [0, 255] (the training pipeline's input format)."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def from_uint8(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float in [-1, 1]."""
    return x.float() / 127.5 - 1.0
