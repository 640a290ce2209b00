#!/usr/bin/env python
"""Build a gallery index folder from an embeddings file.

The code is reid_htg/commands/build_index.py; installed, the same command is ``reid-index``. ``--help`` lists its options.
"""
from reid_htg.commands.build_index import entry, main  # noqa: F401 - main: what the tests call in-process

if __name__ == "__main__":
    entry()
