"""Serving: an embedder from a checkpoint or an ONNX file, ONNX export with parity, and the HTTP retrieval service.

Needs the ``serve`` extra (``pip install -e ".[serve]"``): onnx, onnxruntime,
FastAPI, uvicorn, python-multipart (and httpx for the tests).
"""
