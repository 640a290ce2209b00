#!/usr/bin/env python
"""Embed images with a trained checkpoint, or its ONNX export, into an embeddings file.

The code is reid_htg/commands/embed.py; installed, the same command is ``reid-embed``. ``--help`` lists its options.
"""
from reid_htg.commands.embed import entry, main  # noqa: F401 - main: what the tests call in-process

if __name__ == "__main__":
    entry()
