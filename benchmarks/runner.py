"""The experiment runner shared by the benchmarks: arms as data, runs that resume, the paired table and HTG's diagnostics.

An **arm** is a named list of ``key=value`` overrides of a recipe, with a
one-line description, read from ``configs/arms/*.yaml`` (see the comment at the
top of ``configs/arms/model.yaml``); an arm may build on a ``base`` arm. A
**run** is ``tools/train_reid.py`` with a recipe, ``seed=S`` and an arm's
overrides, in ``RUNS_DIR/<arm>_s<seed>/``: a finished run (its result file
exists) is skipped, an interrupted one resumed. The **paired table** gives per
arm the mean +- sd over seeds of the two headline metrics and, against a
reference arm, the paired difference (same seeds): its mean and 95% interval
(Student's t over the per-seed differences).
"""
from __future__ import annotations

import csv
import glob
import json
import os
import resource
import shlex
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
from scipy import stats

from reid_htg.config import read_yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ARMS_DIR = os.path.join(ROOT, "configs", "arms")
RENAMED = {  # earlier arm names -> what they are called now (a name that meant different things in different runners)
    "htg": "htg_v1_batchhard_reversed", "htg_hard": "htg_v1_batchhard_hard", "htg_semi": "htg_v1_semihard_reversed",
    "htg_semi_hard": "htg_semihard_hard", "htg_sq": "htg_v1_sqeuclidean", "htg_sgd": "htg_v1_sgd", "htg_static": "htg_v1_static",
    "htg_semi_static": "htg_semihard_hard_static", "both": "both_semihard_hard", "baseline": "basic",
}


@dataclass(frozen=True)
class Arm:
    """A named variant: the overrides it adds to a recipe (its base's first), what it is, and the GAN it needs (or None)."""

    name: str
    about: str
    overrides: tuple[str, ...]
    gan: str | None = None


def load_arms(folder: str = ARMS_DIR) -> dict[str, Arm]:
    """Every arm of the YAML files in ``folder``, bases resolved; a malformed entry or a duplicate name raises naming it."""
    raw: dict[str, dict] = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.yaml"))):
        entries = read_yaml(path)  # a name given twice in one file is refused, not silently the last
        for name, entry in entries.items():
            if name in raw:
                raise ValueError(f"arm {name!r} is defined twice ({path})")
            unknown = set(entry) - {"about", "overrides", "base", "gan"}
            if unknown or not entry.get("about") or not isinstance(entry.get("overrides"), list):
                raise ValueError(f"arm {name!r} in {path}: needs `about` and an `overrides` list (and optionally `base`, `gan`); got {sorted(entry)}")
            raw[name] = entry

    def resolve(name: str, seen: tuple[str, ...] = ()) -> tuple[str, ...]:
        if name in seen:
            raise ValueError(f"arm bases form a cycle: {' -> '.join((*seen, name))}")
        entry = raw[name]
        base = entry.get("base")
        if base is not None and base not in raw:
            raise ValueError(f"arm {name!r}: base {base!r} is not an arm")
        return (resolve(base, (*seen, name)) if base else ()) + tuple(entry["overrides"])

    return {name: Arm(name, e["about"], resolve(name), e.get("gan")) for name, e in raw.items()}


def pick_arms(names: list[str], arms: dict[str, Arm]) -> list[Arm]:
    """The arms asked for, an old name refused with its new one, an unknown one with the list."""
    out = []
    for n in names:
        if n in RENAMED and n not in arms:
            raise SystemExit(f"error: arm {n!r} is now called {RENAMED[n]!r}")
        if n not in arms:
            raise SystemExit(f"error: unknown arm {n!r}; known: {sorted(arms)} (or define one with --arm)")
        out.append(arms[n])
    return out


def paired_ci(diffs, level: float = 0.95) -> tuple[float, float, float]:
    """Mean of paired differences and its Student-t confidence interval ``(mean, low, high)`` (nan bounds for one pair).

    >>> [round(v, 3) for v in paired_ci([1.0, 2.0, 3.0])]
    [2.0, -0.484, 4.484]
    """
    d = np.asarray(diffs, float)
    m = float(d.mean())
    if len(d) < 2:
        return m, float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + level / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
    return m, m - half, m + half


def result_file(run_dir: str, val: bool) -> str:
    return os.path.join(run_dir, "val.json" if val else "eval.json")


def read_metrics(path: str) -> dict[str, float]:
    """The two headline metrics of a result file, in %: rank-1 / mAP (re-ID) or Recall@1 / MAP@R (class-level)."""
    with open(path) as fh:
        r = json.load(fh)
    if "rank1" in r:
        return {"rank1": 100 * r["rank1"], "mAP": 100 * r["mAP"]}
    return {"recall@1": 100 * r["recall@1"], "map@r": 100 * r["map@r"]}


def run_dir(runs_dir: str, arm: str, seed: int) -> str:
    return os.path.join(runs_dir, f"{arm}_s{seed}")


