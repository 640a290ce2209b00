#!/usr/bin/env python
"""Evaluate features or trained models: re-ID (CMC rank-k, mAP, mINP; Market-1501 protocol) or class-level retrieval.

The code is reid_htg/commands/eval.py; installed, the same command is ``reid-eval``. ``--help`` lists its options.
"""
from reid_htg.commands.eval import entry, main  # noqa: F401 - main: what the tests call in-process

if __name__ == "__main__":
    entry()
