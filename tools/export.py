#!/usr/bin/env python
"""Export a re-ID checkpoint to ONNX (dynamic batch axis, the evaluated feature, keypoint blocks included), with a parity check.

The code is reid_htg/commands/export.py; installed, the same command is ``reid-export``. ``--help`` lists its options.
"""
from reid_htg.commands.export import entry, main  # noqa: F401 - main: what the tests call in-process

if __name__ == "__main__":
    entry()
