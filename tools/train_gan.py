#!/usr/bin/env python
"""Train a GAN augmenter on a dataset's training images: DCGAN (for LSRO) or CycleGAN between two cameras (for CamStyle).

The code is reid_htg/commands/train_gan.py; installed, the same command is ``reid-train-gan``. ``--help`` lists its options.
"""
from reid_htg.commands.train_gan import entry, main  # noqa: F401 - main: what the tests call in-process

if __name__ == "__main__":
    entry()
