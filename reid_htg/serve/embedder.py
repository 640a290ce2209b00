"""Images -> retrieval features, from a re-ID checkpoint (PyTorch), its ONNX export (onnxruntime) or its OpenVINO IR.

    from reid_htg.serve.embedder import Embedder
    emb = Embedder.load("model.onnx")            # or model.xml (OpenVINO), runs/NAME/last.pt
    feats = emb.embed_paths(["a.jpg", "b.jpg"])  # (2, D) float32

Both kinds resize to the training size, scale pixels to [0, 1] and return the
model's retrieval feature (``eval_feature``); the ONNX graph applies the
ImageNet normalisation itself, so the two give the same features (tested:
max abs difference <= 1e-4, cosine >= 0.99999).
"""
from __future__ import annotations

import os

import numpy as np

from reid_htg.data.decode import read_rgb
from reid_htg.utils.extras import install_hint
from reid_htg.utils.hashing import file_sha256, onnx_weights_sha256

META_PREFIX = "reid_htg."


class Embedder:
    """A model that embeds images: ``size`` (H, W), ``dim``, ``fingerprint`` (of the weights), ``embed_paths``, ``embed_images``."""

    def __init__(self, run, size: tuple[int, int], dim: int, fingerprint: str, kind: str):
        self._run, self.size, self.dim, self.fingerprint, self.kind = run, tuple(size), int(dim), fingerprint, kind

    @classmethod
    def load(cls, path: str, device=None) -> "Embedder":
        """An ONNX file (``.onnx``), an OpenVINO IR (``.xml``) or a checkpoint of tools/train_reid.py."""
        if path.endswith(".onnx"):
            return cls.from_onnx(path)
        if path.endswith(".xml"):
            return cls.from_openvino(path)
        return cls.from_checkpoint(path, device)

    @classmethod
    def from_openvino(cls, path: str, threads: int | None = None) -> "Embedder":
        """An OpenVINO IR of ``tools/export.py --format openvino`` on the CPU (no PyTorch model code)."""
        try:
            import openvino as ov
        except ImportError:
            raise ValueError("an OpenVINO model needs the openvino extra: " + install_hint("openvino")) from None
        if not os.path.isfile(path):
            raise FileNotFoundError(f"OpenVINO model {path!r} not found")
        core = ov.Core()
        ir = core.read_model(path)
        meta = {}
        for k in ("height", "width", "dim", "fingerprint", "weights_sha256"):
            try:
                meta[k] = ir.get_rt_info(["reid_htg", k]).astype(str)
            except RuntimeError:
                raise ValueError(f"{path} lacks reid_htg metadata {k!r}; export it with tools/export.py --format openvino") from None
        bin_path = path[:-4] + ".bin"
        if not os.path.isfile(bin_path) or file_sha256(bin_path) != meta["weights_sha256"]:
            raise ValueError(f"{bin_path} does not hold the weights {path} was exported with (its metadata names model "
                             f"{meta['fingerprint']}); keep an .xml with its own .bin, or export again with tools/export.py")
        config = {"INFERENCE_PRECISION_HINT": "f32"}  # CPUs with bf16 units would otherwise run in bf16: parity with PyTorch is 1e-4
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        compiled = core.compile_model(ir, "CPU", config)

        def run(batch: np.ndarray) -> np.ndarray:
            x = np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0
            return compiled(x)[0]

        return cls(run, (int(meta["height"]), int(meta["width"])), int(meta["dim"]), meta["fingerprint"], "openvino")

    @classmethod
    def from_checkpoint(cls, path: str, device=None) -> "Embedder":
        import torch

        from reid_htg.checkpoint import load_checkpoint, model_from_checkpoint
        from reid_htg.data.transforms import normalize
        from reid_htg.utils.hashing import model_fingerprint

        state = load_checkpoint(path)
        model = model_from_checkpoint(state).eval()
        dev = torch.device(device or "cpu")
        if dev.type == "cpu":
            from reid_htg.device import flush_denormal

            flush_denormal()  # subnormal weights of a decayed network would slow every CPU forward
        model.to(dev)

        def run(batch: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                x = normalize(torch.from_numpy(batch).to(dev).permute(0, 3, 1, 2).contiguous())
                return model.extract(x).cpu().numpy()

        size = (state["data_args"]["height"], state["data_args"]["width"])
        return cls(run, size, model.dim, model_fingerprint(state["model"]), "checkpoint")

    @classmethod
    def from_onnx(cls, path: str) -> "Embedder":
        import onnxruntime as ort

        if os.path.isdir(path):
            raise ValueError(f"ONNX model {path!r} is a folder, not an .onnx file")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"ONNX model {path!r} not found")
        try:
            sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for a bad file
            raise ValueError(f"{path} is not a loadable ONNX model ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
        meta = sess.get_modelmeta().custom_metadata_map
        need = [k for k in ("height", "width", "dim", "fingerprint", "weights_sha256") if META_PREFIX + k not in meta]
        if need:
            raise ValueError(f"{path} lacks reid_htg metadata {need}; export it with tools/export.py")
        import onnx

        if onnx_weights_sha256(onnx.load(path)) != meta[META_PREFIX + "weights_sha256"]:
            raise ValueError(f"{path}'s weights are not those its reid_htg metadata was written for (model "
                             f"{meta[META_PREFIX + 'fingerprint']}): the file was changed or its metadata copied; export again with tools/export.py")
        shape = sess.get_inputs()[0].shape
        if len(shape) != 4 or shape[1] not in (3, "3"):
            raise ValueError(f"{path} takes input of shape {shape}, not images (N, 3, H, W); export it with tools/export.py")
        name = sess.get_inputs()[0].name

        def run(batch: np.ndarray) -> np.ndarray:
            x = np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0
            return sess.run(None, {name: x})[0]

        size = (int(meta[META_PREFIX + "height"]), int(meta[META_PREFIX + "width"]))
        return cls(run, size, int(meta[META_PREFIX + "dim"]), meta[META_PREFIX + "fingerprint"], "onnx")

    def embed_arrays(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """(N, D) float32 features of (N, H, W, 3) uint8 images already at :attr:`size`."""
        out = [self._run(images[s : s + batch_size].astype(np.float32)) for s in range(0, len(images), batch_size)]
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.dim), np.float32)

    def embed_images(self, images, batch_size: int = 64) -> np.ndarray:
        """(N, D) features of image files or their bytes (decoded with Pillow, resized to :attr:`size`)."""
        return self.embed_arrays(np.stack([read_rgb(x, self.size) for x in images]) if len(images) else np.zeros((0, *self.size, 3), np.uint8), batch_size)

    embed_paths = embed_images
