#!/usr/bin/env python
"""Search a gallery index: top-k matches of each query, as a table and a picture.

The code is reid_htg/commands/search.py; installed, the same command is ``reid-search``. ``--help`` lists its options.
"""
from reid_htg.commands.search import entry, main  # noqa: F401 - main: what the tests call in-process

if __name__ == "__main__":
    entry()
