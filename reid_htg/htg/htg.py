"""Hard triplet generator G, (K+1)-way discriminator D, and their three training steps.

Our reading of "An Adversarial Approach to Hard Triplet Generation" (Zhao,
Jin, Qi, Lu, Hua, ECCV 2018); every choice the paper leaves open is named here.

- G maps an embedding f to f + g(f), g being 4 fully-connected layers (two
  narrowing to ``bottleneck``, two widening back), each followed by BatchNorm
  and ReLU as the design describes (``out_relu=False`` drops the last ReLU so
  that G can also move features in negative directions).
- D has 4 fully-connected layers, the first three with BatchNorm and ReLU, and
  K+1 logits: the K training identities and "generated".
- Triplets are mined on the real embeddings (batch-hard: each anchor with its
  farthest positive and nearest negative) and G is applied to all three.
- **D step**: (K+1)-way cross-entropy, real features to their identity,
  generated features to the fake class, plus classification of generated
  features among the K identities (D must know whose feature G moved).
- **G step**: the triplet objective reversed on generated triplets, a hinge
  ``relu(d(Ga, Gn) - d(Ga, Gp) + margin)`` (anchor-positive apart,
  anchor-negative together, bounded so that G stops once a triplet is hard);
  plus label preservation, cross-entropy of D's (K+1)-way logits and of the
  embedding network's identity classifier against the true identity (neither
  may see the generated feature as someone else, or as fake); plus an optional
  ``g_close * |G(f) - f|^2``. Only G's weights move.
- **F's hard-triplet term**: the ordinary triplet loss on G's triplets,
  back-propagated through a frozen copy of G's weights into the embedding
  network, added to the biasless softmax + triplet loss on real features.
- Schedule: the basic model alone for ``warmup_epochs``, then each iteration
  one D step, one G step, one embedding step (``d_steps``/``g_steps`` repeat them).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from reid_htg.losses.triplet import triplet_loss, triplet_margin


def _fc_bn_relu(i: int, o: int, relu: bool = True) -> list[nn.Module]:
    return [nn.Linear(i, o), nn.BatchNorm1d(o)] + ([nn.ReLU(inplace=True)] if relu else [])


class Generator(nn.Module):
    """G(f) = f + g(f), g: L -> L/2 -> bottleneck -> L/2 -> L, BatchNorm + ReLU after each layer."""

    def __init__(self, dim: int, bottleneck: int = 256, out_relu: bool = True):
        super().__init__()
        mid = max(dim // 2, bottleneck)
        self.net = nn.Sequential(
            *_fc_bn_relu(dim, mid), *_fc_bn_relu(mid, bottleneck), *_fc_bn_relu(bottleneck, mid), *_fc_bn_relu(mid, dim, relu=out_relu)
        )

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return f + self.net(f)


class Discriminator(nn.Module):
    """(K+1)-way classifier over embeddings: 4 FC layers, BatchNorm + ReLU after the first three."""

    def __init__(self, dim: int, num_classes: int, hidden: int = 512):
        super().__init__()
        self.num_classes = num_classes
        self.net = nn.Sequential(*_fc_bn_relu(dim, hidden), *_fc_bn_relu(hidden, hidden), *_fc_bn_relu(hidden, hidden), nn.Linear(hidden, num_classes + 1))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.net(f)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _average_grads(params) -> None:
    """Under torch.distributed, average the gradients of ``params`` over the processes (one all-reduce)."""
    if not _distributed():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def _batch_hard_indices(emb: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Anchor, hardest-positive and hardest-negative indices for every anchor that has both."""
    with torch.no_grad():
        x = F.normalize(emb.float(), dim=1)
        d = torch.cdist(x, x)
        same = labels[:, None] == labels[None, :]
        eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        pos, neg = same & ~eye, ~same
        valid = pos.any(1) & neg.any(1)
        if not valid.any():
            raise ValueError("HTG needs batches with P >= 2 identities and K >= 2 images each")
        p = d.masked_fill(~pos, float("-inf")).argmax(1)
        n = d.masked_fill(~neg, float("inf")).argmin(1)
        a = torch.nonzero(valid).squeeze(1)
        return a, p[a], n[a]


