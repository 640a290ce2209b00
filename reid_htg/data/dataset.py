"""Image loading for training and feature extraction, with an in-memory cache of decoded images."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from reid_htg.data.decode import read_rgb
from reid_htg.utils.progress import progress as progress_bar


def load_image(path: str, size: tuple[int, int]) -> torch.Tensor:
    """(3, H, W) uint8 tensor of the image at ``path`` resized to ``size`` = (H, W); grayscale becomes RGB, 16-bit becomes 8-bit."""
    return torch.from_numpy(read_rgb(path, size)).permute(2, 0, 1).contiguous()


class ImageSet(torch.utils.data.Dataset):
    """Images (resized to ``size``) with their labels and cameras.

    With ``cache=True`` every image is decoded once, up front, into one uint8
    tensor (3 x 256 x 128 bytes = 96 KiB an image: 700 MiB for CUHK03's 7,239),
    so that an epoch is never bound by JPEG decoding. :meth:`batch` then
    gathers a whole batch with one indexing operation.

    Args:
        paths: image files.
        labels: (N,) training labels (any ints).
        camids: (N,) cameras.
        size: (H, W).
        cache: decode everything now.
        workers: decoding threads for the cache.
    """

    def __init__(self, paths, labels, camids, size: tuple[int, int], cache: bool = True, workers: int = 4, progress: bool = True):
        self.paths = list(paths)
        self.labels = torch.as_tensor(np.array(labels, dtype=np.int64))
        self.camids = torch.as_tensor(np.array(camids, dtype=np.int64))
        self.size = tuple(size)
        self.images = None
        if cache:
            with ThreadPoolExecutor(workers) as pool:
                it = pool.map(lambda p: load_image(p, self.size), self.paths)
                imgs = list(progress_bar(it, total=len(self.paths), desc="caching images", enabled=progress))
            self.images = torch.stack(imgs) if imgs else torch.empty(0, 3, *self.size, dtype=torch.uint8)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        img = self.images[i] if self.images is not None else load_image(self.paths[i], self.size)
        return img, self.labels[i], self.camids[i]

    def batch(self, indices) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) uint8 images, (B,) labels, (B,) cameras."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        if self.images is not None:
            return self.images[idx], self.labels[idx], self.camids[idx]
        return torch.stack([load_image(self.paths[i], self.size) for i in idx.tolist()]), self.labels[idx], self.camids[idx]


class _Indexed(torch.utils.data.Dataset):
    def __init__(self, dataset: ImageSet):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        return (*self.dataset[i], i)


def iterate_batches(dataset: ImageSet, batch_sampler, workers: int = 0):
    """Yield ``(images, labels, camids, indices)`` for each batch of indices from ``batch_sampler``.

    A cached set is indexed directly; otherwise a DataLoader decodes in
    ``workers`` processes.
    """
    if dataset.images is not None or workers == 0:
        for b in batch_sampler:
            yield (*dataset.batch(b), torch.as_tensor(b, dtype=torch.long))
        return
    loader = torch.utils.data.DataLoader(_Indexed(dataset), batch_sampler=batch_sampler, num_workers=workers, persistent_workers=False)
    yield from loader


def sequential_batches(n: int, batch_size: int):
    """Index batches 0..n-1 in order (feature extraction)."""
    return [list(range(s, min(s + batch_size, n))) for s in range(0, n, batch_size)]
