"""Check a dataset: counts per split, what it can be used for, and every problem found.

    python tools/check_dataset.py --dataset cuhk03 --data-root ../shared/data/cuhk03 [--json OUT]
    python tools/check_dataset.py --dataset image_folder --data-root ../shared/data/cub50
    python tools/check_dataset.py --dataset csv --data-root my_test_set.csv     # an evaluation-only set

Splits: train; query + gallery (re-ID); test (class-level: every test image
against all the others). A set with no train split is usable for evaluation
(cross-dataset testing). Exit code 0 when the dataset is usable as it stands
(for training, evaluation or both, as printed), 1 when it is not (an
unreadable image, a query split without a gallery, nothing to train on or
score), 2 when it cannot be read at all.
"""
from __future__ import annotations

import argparse
import json
import sys

from reid_htg.cli import run_tool
from reid_htg.data import DATASETS, DatasetError, build_dataset, check_dataset


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True, help=f"one of {sorted(DATASETS)}")
    ap.add_argument("--data-root", required=True, help="the dataset's folder (for csv: the CSV file)")
    ap.add_argument("--json", help="also write the report as JSON to this file")
    ap.add_argument("--no-decode", action="store_true", help="skip decoding every image (faster, misses corrupt files)")
    args = ap.parse_args(argv)
    try:
        df = build_dataset(args.dataset, args.data_root)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = check_dataset(df, decode=not args.no_decode, progress=sys.stderr.isatty())
    print(f"{args.dataset} at {args.data_root}")
    print(f"{'split':<8} {'images':>7} {'ids':>5} {'cams':>5}")
    for split, s in report["splits"].items():
        print(f"{split:<8} {s['images']:>7} {s['ids']:>5} {s['cams']:>5}")
    if report["problems"]:
        print(f"\n{len(report['problems'])} problem(s):")
        for p in report["problems"]:
            print(f"- {p['message']}")
            for i, path in enumerate(p.get("paths", [])[:50]):
                reason = p["reasons"][i] if "reasons" in p else ""
                print(f"    {path}{'  (' + reason + ')' if reason else ''}")
            if len(p.get("paths", [])) > 50:
                print(f"    ... {len(p['paths']) - 50} more (all in --json)")
    else:
        print("\nno problems found")
    if report["usable"]:
        print(f"\nusable: yes, for {' and '.join(report['usable_for'])}")
    else:
        print("\nusable: no")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
    return 0 if report["usable"] else 1


def entry() -> None:
    """The console script ``reid-check`` (and ``tools/check_dataset.py``)."""
    sys.exit(run_tool(main))


if __name__ == "__main__":
    entry()