def train_command(config: str, data_root: str, out: str, seed: int, arm: Arm, extra: list[str], val_ids: int = 0,
                  gan_dirs: dict | None = None) -> list[str]:
    """The ``tools/train_reid.py`` command of one run (``--resume`` or ``--overwrite`` as the folder needs)."""
    overrides = [o.format(gan=(gan_dirs or {}).get(arm.gan)) if arm.gan else o for o in arm.overrides]
    cmd = [sys.executable, os.path.join(ROOT, "tools", "train_reid.py"), "--config", config, "--data-root", data_root,
           "--output-dir", out, f"seed={seed}", f"name={arm.name}_s{seed}", *overrides]
    if val_ids:
        cmd += [f"data.val_ids={val_ids}", "eval_test=false"]
    cmd += list(extra)
    if os.path.isfile(os.path.join(out, "last.pt")):
        cmd.append("--resume")
    elif os.path.isdir(out):
        cmd.append("--overwrite")  # killed before its first checkpoint: nothing to keep
    return cmd


def run(cmd: list[str], cpu_file: str | None = None) -> None:
    """Run one tool command, failing loudly; with ``cpu_file``, append its CPU seconds (user + system) to that file.

    CPU time, unlike wall time, is barely disturbed by other jobs on a shared machine.
    """
    print("running:", shlex.join(cmd), flush=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, check=True)
    if cpu_file:
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        os.makedirs(os.path.dirname(cpu_file), exist_ok=True)
        with open(cpu_file, "a") as fh:
            fh.write(f"{(after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime):.1f}\n")


def cpu_seconds(folder: str) -> float:
    """CPU seconds of every invocation that trained the run in ``folder`` (resumed ones add up); nan if unrecorded."""
    path = os.path.join(folder, "cpu_seconds.txt")
    if not os.path.isfile(path):
        return float("nan")
    with open(path) as fh:
        return sum(float(line) for line in fh if line.strip())


DIAGNOSTICS = ["g_shift", "d_auc", "d_id_acc", "gap_change", "emb_norm"]  # HTG's per-epoch columns of metrics.csv


def diagnostics(base: str, arms: list[str], seeds: list[int], val: bool = False) -> str:
    """HTG's diagnostics at each finished run's last epoch, min to max over seeds per arm (``""`` when no run has them)."""
    rows = []
    for arm in arms:
        last = []
        for seed in seeds:
            path = os.path.join(run_dir(base, arm, seed), "metrics.csv")
            if os.path.isfile(path) and os.path.isfile(result_file(run_dir(base, arm, seed), val)):  # finished runs only
                with open(path, newline="") as fh:
                    table = list(csv.DictReader(fh))
                if table and table[-1].get("g_shift"):
                    last.append({k: float(table[-1][k]) for k in DIAGNOSTICS if table[-1].get(k)})
        if last:
            cells = []
            for k in DIAGNOSTICS:
                v = [r[k] for r in last if k in r]
                cells.append(f"{min(v):.3g} to {max(v):.3g}" if v else "")
            rows.append(f"| {arm} | {len(last)} | " + " | ".join(cells) + " |")
    if not rows:
        return ""
    head = "HTG diagnostics at the last epoch, min to max over seeds (g_shift = |G(f) - f| / |f|; d_auc: D's real-vs-generated AUC; " \
           "d_id_acc: D's identity accuracy on real features; gap_change: generated minus real triplet gap; emb_norm: mean |f|)"
    cols = ["arm", "runs", *DIAGNOSTICS]
    return "\n".join([head, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols), *rows])


def paired_rows(results: dict, arms: list[str], seeds: list[int], reference: str) -> tuple[list[dict], list[str]]:
    """Rows of the paired table from ``{(arm, seed): {metric: value}}``, and its columns."""
    keys = list(next(iter(results.values())))
    rows = []
    for arm in arms:
        done = [s for s in seeds if (arm, s) in results]
        if not done:
            continue
        row = {"arm": arm, "seeds": len(done)}
        for k in keys:
            v = np.array([results[arm, s][k] for s in done])
            row[k] = f"{v.mean():.1f} +- {v.std(ddof=1):.1f}" if len(v) > 1 else f"{v[0]:.1f}"
        if arm != reference:
            pairs = [s for s in done if (reference, s) in results]
            row["pairs"] = len(pairs)
            for k in keys:
                if pairs:
                    m, lo, hi = paired_ci([results[arm, s][k] - results[reference, s][k] for s in pairs])
                    row[f"d_{k} [95% CI]"] = f"{m:+.2f} [{lo:+.2f}, {hi:+.2f}]"
        rows.append(row)
    return rows, ["arm", "seeds", *keys, "pairs", *[f"d_{k} [95% CI]" for k in keys]]


def markdown(rows: list[dict], cols: list[str]) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return "\n".join(lines + ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows])


def summarise(base: str, arms: list[str], seeds: list[int], reference: str, title: str, val: bool = False, name: str = "paired") -> str:
    """The paired table of the finished runs under ``base`` (and the diagnostics), printed as markdown and written
    as ``base/<name>[_val].md`` and ``.csv``."""
    results = {}
    for arm in arms:
        for seed in seeds:
            path = result_file(run_dir(base, arm, seed), val)
            if os.path.isfile(path):
                results[arm, seed] = read_metrics(path)
    if not results:
        raise SystemExit(f"no finished run under {base} to summarise")
    rows, cols = paired_rows(results, arms, seeds, reference)
    table = f"{title}; mean +- sd over seeds; d_: paired difference to {reference}\n\n" + markdown(rows, cols)
    diag = diagnostics(base, arms, seeds, val)
    if diag:
        table += "\n\n" + diag
    stem = os.path.join(base, f"{name}_val" if val else name)
    with open(stem + ".md", "w") as fh:
        fh.write(table + "\n")
    with open(stem + ".csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    return table
