#!/usr/bin/env python
"""Check a trained model: dead convolution filters per stage, subnormal weights, silent channels.

The code is reid_htg/commands/check_model.py; installed, the same command is ``reid-check-model``. ``--help`` lists its options.
"""
from reid_htg.commands.check_model import entry, main  # noqa: F401 - main: what the tests call in-process

if __name__ == "__main__":
    entry()
