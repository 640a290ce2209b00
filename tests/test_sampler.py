import numpy as np
import pytest

from reid_htg.data.sampler import PKSampler


def test_pk_batches_have_p_ids_times_k_images():
    labels = np.repeat(np.arange(10), [2, 3, 4, 5, 6, 7, 8, 9, 1, 4])  # id 8 has a single image
    s = PKSampler(labels, p=4, k=3, seed=1)
    batches = list(s)
    assert len(batches) == len(s) > 0
    for b in batches:
        ids = labels[b]
        assert len(b) == 12
        uniq, counts = np.unique(ids, return_counts=True)
        assert len(uniq) == 4 and (counts == 3).all()


def test_seeded_epochs_and_distributed_split():
    labels = np.repeat(np.arange(20), 4)
    a, b = list(PKSampler(labels, 4, 2, seed=3)), list(PKSampler(labels, 4, 2, seed=3))
    assert a == b
    s = PKSampler(labels, 4, 2, seed=3)
    s.set_epoch(1)
    assert list(s) != a
    ranks = [list(PKSampler(labels, 4, 2, seed=3, rank=r, world_size=2)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1])
    flat0 = {tuple(x) for x in ranks[0]}
    flat1 = {tuple(x) for x in ranks[1]}
    assert not flat0 & flat1  # disjoint batches
    assert sorted(ranks[0] + ranks[1]) == sorted(a[: len(ranks[0]) * 2])


def test_sampler_errors():
    with pytest.raises(ValueError, match="only 2"):
        PKSampler(np.array([0, 0, 1, 1]), p=3, k=2)
    with pytest.raises(ValueError, match="P >= 2"):
        PKSampler(np.array([0, 1]), p=1, k=2)


def test_imbalanced_epoch_visits_about_every_image_and_len_holds():
    labels = np.concatenate([np.repeat(np.arange(100), 4), np.repeat(np.arange(100, 110), 100)])  # 400 + 1000 images
    s = PKSampler(labels, p=16, k=4, seed=0)
    for epoch in range(3):
        s.set_epoch(epoch)
        batches = list(s)
        assert len(batches) == len(s)  # true every epoch: the schedule reads it
        seen = {i for b in batches for i in b}
        assert len(seen) / len(labels) >= 0.9
        for b in batches:
            uniq, counts = np.unique(labels[b], return_counts=True)
            assert len(b) == 64 and len(uniq) == 16 and (counts == 4).all()
    ranks = [PKSampler(labels, 16, 4, seed=0, rank=r, world_size=3) for r in range(3)]
    assert all(len(r) == len(list(r)) for r in ranks)
