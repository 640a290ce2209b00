"""HTG: adversarial hard triplet generation in embedding space (generator G, (K+1)-way discriminator D, their steps).

Our reading of "An Adversarial Approach to Hard Triplet Generation" (Zhao,
Jin, Qi, Lu, Hua, ECCV 2018); every choice the paper leaves open is named here
and is an argument of :class:`HTG`.

- **G** maps an embedding f to G(f) = f + ||f|| g(f / ||f||) (``scale_free``;
  otherwise f + g(f)), g being 4 fully-connected layers (two narrowing to
  ``bottleneck``, two widening back), each followed by BatchNorm, and ReLU on
  all but the last (``out_relu=True`` keeps the last one, as the design reads
  literally; without it G can move features in every direction). The last
  layer's BatchNorm starts with zero scale and shift, so G(f) = f at step 0:
  G does nothing until it learns to. Acting on the scale-free feature means
  G(a f) = a G(f): the embedding network cannot escape G by growing its norm.
- **D** has 4 fully-connected layers, the first three with BatchNorm and ReLU,
  and K+1 logits: the K training identities and "generated". D always sees the
  real and the generated features of a batch in *one* forward pass: with two
  passes its BatchNorm normalises each population by its own statistics and
  erases every batch-wide shift G makes (our first implementation did that,
  and D ended calling everything "generated"). It sees them divided by ||f||
  when ``scale_free``.
- Triplets come from one miner (``reid_htg.losses.miners``: ``batch_hard``,
  ``batch_all`` or ``semi_hard``) on the real embeddings; G is applied to all
  three members. Distances: ``euclidean`` or ``sqeuclidean`` (the paper's
  squared Euclidean), on L2-normalised features when ``normalize``, with
  HTG's own ``margin``.
- **D step**: (K+1)-way cross-entropy, real features to their identity plus
  ``d_fake`` (the paper's b) times generated features to "generated";
  ``d_gen_identity`` adds the classification of generated features among the K
  identities (D must know whose feature G moved).
- **G step**: the triplet objective turned against the triplet, ``g_target``:
  ``reversed``, the hinge relu(d_an - d_ap + margin) (anchor-positive apart,
  anchor-negative together, until the triplet is wrong by the margin), or
  ``hard``, relu(d_an - d_ap) (until it is just violated, gap 0); plus label
  preservation (weight ``g_label``), cross-entropy of D's (K+1)-way logits on
  the generated rows of the joint real + generated batch against the true
  identity (``g_classifier`` adds the embedding network's identity classifier,
  which the paper does not have); plus ``g_close |G(f) - f|^2 / |f|^2``. With
  ``g_balance="grad_norm"`` the label term's gradient is rescaled each step to
  ``g_label`` times the target's gradient norm (unbalanced it was 50-170x the
  target's), and with ``g_center`` G's move is centred over the batch (one
  shift of the whole batch met the target without making a triplet harder).
  Only G's weights move. The defaults pass the fixed-F gate
  (``benchmarks/htg_fixed_f.py``, :data:`GATE`).
- **F's hard-triplet term**: the ordinary triplet loss on G's triplets,
  back-propagated through a frozen copy of G's weights into the embedding
  network, added to the biasless softmax + triplet loss on real features.
- Optimisers of G and D: Adam (betas 0.5, 0.999) or SGD (momentum 0.9), as the
  paper.
- When it starts is the training tool's choice (``tools/train_reid.py``: after
  ``htg.warmup_epochs``, optionally only once the batch-all active fraction of
  real triplets is below ``htg.start_active``).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from reid_htg.distributed import average_grads, broadcast_
from reid_htg.losses.miners import DISTANCES, MINERS, mine_triplets, pair_masks, row_distance, triplet_distances
from reid_htg.losses.triplet import triplet_hinge, triplet_loss

G_TARGETS = ("reversed", "hard")
G_BALANCES = ("none", "grad_norm")
OPTIMIZERS = ("adam", "sgd")


def _fc_bn_relu(i: int, o: int, relu: bool = True) -> list[nn.Module]:
    return [nn.Linear(i, o), nn.BatchNorm1d(o)] + ([nn.ReLU(inplace=True)] if relu else [])


def _check(name: str, value: str, valid) -> None:
    if value not in valid:
        raise ValueError(f"unknown HTG {name} {value!r}; valid names: {list(valid)}")


class Generator(nn.Module):
    """G(f) = f + ||f|| g(f / ||f||) (or f + g(f)); g: L -> L/2 -> bottleneck -> L/2 -> L, identity at initialisation.

    Args:
        dim: embedding size L.
        bottleneck: g's narrowest layer.
        out_relu: a ReLU after g's last layer (then g(f) >= 0: G can only add).
        scale_free: g acts on f / ||f|| and its output is scaled by ||f||.
        center: subtract the batch mean of g's output, so that G cannot solve its objective by one shift of the whole
            batch (the last BatchNorm's bias can add a common vector to every row).
    """

    def __init__(self, dim: int, bottleneck: int = 256, out_relu: bool = False, scale_free: bool = True, center: bool = False):
        super().__init__()
        mid = max(dim // 2, bottleneck)
        self.net = nn.Sequential(
            *_fc_bn_relu(dim, mid), *_fc_bn_relu(mid, bottleneck), *_fc_bn_relu(bottleneck, mid), *_fc_bn_relu(mid, dim, relu=out_relu)
        )
        last_bn = [m for m in self.net if isinstance(m, nn.BatchNorm1d)][-1]
        nn.init.zeros_(last_bn.weight)  # g = 0: G starts as the identity
        nn.init.zeros_(last_bn.bias)
        self.scale_free, self.center = scale_free, center

    def move(self, f: torch.Tensor) -> torch.Tensor:
        """g's output on a batch, centred over the batch when ``center`` (then no vector is added to every row)."""
        g = self.net(f / f.norm(dim=1, keepdim=True).clamp(min=1e-12) if self.scale_free else f)
        return g - g.mean(0, keepdim=True) if self.center else g

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        if not self.scale_free:
            return f + self.move(f)
        return f + f.norm(dim=1, keepdim=True).clamp(min=1e-12) * self.move(f)


class Discriminator(nn.Module):
    """(K+1)-way classifier over embeddings: 4 FC layers, BatchNorm + ReLU after the first three."""

    def __init__(self, dim: int, num_classes: int, hidden: int = 512):
        super().__init__()
        self.num_classes = num_classes
        self.net = nn.Sequential(*_fc_bn_relu(dim, hidden), *_fc_bn_relu(hidden, hidden), *_fc_bn_relu(hidden, hidden), nn.Linear(hidden, num_classes + 1))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.net(f)


def auc(pos: torch.Tensor, neg: torch.Tensor) -> float:
    """Area under the ROC curve of scores ``pos`` (positives) against ``neg``: P(pos > neg), ties counted half.

    Examples:
        >>> auc(torch.tensor([0.9, 0.8]), torch.tensor([0.1, 0.8]))
        0.875
    """
    diff = pos.detach().float()[:, None] - neg.detach().float()[None, :]
    return float((diff > 0).float().mean() + 0.5 * (diff == 0).float().mean())


def violated_share(x: torch.Tensor, labels: torch.Tensor, normalize: bool = True, distance: str = "euclidean") -> float:
    """Share of all valid triplets (a, p, n) of a batch that are violated, d(a, n) < d(a, p).

    Examples:
        >>> violated_share(torch.tensor([[0.0], [0.6], [1.0]]), torch.tensor([0, 0, 1]), normalize=False)  # anchor 1 only
        0.5
    """
    with torch.no_grad():
        x = F.normalize(x.float(), dim=1) if normalize else x.float()
        d = triplet_distances(x, x, distance)
        pos, neg = pair_masks(labels)
        valid = pos[:, :, None] & neg[:, None, :]
        viol = d[:, None, :] < d[:, :, None]  # [a, p, n]: d(a, n) < d(a, p)
        total = int(valid.sum())
        return float((viol & valid).sum()) / total if total else float("nan")


def triplet_diagnostics(real: torch.Tensor, gen: torch.Tensor, labels: torch.Tensor, normalize: bool = True,
                        distance: str = "euclidean") -> dict[str, float]:
    """Did G make triplets harder, and how? One batch of real features (B, L) and G's outputs for them (B, L).

    Returns:
        ``real_gap``, ``gen_gap``: mean d(a, n) - d(a, p) of the semi-hard triplets mined on the *real* features,
        on real and on generated rows; ``gap_change_rel``: (gen_gap - real_gap) / real_gap (-1: every gap closed);
        ``real_violated``, ``gen_violated``: the share of those triplets (G's triplets) with d(a, n) < d(a, p), on real
        rows (0 for semi-hard triplets but for ties) and on generated rows; ``real_violated_all``, ``gen_violated_all``:
        :func:`violated_share` over every valid triplet of the batch; ``common_share``:
        the norm of the batch mean of G(f) - f over the mean norm of G(f) - f (1: one shift for the whole batch);
        ``g_shift``: mean ||G(f) - f|| / ||f||.
    """
    with torch.no_grad():
        real, gen = real.float(), gen.float()
        a, p, n = mine_triplets(real, labels, "semi_hard", normalize)

        def gap(x):
            x = F.normalize(x, dim=1) if normalize else x
            return float((row_distance(x[a], x[n], distance) - row_distance(x[a], x[p], distance)).mean()) if len(a) else float("nan")

        def violated(x):
            x = F.normalize(x, dim=1) if normalize else x
            return float((row_distance(x[a], x[n], distance) < row_distance(x[a], x[p], distance)).float().mean()) if len(a) else float("nan")

        real_gap, gen_gap = gap(real), gap(gen)
        move = gen - real
        move_norm = move.norm(dim=1).mean()
        return {
            "real_gap": real_gap, "gen_gap": gen_gap,
            "gap_change_rel": (gen_gap - real_gap) / real_gap if real_gap > 0 else float("nan"),
            "real_violated": violated(real), "gen_violated": violated(gen),
            "real_violated_all": violated_share(real, labels, normalize, distance),
            "gen_violated_all": violated_share(gen, labels, normalize, distance),
            "common_share": float(move.mean(0).norm() / move_norm) if move_norm > 0 else 0.0,
            "g_shift": float((move.norm(dim=1) / real.norm(dim=1).clamp(min=1e-12)).mean()),
        }


class HTG(nn.Module):
    """G, D, their optimisers and the three HTG steps (see the module docstring for every choice).

    Args:
        dim: embedding size L.
        num_classes: training identities K.
        bottleneck: G's narrowest layer.
        d_hidden: D's hidden width.
        lr: learning rate of G and D.
        optimizer: ``adam`` (betas 0.5, 0.999) or ``sgd`` (momentum 0.9).
        margin: HTG's triplet margin (None: soft margin).
        distance: ``euclidean`` or ``sqeuclidean``.
        g_target: ``reversed`` (hinge with the margin) or ``hard`` (gap 0).
        mining: triplet miner for G's and F's hard triplets (``batch_hard``, ``batch_all``, ``semi_hard``).
        g_triplet: weight of G's triplet target.
        g_label: weight of G's label preservation.
        g_close: weight of ``|G(f) - f|^2 / |f|^2``.
        d_fake: weight b of D's "generated" term.
        d_gen_identity: D also classifies generated features among the K identities.
        d_steps, g_steps: updates of D and G per iteration.
        out_relu: keep a ReLU after G's last layer.
        scale_free: G acts on f / ||f|| (and D sees features divided by ||f||).
        normalize: triplet distances (and mining) on L2-normalised features.
        g_classifier: G's label term also asks the embedding network's identity classifier for the true identity
            (not in the paper, which constrains G through D alone).
        g_center: G's move is centred over each batch (:class:`Generator`'s ``center``).
        g_balance: ``none`` (the label term weighs ``g_label``) or ``grad_norm`` (its gradient on G's weights is
            scaled to ``g_label`` times the triplet target's gradient norm, step by step, so neither term drowns
            the other whatever their scales).
    """

    LOG_KEYS = [
        "d_loss", "d_acc_real", "d_acc_fake", "d_id_acc", "d_auc", "g_loss", "g_label_acc",
        "real_active", "real_gap", "gen_active", "gen_gap", "gap_change", "g_shift", "emb_norm", "htg_hard",
        "gap_change_rel", "real_violated", "gen_violated", "gen_violated_all", "common_share", "g_grad_triplet", "g_grad_label",
        "d_gen_id_acc", "d_gen_prob",
    ]

    def __init__(
        self,
        dim: int,
        num_classes: int,
        bottleneck: int = 256,
        d_hidden: int = 512,
        lr: float = 1e-3,
        optimizer: str = "adam",
        margin: float | None = 0.05,
        distance: str = "euclidean",
        g_target: str = "reversed",
        mining: str = "semi_hard",
        g_triplet: float = 1.0,
        g_label: float = 0.3,
        g_close: float = 0.3,
        d_fake: float = 1.0,
        d_gen_identity: bool = True,
        d_steps: int = 1,
        g_steps: int = 1,
        out_relu: bool = False,
        scale_free: bool = True,
        normalize: bool = True,
        g_classifier: bool = False,
        g_center: bool = True,
        g_balance: str = "grad_norm",
    ):
        super().__init__()
        _check("optimizer", optimizer, OPTIMIZERS)
        _check("g_balance", g_balance, G_BALANCES)
        _check("distance", distance, DISTANCES)
        _check("g_target", g_target, G_TARGETS)
        _check("mining", mining, MINERS)
        self.G = Generator(dim, bottleneck, out_relu, scale_free, center=g_center)
        self.register_buffer("iterations", torch.zeros((), dtype=torch.long))  # training iterations with HTG on (schedules count them)
        self.g_classifier, self.g_balance = g_classifier, g_balance
        self.D = Discriminator(dim, num_classes, d_hidden)
        self.num_classes = num_classes
        self.margin, self.distance, self.normalize = margin, distance, normalize
        self.g_target, self.mining, self.scale_free = g_target, mining, scale_free
        self.g_triplet, self.g_label, self.g_close = g_triplet, g_label, g_close
        self.d_fake, self.d_gen_identity = d_fake, d_gen_identity
        self.d_steps, self.g_steps = d_steps, g_steps
        if optimizer == "adam":
            self.opt_g = torch.optim.Adam(self.G.parameters(), lr=lr, betas=(0.5, 0.999))
            self.opt_d = torch.optim.Adam(self.D.parameters(), lr=lr, betas=(0.5, 0.999))
        else:
            self.opt_g = torch.optim.SGD(self.G.parameters(), lr=lr, momentum=0.9)
            self.opt_d = torch.optim.SGD(self.D.parameters(), lr=lr, momentum=0.9)

    def state_dict(self, *args, **kwargs):
        state = super().state_dict(*args, **kwargs)
        state["opt_g"], state["opt_d"] = self.opt_g.state_dict(), self.opt_d.state_dict()
        return state

    def load_state_dict(self, state, strict: bool = True):
        state = dict(state)
        state.setdefault("iterations", torch.zeros((), dtype=torch.long))  # checkpoints from before the counter
        self.opt_g.load_state_dict(state.pop("opt_g"))
        self.opt_d.load_state_dict(state.pop("opt_d"))
        return super().load_state_dict(state, strict)

    def broadcast_(self, src: int = 0) -> None:
        """Under torch.distributed, copy G's and D's weights and buffers from process ``src`` to all (call once, before training).

        With that, and gradients averaged in every step, G and D stay identical across processes.
        """
        broadcast_([*self.parameters(), *self.buffers()], src)

    def joint_logits(self, real: torch.Tensor, gen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """D's logits on real (B, L) and generated (B, L) features from *one* forward pass (shared BatchNorm statistics)."""
        if self.scale_free:
            norm = real.norm(dim=1, keepdim=True).clamp(min=1e-12).detach()
            real, gen = real / norm, gen / norm
        logits = self.D(torch.cat([real, gen]))
        return logits[: len(real)], logits[len(real):]

    def d_step(self, emb: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """Update D: real -> identity, generated -> "generated" (weight ``d_fake``), optionally generated -> identity among the K."""
        emb = emb.detach().float()
        fake_class = torch.full_like(labels, self.num_classes)
        for _ in range(self.d_steps):
            with torch.no_grad():
                gen = self.G(emb)
            real_logits, gen_logits = self.joint_logits(emb, gen)
            loss = F.cross_entropy(real_logits, labels) + self.d_fake * F.cross_entropy(gen_logits, fake_class)
            if self.d_gen_identity:
                loss = loss + F.cross_entropy(gen_logits[:, : self.num_classes], labels)
            self.opt_d.zero_grad(set_to_none=True)
            loss.backward(inputs=list(self.D.parameters()))
            average_grads(self.D.parameters())
            self.opt_d.step()
        with torch.no_grad():
            p_fake = torch.cat([real_logits, gen_logits]).softmax(1)[:, -1]
        return {
            "d_gen_id_acc": float((gen_logits[:, : self.num_classes].argmax(1) == labels).float().mean()),
            "d_gen_prob": float(p_fake[len(emb):].mean()),
            "d_loss": float(loss.detach()),
            "d_acc_real": float((real_logits.argmax(1) == labels).float().mean()),
            "d_acc_fake": float((gen_logits.argmax(1) == self.num_classes).float().mean()),
            "d_id_acc": float((real_logits[:, : self.num_classes].argmax(1) == labels).float().mean()),
            "d_auc": auc(p_fake[len(emb):], p_fake[: len(emb)]),
        }

    def _distances(self, a, p, n) -> tuple[torch.Tensor, torch.Tensor]:
        if self.normalize:
            a, p, n = (F.normalize(t, dim=1) for t in (a, p, n))
        return row_distance(a, p, self.distance), row_distance(a, n, self.distance)

    def g_terms(self, emb, labels, classifier=None, neck=None) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """G's objective's terms on a batch (differentiable in G's weights): ``triplet`` (the target), ``label``
        (D's, and with ``g_classifier`` the classifier's, cross-entropy on G's outputs), ``close`` when ``g_close``."""
        a, p, n = mine_triplets(emb, labels, self.mining, self.normalize)
        gen = self.G(emb)
        d_ap, d_an = self._distances(gen[a], gen[p], gen[n])
        if self.g_target == "reversed":
            target = triplet_hinge(d_an, d_ap, self.margin).mean()  # p and n swap roles
        else:
            target = F.relu(d_an - d_ap).mean()  # just hard: gap 0
        _, gen_logits = self.joint_logits(emb, gen)
        label = F.cross_entropy(gen_logits, labels)
        if self.g_classifier and classifier is not None:
            feat = gen
            if isinstance(neck, nn.BatchNorm1d):  # the neck's running statistics, never updated by G
                feat = F.batch_norm(gen, neck.running_mean, neck.running_var, neck.weight, neck.bias, training=False)
            label = label + F.cross_entropy(classifier(feat).float(), labels)
        terms = {"triplet": target, "label": label}
        if self.g_close:
            shift = (gen - emb).pow(2).sum(1)
            if self.scale_free:
                shift = shift / emb.pow(2).sum(1).clamp(min=1e-12)
            terms["close"] = shift.mean()
        stats = {"g_label_acc": float((gen_logits[:, : self.num_classes].argmax(1) == labels).float().mean())}
        return terms, stats

    def g_loss(self, emb, labels, classifier=None, neck=None):
        """G's objective at its fixed weights (``g_triplet``, ``g_label``, ``g_close``) and its statistics."""
        terms, stats = self.g_terms(emb, labels, classifier, neck)
        loss = self.g_triplet * terms["triplet"] + self.g_label * terms["label"] + self.g_close * terms.get("close", 0.0)
        return loss, dict(stats, g_loss=float(loss.detach()))

    def g_step(self, emb: torch.Tensor, labels: torch.Tensor, classifier=None, neck=None) -> dict[str, float]:
        """Update G only: make the generated triplets hard while keeping their identities.

        Each term's gradient on G's weights is taken apart (its norm is logged: ``g_grad_triplet``,
        ``g_grad_label``); with ``g_balance="grad_norm"`` the label gradient is rescaled to ``g_label`` times the
        triplet gradient's norm before they are summed.
        """
        emb = emb.detach().float()
        if self.g_steps == 0:  # G frozen (a control: G stays the identity); report its objective only
            with torch.no_grad():
                return self.g_loss(emb, labels, classifier, neck)[1]
        params = [q for q in self.G.parameters() if q.requires_grad]
        for _ in range(self.g_steps):
            terms, stats = self.g_terms(emb, labels, classifier, neck)
            grads = {k: torch.autograd.grad(v, params, retain_graph=True, allow_unused=True) for k, v in terms.items()}
            grads = {k: [torch.zeros_like(q) if g is None else g for g, q in zip(gs, params)] for k, gs in grads.items()}
            norms = {k: float(torch.sqrt(sum((g * g).sum() for g in gs))) for k, gs in grads.items()}
            w = {"triplet": self.g_triplet, "label": self.g_label, "close": self.g_close}
            if self.g_balance == "grad_norm" and norms["label"] > 0:
                w["label"] = self.g_label * self.g_triplet * norms["triplet"] / norms["label"]
            for i, q in enumerate(params):
                q.grad = sum(w[k] * grads[k][i] for k in terms)
            average_grads(self.G.parameters())
            self.opt_g.step()
            loss = sum(w[k] * float(v.detach()) for k, v in terms.items())
        return dict(stats, g_loss=loss, g_grad_triplet=norms["triplet"], g_grad_label=norms["label"])

    def hard_triplet_loss(self, emb: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The embedding network's loss on G's hard triplets (gradients reach F, never G's weights).

        Also returns the diagnostics: active fraction and mean gap of the real
        and of the generated triplets (the same triplets), the mean change of
        the gap that G makes (generated minus real), ||G(f) - f|| / ||f|| and
        the mean embedding norm.
        """
        emb = emb.float()
        frozen = {k: v.detach() for k, v in self.G.named_parameters()}
        gen = functional_call(self.G, frozen, (emb,))
        a, p, n = mine_triplets(emb, labels, self.mining, self.normalize)
        loss, gen_stats = triplet_loss(gen[a], gen[p], gen[n], self.margin, self.normalize, self.distance)
        with torch.no_grad():
            _, real_stats = triplet_loss(emb[a], emb[p], emb[n], self.margin, self.normalize, self.distance)
            norm = emb.norm(dim=1)
            shift = ((gen - emb).norm(dim=1) / norm.clamp(min=1e-12)).mean()
            diag = triplet_diagnostics(emb, gen, labels, self.normalize, self.distance)
        return loss, {
            **{k: diag[k] for k in ("gap_change_rel", "real_violated", "gen_violated", "gen_violated_all", "common_share")},
            "real_active": real_stats["active"], "real_gap": real_stats["gap"],
            "gen_active": gen_stats["active"], "gen_gap": gen_stats["gap"],
            "gap_change": gen_stats["gap"] - real_stats["gap"], "g_shift": float(shift), "emb_norm": float(norm.mean()),
        }


def class_means(feats: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K, L) L2-normalised means of the L2-normalised features of each identity: the nearest-class-mean judge."""
    x = F.normalize(feats.float(), dim=1)
    return F.normalize(torch.zeros(num_classes, x.shape[1]).index_add_(0, labels, x), dim=1)


@torch.no_grad()
def fixed_f_figures(htg: HTG, feats: torch.Tensor, labels: torch.Tensor, batches, means: torch.Tensor) -> dict[str, float]:
    """How hard G makes triplets and whether they keep their identities, over ``batches`` of fixed features.

    Args:
        htg: G and D (put in eval mode here, back in train mode after).
        feats: (N, L) real features; labels: (N,) identities 0..K-1.
        batches: index tensors into ``feats`` (P x K batches).
        means: :func:`class_means` of the real features (an identity judge D's training cannot bend).

    Returns:
        the means over batches of :func:`triplet_diagnostics` and ``d_real_id_acc``, ``d_gen_id_acc`` (D's identity
        accuracy among the K on real features and on G's outputs), ``d_gen_prob`` (D's "generated" probability on
        G's outputs), ``ncm_real_id_acc``, ``ncm_gen_id_acc`` (nearest class mean, cosine); ``gap_change_rel`` is that
        of the mean gaps.
    """
    htg.eval()
    rows = []
    try:
        for idx in batches:
            f, y = feats[idx].float(), labels[idx]
            gen = htg.G(f)
            r = triplet_diagnostics(f, gen, y, htg.normalize, htg.distance)
            real_logits, gen_logits = htg.joint_logits(f, gen)
            k = htg.num_classes
            r["d_real_id_acc"] = float((real_logits[:, :k].argmax(1) == y).float().mean())
            r["d_gen_id_acc"] = float((gen_logits[:, :k].argmax(1) == y).float().mean())
            r["d_gen_prob"] = float(gen_logits.softmax(1)[:, -1].mean())
            r["ncm_real_id_acc"] = float(((F.normalize(f, dim=1) @ means.T).argmax(1) == y).float().mean())
            r["ncm_gen_id_acc"] = float(((F.normalize(gen, dim=1) @ means.T).argmax(1) == y).float().mean())
            rows.append(r)
    finally:
        htg.train()
    out = {key: float(np.nanmean([r[key] for r in rows])) for key in rows[0]}
    out["gap_change_rel"] = (out["gen_gap"] - out["real_gap"]) / out["real_gap"] if out["real_gap"] > 0 else float("nan")
    return out


GATE = {  # name: (test on fixed_f_figures' output, what it says)
    "gap": (lambda r: r["gap_change_rel"] <= -0.30, "G closes >= 30% of the real semi-hard gap"),
    "violated": (lambda r: r["gen_violated"] - r["real_violated"] >= 0.10, ">= 10 points more of G's triplets violated than of the real ones"),
    "common_share": (lambda r: r["common_share"] <= 0.30, "at most 30% of G's move common to the batch"),
    "ncm": (lambda r: r["ncm_gen_id_acc"] >= 0.7 * r["ncm_real_id_acc"], "G's outputs stay in their identities (NCM accuracy >= 0.7x real)"),
}


def gate(figures: dict[str, float]) -> dict[str, bool]:
    """The fixed-F gate (:data:`GATE`) on :func:`fixed_f_figures`' output: each criterion's verdict."""
    return {name: bool(test(figures)) for name, (test, _) in GATE.items()}
