#!/usr/bin/env python
"""Train a re-ID embedding network (biasless softmax + batch-hard triplet, optional keypoint blocks, HTG, GAN/FGSM augmenters).

The code is reid_htg/commands/train_reid.py; installed, the same command is ``reid-train``. ``--help`` lists its options.
"""
from reid_htg.commands.train_reid import entry, main  # noqa: F401 - main: what the tests call in-process

if __name__ == "__main__":
    entry()
