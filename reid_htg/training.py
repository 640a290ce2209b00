"""The training step of the embedding network F: forward, the loss terms as data, HTG's three steps, backward, schedule.

``tools/train_reid.py``, ``benchmarks/train_throughput.py`` and the tests call
one :class:`TrainStep`, so a loss weight or a label smoothing means the same
thing in all of them.

The objective is a list of :class:`LossTerm` (a name, a weight and a function
of the batch's :class:`StepBatch`): adding a loss is one more entry (see
:func:`softmax_term`, :func:`triplet_term`), never an edit of the loop. With
HTG on, the step first runs D's and G's own updates on the detached
embeddings, then adds F's loss on G's hard triplets (``htg_hard``, weight
``f_hard``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from reid_htg.losses import batch_hard_triplet_loss, identity_cross_entropy


@dataclass
class StepBatch:
    """What a loss term sees of one batch.

    Attributes:
        out: the network's forward output (``embedding``, ``bn_feature``, ``logits``) over every row.
        emb: (B, D) float32 embeddings of the B real rows (augmenter rows come after them in ``out``).
        labels: (B,) identities of the real rows.
        targets: identity targets of every row: (N,) labels or (N, K) distributions (LSRO, CamStyle).
    """

    out: dict
    emb: torch.Tensor
    labels: torch.Tensor
    targets: torch.Tensor


LossFn = Callable[[StepBatch], "tuple[torch.Tensor, dict[str, float]]"]


@dataclass(frozen=True)
class LossTerm:
    """One term of F's objective: ``weight * fn(batch)[0]``; ``fn``'s statistics join the step's (a weight of 0 skips it)."""

    name: str
    weight: float
    fn: LossFn


def softmax_term(weight: float, label_smoothing: float) -> LossTerm:
    """The biasless softmax head's identity cross-entropy over every row (augmenter rows with their own targets)."""
    return LossTerm("softmax", weight, lambda b: (identity_cross_entropy(b.out["logits"], b.targets, label_smoothing), {}))


def triplet_term(weight: float, margin: float | None, normalize: bool) -> LossTerm:
    """Batch-hard triplet loss on the real rows, with its active fraction, gap and batch-all active fraction."""

    def fn(b: StepBatch):
        loss, s = batch_hard_triplet_loss(b.emb, b.labels, margin, normalize)
        return loss, {"tri_active": s["active"], "tri_gap": s["gap"], "tri_active_all": s["active_all"]}

    return LossTerm("triplet", weight, fn)


class TrainStep:
    """One optimisation step of F (and, with HTG on, of D and G before it).

    Args:
        model: the network F (its ``classifier`` and ``neck`` are what G's label term uses).
        optimizer, scheduler: F's; the scheduler steps once per call.
        terms: F's objective, in the order they are summed.
        htg: a :class:`reid_htg.htg.HTG`, or None.
        f_hard: weight of F's loss on G's hard triplets.
        grad_clip: clip F's gradient norm to this (0: off).
        amp: bf16 autocast for the forward pass (CUDA).
        forward: what runs the forward pass (default ``model``; a DDP or compiled wrapper of it).
    """

    def __init__(self, model, optimizer, scheduler, terms: list[LossTerm], htg=None, f_hard: float = 0.0, grad_clip: float = 0.0,
                 amp: bool = False, forward=None, g_phase: int = 0, f_phase: int = 0):
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.terms, self.htg, self.f_hard, self.grad_clip, self.amp = list(terms), htg, f_hard, grad_clip, amp
        self.forward = forward or model
        if (g_phase > 0) != (f_phase > 0):
            raise ValueError(f"the alternating schedule needs both phases > 0 (g_phase={g_phase}, f_phase={f_phase}); 0 and 0: every step")
        self.g_phase, self.f_phase = g_phase, f_phase

    def phase(self) -> str:
        """``both`` (D, G and F every step), or in the alternating schedule ``g`` (D and G against a fixed F) or ``f``
        (F on the triplets of a fixed G), by the count of HTG iterations so far."""
        if not self.g_phase:
            return "both"
        return "g" if int(self.htg.iterations) % (self.g_phase + self.f_phase) < self.g_phase else "f"

    def __call__(self, x: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor, htg_on: bool = False) -> dict[str, float]:
        """Train on one batch: ``x`` (N, 3, H, W) with the B = len(labels) real rows first; returns the step's statistics.

        Statistics: each term's value by its name, ``loss`` (the weighted sum),
        ``train_acc`` (identity accuracy of the real rows), the terms' own
        statistics and, with HTG on, D's, G's and the hard term's diagnostics.
        """
        phase = self.phase() if htg_on else "off"
        if htg_on:
            self.htg.iterations += 1  # a buffer of HTG's: saved with it, so a resumed run continues the cycle
        if phase == "g":  # the paper's schedule: G and D train against a fixed F; F takes no step (its schedule goes on)
            return self._g_phase(x, labels)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.amp):
            out = self.forward(x)
        emb = out["embedding"][: len(labels)].float()
        batch = StepBatch(out, emb, labels, targets)
        values, stats = {}, {}
        for term in self.terms:
            values[term.name], term_stats = term.fn(batch)
            stats.update(term_stats)
        weights = {t.name: t.weight for t in self.terms}
        if htg_on:  # HTG: D step, G step (not in the F phase: G fixed), then G's hard triplets join F's objective
            if phase == "both":
                stats.update(self.htg.d_step(emb.detach(), labels))
                stats.update(self.htg.g_step(emb.detach(), labels, self.model.classifier, self.model.neck))
            values["htg_hard"], hard_stats = self.htg.hard_triplet_loss(emb, labels)
            weights["htg_hard"] = self.f_hard
            stats.update(hard_stats)
        loss = sum(weights[k] * v for k, v in values.items() if weights[k])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        stats.update({k: float(v.detach()) for k, v in values.items()}, loss=float(loss.detach()))
        stats["train_acc"] = float((out["logits"][: len(labels)].argmax(1) == labels).float().mean())
        return stats


    def _g_phase(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """One step of the G phase: F's features without gradients (eval-free: BatchNorm as in training), D's and G's steps."""
        with torch.no_grad(), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.amp):
            out = self.forward(x)
        emb = out["embedding"][: len(labels)].float()
        stats = dict(self.htg.d_step(emb, labels))
        stats.update(self.htg.g_step(emb, labels, self.model.classifier, self.model.neck))
        self.scheduler.step()
        stats["train_acc"] = float((out["logits"][: len(labels)].argmax(1) == labels).float().mean())
        return stats


class EpochMeans:
    """Running means of a step's statistics over an epoch."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.count = 0

    def add(self, stats: dict[str, float]) -> None:
        for k, v in stats.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
            self.counts[k] = self.counts.get(k, 0) + 1
        self.count += 1

    def means(self) -> dict[str, float]:
        """Each statistic's mean over the steps that reported it (a G-phase step reports no F loss)."""
        return {k: v / self.counts[k] for k, v in self.sums.items()}
