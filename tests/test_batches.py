"""Batch assembly (reid_htg.augmenters.batches): rows, targets, and what the FGSM attack must not touch."""
import torch

from reid_htg.augmenters.batches import BatchAssembler, CamStyleRows, FGSMRows, LSRORows
from reid_htg.models import ReIDNet


def _batch(b=8, k=4):
    x = torch.randint(0, 256, (b, 3, 32, 16), dtype=torch.uint8)
    y = torch.arange(b // 2).repeat_interleave(2) % k
    return x, y, torch.arange(b)


class _FakeLSRO:
    size = (32, 16)

    def sample(self, n, generator=None):
        return torch.randint(0, 256, (n, 3, 32, 16), dtype=torch.uint8, generator=generator)


def test_plain_batch_keeps_labels():
    x, y, idx = _batch()
    out, targets = BatchAssembler(4, torch.Generator().manual_seed(0))(None, x, y, idx)
    assert out.shape == (8, 3, 32, 16) and out.dtype == torch.float32
    assert torch.equal(targets, y)  # hard labels: the loss applies its own label smoothing


def test_fgsm_ratio_that_rounds_to_one_row_and_leaves_batchnorm_alone():
    torch.manual_seed(0)
    model = ReIDNet("resnet10t", num_classes=4, keypoint_blocks=()).train()
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    x, y, idx = _batch()
    asm = BatchAssembler(4, torch.Generator().manual_seed(0), sources=[FGSMRows(0.03, 0.01, 0.1, 4)])  # 0.01 x 8 rounds to 0: one row
    out, targets = asm(model, x, y, idx)
    assert out.shape[0] == 9 and targets.shape == (9, 4)
    torch.testing.assert_close(targets.sum(1), torch.ones(9))
    assert all(torch.equal(buffers[k], v) for k, v in model.named_buffers())  # the attack's forward left the BN statistics
    assert (out[8] - out[:8]).abs().amax(dim=(1, 2, 3)).min() > 0  # the copy differs from every real row: it was attacked


def test_lsro_and_camstyle_rows_with_their_targets():
    x, y, idx = _batch()
    styled = torch.randint(0, 256, (8, 3, 32, 16), dtype=torch.uint8)
    has = torch.tensor([True, False] * 4)
    asm = BatchAssembler(4, torch.Generator().manual_seed(1), label_smoothing=0.0,
                         sources=[LSRORows(_FakeLSRO(), 0.25, 4), CamStyleRows((styled, has), y, 0.5, 0.0, 4)])
    out, targets = asm(None, x, y, idx)
    assert out.shape[0] == 8 + 2 + 4 and targets.shape == (14, 4)
    assert torch.equal(targets[:8].argmax(1), y)  # the real rows first
    torch.testing.assert_close(targets[8:10], torch.full((2, 4), 0.25))  # LSRO: uniform
    styled_ids = targets[10:].argmax(1)
    assert set(styled_ids.tolist()) <= set(y[has].tolist())  # CamStyle rows keep the identity of an image that has a style


def test_a_new_augmenter_is_one_row_source():
    """The protocol is all an augmenter needs: rows joined before augmentation, or made from the augmented real rows."""

    class Mirror:  # before augmentation: the first image, mirrored, as identity 0
        after_augment = False

        def rows(self, model, x, y, idx, gen):
            return x[:1].flip(3), torch.eye(4)[:1]

    class Negated:  # after augmentation: every real row negated, own identity
        after_augment = True

        def rows(self, model, x, y, idx, gen):
            return -x, torch.eye(4)[y]

    x, y, idx = _batch()
    out, targets = BatchAssembler(4, torch.Generator().manual_seed(2), flip=False, pad=0, erasing=0.0, sources=[Negated(), Mirror()])(None, x, y, idx)
    assert out.shape[0] == 8 + 1 + 8 and targets.shape == (17, 4)  # real, the pre-augmentation rows, then the post-augmentation rows
    torch.testing.assert_close(out[9:], -out[:8])
    torch.testing.assert_close(out[8], out[0].flip(2))
