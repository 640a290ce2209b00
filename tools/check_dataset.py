#!/usr/bin/env python
"""Check a dataset: counts per split, what it can be used for, and every problem found.

The code is reid_htg/commands/check_dataset.py; installed, the same command is ``reid-check``. ``--help`` lists its options.
"""
from reid_htg.commands.check_dataset import entry, main  # noqa: F401 - main: what the tests call in-process

if __name__ == "__main__":
    entry()
