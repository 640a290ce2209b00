#!/usr/bin/env python
"""Serve a gallery index over HTTP: search by embeddings or images, durable adds and deletes (FastAPI + uvicorn).

The code is reid_htg/commands/serve.py; installed, the same command is ``reid-serve``. ``--help`` lists its options.
"""
from reid_htg.commands.serve import entry, main  # noqa: F401 - main: what the tests call in-process

if __name__ == "__main__":
    entry()
