"""Docs that cannot rot: the configuration reference is generated and complete, the documented commands parse,
and the getting-started Python snippet runs."""
import argparse
import dataclasses
import importlib
import os
import re
import shlex

import numpy as np
import pytest

from reid_htg.config import ConfigError, field_docs, load_config, reference_markdown

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md", "docs/getting-started.md", "docs/training.md", "docs/evaluation.md", "docs/service.md", "docs/retrieval.md"]


def test_configuration_page_is_the_generated_reference():
    with open(os.path.join(ROOT, "docs", "configuration.md")) as fh:
        assert fh.read() == reference_markdown(), "regenerate it: python -m reid_htg.config > docs/configuration.md"


def test_a_key_without_a_description_fails():
    @dataclasses.dataclass
    class Undocumented:
        described: int = 1  # this one says what it is
        silent: int = 2

    with pytest.raises(ConfigError, match="silent"):
        field_docs(Undocumented)


class _Parsed(Exception):
    """Raised to stop a tool right after its arguments are parsed."""


def _commands(page: str):
    text = open(os.path.join(ROOT, page)).read()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    joined = "\n".join(b.replace("\\\n", " ") for b in blocks)
    for line in joined.splitlines():
        line = line.split("  #")[0].strip()
        m = re.match(r"(?:OMP_NUM_THREADS=\d+ )?python (tools|benchmarks)/(\w+)\.py(.*)", line)
        if m:
            yield m.group(1), m.group(2), shlex.split(m.group(3).replace("&&", ""))


COMMANDS = sorted({(p, kind, tool, tuple(args)) for p in PAGES for kind, tool, args in _commands(p) if kind == "tools"})


@pytest.mark.parametrize("page,kind,tool,args", COMMANDS, ids=[f"{c[0]}: {c[2]} {' '.join(c[3])[:60]}" for c in COMMANDS])
def test_documented_tool_commands_parse(monkeypatch, page, kind, tool, args):
    """Every documented tool command's flags exist and its key=value overrides are valid config keys (nothing runs)."""
    seen = {}

    def stop(self, argv=None, namespace=None):
        seen["args"] = original(self, argv, namespace)
        raise _Parsed

    original = argparse.ArgumentParser.parse_known_args
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", stop)
    module = importlib.import_module(f"reid_htg.commands.{tool}")
    with pytest.raises(_Parsed):
        module.main(list(args))
    parsed = seen["args"][0]
    overrides = [o for o in getattr(parsed, "overrides", []) or [] if "=" in o]
    if tool == "train_reid" and overrides:
        config = getattr(parsed, "config", None)
        load_config(path=os.path.join(ROOT, config) if config and os.path.exists(os.path.join(ROOT, config)) else config, overrides=overrides)


def test_the_commands_were_found():
    tools = {c[2] for c in COMMANDS}
    assert {"train_reid", "eval", "embed", "build_index", "search", "export", "serve", "check_dataset", "train_gan"} <= tools


def test_getting_started_python_snippet_runs(tmp_path, monkeypatch):
    import torch
    from PIL import Image

    from reid_htg.checkpoint import save_checkpoint
    from reid_htg.models import ReIDNet
    from reid_htg.retrieval import GalleryIndex

    text = open(os.path.join(ROOT, "docs", "getting-started.md")).read()
    (snippet,) = re.findall(r"```python\n(.*?)```", text, re.S)
    monkeypatch.chdir(tmp_path)
    args = dict(backbone="resnet10t", num_classes=3, keypoint_blocks=())
    os.makedirs("runs/mine")
    model = ReIDNet(**args)
    save_checkpoint({"model": model.state_dict(), "model_args": args, "config": {},
                     "data_args": dict(dataset="synthetic", root=".", args={}, height=32, width=16)}, "runs/mine/last.pt")
    Image.new("RGB", (16, 32), (200, 30, 30)).save("query.jpg")
    GalleryIndex.build(np.random.default_rng(0).standard_normal((5, model.dim)).astype(np.float32)).save("gallery_index")
    torch.set_num_threads(1)
    exec(compile(snippet, "getting-started.md", "exec"), {})
