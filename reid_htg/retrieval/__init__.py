"""Retrieval backend: a FAISS gallery index with metadata, and evaluation through it."""
from reid_htg.retrieval.index import (
    INDEX_TYPES,
    GalleryIndex,
    GalleryIndexError,
    choose_index_type,
)

__all__ = ["INDEX_TYPES", "GalleryIndex", "GalleryIndexError", "choose_index_type"]