class HTG(nn.Module):
    """G, D, their optimisers and the three HTG steps.

    Args:
        dim: embedding size L.
        num_classes: training identities K.
        bottleneck: G's narrowest layer.
        d_hidden: D's hidden width.
        lr: Adam learning rate of G and D (betas 0.5, 0.999).
        margin: triplet margin (None: soft margin).
        g_triplet: weight of G's reversed triplet loss.
        g_label: weight of G's label preservation.
        g_close: weight of ``|G(f) - f|^2``.
        d_steps, g_steps: updates of D and G per iteration.
        out_relu: keep the ReLU after G's last layer.
        normalize: triplet distances on L2-normalised features.
    """

    LOG_KEYS = ["d_loss", "d_acc_real", "d_acc_fake", "g_loss", "g_label_acc", "real_active", "real_gap", "gen_active", "gen_gap", "htg_hard"]

    def __init__(
        self,
        dim: int,
        num_classes: int,
        bottleneck: int = 256,
        d_hidden: int = 512,
        lr: float = 2e-4,
        margin: float | None = 0.3,
        g_triplet: float = 1.0,
        g_label: float = 1.0,
        g_close: float = 0.0,
        d_steps: int = 1,
        g_steps: int = 1,
        out_relu: bool = True,
        normalize: bool = True,
    ):
        super().__init__()
        self.G = Generator(dim, bottleneck, out_relu)
        self.D = Discriminator(dim, num_classes, d_hidden)
        self.num_classes = num_classes
        self.margin, self.normalize = margin, normalize
        self.g_triplet, self.g_label, self.g_close = g_triplet, g_label, g_close
        self.d_steps, self.g_steps = d_steps, g_steps
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=lr, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=lr, betas=(0.5, 0.999))

    def state_dict(self, *args, **kwargs):
        state = super().state_dict(*args, **kwargs)
        state["opt_g"], state["opt_d"] = self.opt_g.state_dict(), self.opt_d.state_dict()
        return state

    def load_state_dict(self, state, strict: bool = True):
        state = dict(state)
        self.opt_g.load_state_dict(state.pop("opt_g"))
        self.opt_d.load_state_dict(state.pop("opt_d"))
        return super().load_state_dict(state, strict)

    def broadcast_(self, src: int = 0) -> None:
        """Under torch.distributed, copy G's and D's weights and buffers from process ``src`` to all (call once, before training).

        With that, and gradients averaged in every step, G and D stay identical across processes.
        """
        if not _distributed():
            return
        for t in [*self.parameters(), *self.buffers()]:
            dist.broadcast(t.data, src)

    def d_step(self, emb: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """Update D: real -> identity, generated -> fake, generated classified among the K identities."""
        emb = emb.detach().float()
        for _ in range(self.d_steps):
            with torch.no_grad():
                fake = self.G(emb)
            real_logits, fake_logits = self.D(emb), self.D(fake)
            fake_class = torch.full_like(labels, self.num_classes)
            loss = (
                F.cross_entropy(real_logits, labels)
                + F.cross_entropy(fake_logits, fake_class)
                + F.cross_entropy(fake_logits[:, : self.num_classes], labels)
            )
            self.opt_d.zero_grad(set_to_none=True)
            loss.backward(inputs=list(self.D.parameters()))
            _average_grads(self.D.parameters())
            self.opt_d.step()
        return {
            "d_loss": float(loss.detach()),
            "d_acc_real": float((real_logits.argmax(1) == labels).float().mean()),
            "d_acc_fake": float((fake_logits.argmax(1) == self.num_classes).float().mean()),
        }

    def g_loss(self, emb, labels, classifier=None, neck=None):
        """G's objective on a batch (differentiable in G's weights) and its statistics."""
        a, p, n = _batch_hard_indices(emb, labels)
        gen = self.G(emb)
        ga, gp, gn = gen[a], gen[p], gen[n]
        if self.normalize:
            ga, gp, gn = (F.normalize(t, dim=1) for t in (ga, gp, gn))
        d_ap = (ga - gp).pow(2).sum(1).clamp(min=1e-12).sqrt()
        d_an = (ga - gn).pow(2).sum(1).clamp(min=1e-12).sqrt()
        reversed_tri = triplet_margin(d_an, d_ap, self.margin).mean()  # p and n swap roles
        d_logits = self.D(gen)
        label = F.cross_entropy(d_logits, labels)
        if classifier is not None:
            feat = gen
            if isinstance(neck, nn.BatchNorm1d):  # the neck's running statistics, never updated by G
                feat = F.batch_norm(gen, neck.running_mean, neck.running_var, neck.weight, neck.bias, training=False)
            label = label + F.cross_entropy(classifier(feat).float(), labels)
        loss = self.g_triplet * reversed_tri + self.g_label * label
        if self.g_close:
            loss = loss + self.g_close * (gen - emb).pow(2).sum(1).mean()
        stats = {"g_loss": float(loss.detach()), "g_label_acc": float((d_logits[:, : self.num_classes].argmax(1) == labels).float().mean())}
        return loss, stats

    def g_step(self, emb: torch.Tensor, labels: torch.Tensor, classifier=None, neck=None) -> dict[str, float]:
        """Update G only: make the generated triplets hard while keeping their identities."""
        emb = emb.detach().float()
        for _ in range(self.g_steps):
            loss, stats = self.g_loss(emb, labels, classifier, neck)
            self.opt_g.zero_grad(set_to_none=True)
            loss.backward(inputs=list(self.G.parameters()))
            _average_grads(self.G.parameters())
            self.opt_g.step()
        return stats

    def hard_triplet_loss(self, emb: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The embedding network's loss on G's hard triplets (gradients reach F, never G's weights).

        Also returns the diagnostics: active fraction and mean gap of the real
        and of the generated triplets.
        """
        frozen = {k: v.detach() for k, v in self.G.named_parameters()}
        gen = functional_call(self.G, frozen, (emb.float(),))
        a, p, n = _batch_hard_indices(emb, labels)
        loss, gen_stats = triplet_loss(gen[a], gen[p], gen[n], self.margin, self.normalize)
        with torch.no_grad():
            _, real_stats = triplet_loss(emb[a], emb[p], emb[n], self.margin, self.normalize)
        return loss, {
            "real_active": real_stats["active"], "real_gap": real_stats["gap"],
            "gen_active": gen_stats["active"], "gen_gap": gen_stats["gap"],
        }

