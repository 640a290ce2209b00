"""Search a gallery index: top-k matches of each query, as a table and a picture.

    python tools/search.py --index gallery_index --embeddings query.npz [--k 10] [--csv top.csv] [--png top.png]
    python tools/search.py --index gallery_index --images queries/ --checkpoint runs/NAME/last.pt --png top.png

Columns: query, rank, gallery_id, distance and the gallery's metadata. The PNG
shows each query beside its ranked gallery images (needs `path` metadata);
when identities are known, true matches are outlined green and others red.
"""
from __future__ import annotations

import argparse
import os
import sys

import pandas as pd

from reid_htg.cli import positive_int, run_tool
from reid_htg.retrieval import GalleryIndex, GalleryIndexError
from reid_htg.retrieval.files import check_threshold, read_threshold
from reid_htg.utils.tables import terminal_table


def draw(table: pd.DataFrame, queries: pd.DataFrame, out: str, max_queries: int = 8, thumb=(128, 64)) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    if "path" not in table or "path" not in queries:
        raise SystemExit("error: --png needs image paths in both the query and the gallery metadata")
    qs = list(dict.fromkeys(table["query"]))[:max_queries]
    k = int(table["rank"].max())
    fig, axes = plt.subplots(len(qs), k + 1, figsize=(1.1 * (k + 1), 2.0 * len(qs)), squeeze=False)

    def show(ax, path, title, colour=None):
        with Image.open(path) as im:
            ax.imshow(im.convert("RGB").resize((thumb[1], thumb[0])))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=7)
        for s in ax.spines.values():
            s.set_visible(colour is not None)
            if colour:
                s.set_color(colour)
                s.set_linewidth(3)

    for row, q in enumerate(qs):
        qrow = queries.iloc[int(q)]
        show(axes[row, 0], qrow["path"], "query")
        hits = table[table["query"] == q].sort_values("rank")
        for col in range(1, k + 1):
            ax = axes[row, col]
            if col > len(hits):
                ax.axis("off")
                continue
            h = hits.iloc[col - 1]
            colour = None
            if "pid" in h and "pid" in qrow:
                colour = "green" if h["pid"] == qrow["pid"] else "red"
            show(ax, h["path"], f"{int(h['rank'])}: {h['distance']:.3f}", colour)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def parse_filter(text: str | None) -> dict | None:
    """--filter as a mapping (JSON), refused in one line when it is not JSON or not an object."""
    if text is None:
        return None
    import json

    try:
        where = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"error: --filter is not JSON ({exc}); e.g. --filter '{{\"camid\": {{\"in\": [3, 4]}}}}'") from None
    if not isinstance(where, dict):
        raise SystemExit("error: --filter must be a JSON object of column -> value or -> {operator: value}")
    return where


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", required=True, help="an index folder from tools/build_index.py")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--embeddings", help="query embeddings from tools/embed.py")
    src.add_argument("--images", help="a folder of query images (with --checkpoint)")
    ap.add_argument("--checkpoint")
    ap.add_argument("--k", type=positive_int, default=10)
    ap.add_argument("--filter", help='only gallery items whose metadata pass it, as JSON: \'{"camid": {"in": [3, 4]}, "time": {"gte": 1700000000}}\' '
                    "(equality, in, gt, gte, lt, lte; conditions combined with and); the k nearest that pass, found exactly")
    ap.add_argument("--threshold", type=float, help="distance beyond which a query's best match is 'unknown' (default: the index's "
                    "threshold.json from tools/eval.py --save-threshold, if any)")
    ap.add_argument("--csv", help="write the whole table here")
    ap.add_argument("--png", help="draw queries and their top-k here")
    ap.add_argument("--png-queries", type=int, default=8, help="queries in the picture (default 8)")
    ap.add_argument("--device")
    args = ap.parse_args(argv)
    try:
        index = GalleryIndex.load(args.index)
    except GalleryIndexError as exc:
        raise SystemExit(f"error: {exc}") from None
    if args.embeddings:
        from reid_htg.retrieval.files import EmbeddingsFileError, load_embeddings

        try:
            emb, qmeta, fp = load_embeddings(args.embeddings)
        except EmbeddingsFileError as exc:
            raise SystemExit(f"error: {exc}") from None
    else:
        if not args.checkpoint:
            raise SystemExit("error: --images needs --checkpoint")
        from reid_htg.checkpoint import load_checkpoint
        from reid_htg.data.readers import list_images
        from reid_htg.features import embed_images
        from reid_htg.utils.hashing import model_fingerprint

        state = load_checkpoint(args.checkpoint)
        qmeta = pd.DataFrame({"path": list_images(args.images)})
        fp = model_fingerprint(state["model"])
        emb = embed_images(state, qmeta["path"].tolist(), device=args.device, desc="query embeddings")
    names = None
    if "path" in qmeta:  # a query is named by its path (relative to --images): file names repeat across class folders
        root = args.images
        names = qmeta["path"].map(lambda p: os.path.relpath(p, root) if root else p).to_numpy()
    try:
        table = index.search(emb, args.k, fingerprint=fp, where=parse_filter(args.filter))
    except GalleryIndexError as exc:
        raise SystemExit(f"error: {exc}") from None
    shown = table.copy()
    threshold = args.threshold if args.threshold is not None else (read_threshold(args.index) or {}).get("distance")
    if threshold is not None:  # open set: is the best match close enough to be someone in the gallery?
        best = table.groupby("query")["distance"].transform("min")
        shown.insert(4, "unknown", (best > check_threshold(threshold)).to_numpy())
    if names is not None:
        shown["query"] = names[shown["query"].to_numpy()]
    if args.csv:
        shown.to_csv(args.csv, index=False)
    with pd.option_context("display.max_rows", 60, "display.width", 160):
        if threshold is not None:
            unknown = shown.groupby("query")["unknown"].first()
            print(f"threshold {threshold:.4f}: {int(unknown.sum())} of {len(unknown)} queries unknown (best match beyond it)")
        print(terminal_table(shown, 60))  # long text cells shortened here; --csv keeps them whole
        if len(shown) > 60:
            print(f"... {len(shown) - 60} more rows" + (f" in {args.csv}" if args.csv else " (use --csv)"))
    if args.png:
        draw(table, qmeta, args.png, args.png_queries)
        print(f"picture -> {args.png}")
    return 0


def entry() -> None:
    """The console script ``reid-search`` (and ``tools/search.py``)."""
    sys.exit(run_tool(main))


if __name__ == "__main__":
    entry()
