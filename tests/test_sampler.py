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
