"""Export a re-ID checkpoint to ONNX or OpenVINO (dynamic batch axis, the evaluated feature, keypoint blocks included), with a parity check.

    python tools/export.py --checkpoint runs/NAME/last.pt --out model.onnx
    python tools/export.py --checkpoint runs/NAME/last.pt --format openvino --out model.xml    # + model.bin

Prints the runtime's largest absolute difference from PyTorch and the lowest
cosine similarity on a random batch; exits 1 if they miss 1e-4 / 0.99999.
The file then serves alone: tools/embed.py --onnx, tools/serve.py --onnx (an
OpenVINO .xml is opened the same way by Embedder.load).
"""
from __future__ import annotations

import argparse
import sys

from reid_htg.cli import run_tool
from reid_htg.utils.extras import install_hint


MIN_OPSET, MAX_OPSET = 7, 20  # the opsets torch.onnx's TorchScript exporter writes (torch.onnx._constants); 7, 8, 9 and 20 checked with parity


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="a checkpoint of tools/train_reid.py")
    ap.add_argument("--out", required=True, help="the file to write: .onnx, or .xml for OpenVINO (its weights go to the .bin beside it)")
    ap.add_argument("--format", choices=("onnx", "openvino"), default="onnx")
    ap.add_argument("--opset", type=int, default=17)
    args = ap.parse_args(argv)
    if not MIN_OPSET <= args.opset <= MAX_OPSET:
        raise SystemExit(f"error: --opset {args.opset}: this exporter writes ONNX opsets {MIN_OPSET} to {MAX_OPSET} (default 17)")
    suffix = ".onnx" if args.format == "onnx" else ".xml"
    if not args.out.endswith(suffix):
        raise SystemExit(f"error: --out {args.out!r} must end in {suffix} for --format {args.format}")
    try:
        from reid_htg.serve.export import export_onnx, export_openvino
        if args.format == "openvino":
            import openvino  # noqa: F401
    except ImportError as exc:
        extra = "openvino" if args.format == "openvino" else "serve"
        raise SystemExit(f"error: {args.format} export needs the {extra} extra ({exc.name} is missing): {install_hint(extra)}") from None
    export = export_onnx if args.format == "onnx" else export_openvino
    r = export(args.checkpoint, args.out, opset=args.opset)
    ok = r["max_abs_diff"] <= 1e-4 and r["min_cosine"] >= 0.99999
    print(f"{args.out}: {r['dim']}-d features of {r['size'][0]}x{r['size'][1]} images, model {r['fingerprint']}; "
          f"{args.format} vs PyTorch: max abs diff {r['max_abs_diff']:.2e}, min cosine {r['min_cosine']:.7f} ({'PASS' if ok else 'MISS'})")
    return 0 if ok else 1


def entry() -> None:
    """The console script ``reid-export`` (and ``tools/export.py``)."""
    sys.exit(run_tool(main))


if __name__ == "__main__":
    entry()
