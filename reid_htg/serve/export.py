"""ONNX export of a re-ID checkpoint: the retrieval feature (keypoint blocks included) with a dynamic batch axis.

The graph takes float32 RGB images in [0, 1], (B, 3, H, W) at the training
size, applies the ImageNet normalisation, and returns the feature the model is
evaluated with. The training size, feature dimension and the weights'
fingerprint are stored as metadata (``reid_htg.height`` ...), so the ONNX file
alone serves (``reid_htg.serve.embedder.Embedder.from_onnx``).
"""
from __future__ import annotations

import os

import numpy as np
import torch

from reid_htg.checkpoint import load_checkpoint, model_from_checkpoint
from reid_htg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from reid_htg.serve.embedder import META_PREFIX
from reid_htg.utils.hashing import file_sha256, model_fingerprint, onnx_weights_sha256


class _Normalised(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x):
        return self.net.retrieval_feature((x - self.mean) / self.std)


def export_onnx(checkpoint: str, out: str, opset: int = 17, check_batch: int = 4) -> dict:
    """Write ``out`` and compare onnxruntime with PyTorch on a random batch; returns the parity figures.

    The model is written to a temporary file beside ``out`` and renamed over it only once complete: an export
    that fails (a full disk, say) leaves the previous ``out`` as it was.

    Returns:
        ``{"max_abs_diff", "min_cosine", "dim", "size", "fingerprint"}``.
    """
    import onnx
    import onnxruntime as ort

    state = load_checkpoint(checkpoint)
    model = model_from_checkpoint(state).eval()
    size = (int(state["data_args"]["height"]), int(state["data_args"]["width"]))
    wrapped = _Normalised(model).eval()
    example = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(0))
    tmp = f"{out}.tmp{os.getpid()}.onnx"
    meta = {"height": size[0], "width": size[1], "dim": model.dim, "fingerprint": model_fingerprint(state["model"]),
            "eval_feature": model.eval_feature, "source": checkpoint}
    try:
        torch.onnx.export(wrapped, (example,), tmp, input_names=["images"], output_names=["features"], opset_version=opset,
                          dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}}, dynamo=False)
        proto = onnx.load(tmp)
        meta["weights_sha256"] = onnx_weights_sha256(proto)  # what a loader recomputes: the metadata belongs to these weights
        for k, v in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = META_PREFIX + k, str(v)
        onnx.save(proto, tmp)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    x = torch.rand(check_batch, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = wrapped(x).numpy()
    got = ort.InferenceSession(out, providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})[0]
    cos = (ref * got).sum(1) / np.maximum(np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1), 1e-12)
    return {"max_abs_diff": float(np.abs(ref - got).max()), "min_cosine": float(cos.min()), "dim": model.dim, "size": size,
            "fingerprint": meta["fingerprint"]}


def export_openvino(checkpoint: str, out: str, opset: int = 17, check_batch: int = 4) -> dict:
    """Write an OpenVINO IR (``out`` = ``NAME.xml`` beside ``NAME.bin``), converted from the ONNX export, and compare
    OpenVINO with PyTorch on a random batch; returns the parity figures as :func:`export_onnx` does.

    The metadata (training size, dimension, fingerprint) travels as the IR's ``reid_htg`` runtime info. Both files are
    written under temporary names and renamed once complete (the ``.bin`` first): a failed export keeps the previous pair.
    """
    import openvino as ov

    if not out.endswith(".xml"):
        raise ValueError(f"an OpenVINO model is an .xml (with its .bin); got {out!r}")
    state = load_checkpoint(checkpoint)
    model = model_from_checkpoint(state).eval()
    size = (int(state["data_args"]["height"]), int(state["data_args"]["width"]))
    stem = f"{out[:-4]}.tmp{os.getpid()}"
    onnx_tmp = stem + ".onnx"
    try:
        parity = export_onnx(checkpoint, onnx_tmp, opset=opset, check_batch=check_batch)
        ir = ov.convert_model(onnx_tmp)
        meta = {"height": size[0], "width": size[1], "dim": model.dim, "fingerprint": parity["fingerprint"],
                "eval_feature": model.eval_feature, "source": checkpoint}
        ov.save_model(ir, stem + ".xml", compress_to_fp16=False)
        meta["weights_sha256"] = file_sha256(stem + ".bin")  # the .bin's bytes do not depend on the .xml's runtime info
        for k, v in meta.items():
            ir.set_rt_info(str(v), ["reid_htg", k])
        ov.save_model(ir, stem + ".xml", compress_to_fp16=False)
        if file_sha256(stem + ".bin") != meta["weights_sha256"]:
            raise RuntimeError("OpenVINO wrote different weights on a second save; cannot record which weights the model has")
        wrapped = _Normalised(model).eval()
        x = torch.rand(check_batch, 3, *size, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            ref = wrapped(x).numpy()
        got = ov.Core().compile_model(stem + ".xml", "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x.numpy())[0]
        os.replace(stem + ".bin", out[:-4] + ".bin")
        os.replace(stem + ".xml", out)
    finally:
        for leftover in (onnx_tmp, stem + ".xml", stem + ".bin"):
            if os.path.exists(leftover):
                os.remove(leftover)
    cos = (ref * got).sum(1) / np.maximum(np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1), 1e-12)
    return {"max_abs_diff": float(np.abs(ref - got).max()), "min_cosine": float(cos.min()), "dim": model.dim, "size": size,
            "fingerprint": meta["fingerprint"]}
