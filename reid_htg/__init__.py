"""reid-htg: metric learning and person re-identification.

Subpackages: ``data`` (datasets as one table, readers, sampler, augmentation),
``metrics`` (CMC/mAP/mINP, Recall@K/MAP@R/NMI), ``models`` (timm backbone,
keypoint blocks, biasless classifier), ``losses``, ``htg`` (adversarial hard
triplet generation), ``retrieval`` (FAISS gallery index), ``engine``
(optimisers, checkpoints, feature extraction).
"""
__version__ = "0.1.0"
