"""reid-htg: metric learning and person re-identification.

Where things live:

- ``data``: datasets as one table (a registry of readers, the synthetic set,
  checks, the validation split), the P x K sampler, cached image sets, batch
  augmentation;
- ``models``: timm backbone, keypoint blocks, BNNeck, biasless classifier;
- ``losses``: the triplet miner, triplet losses, identity cross-entropy;
- ``htg``: adversarial hard triplet generation (G, D, their steps);
- ``augmenters``: DCGAN, CycleGAN, FGSM, robustness, and ``batches`` (how a
  training batch is assembled: a new augmenter adds its rows there);
- ``metrics``: CMC/mAP/mINP, Recall@K/MAP@R/NMI;
- ``optim``, ``checkpoint``, ``features``: optimisers and schedules,
  checkpoints, feature extraction;
- ``builders``: config sections to the objects above (only tools, benchmarks
  and tests use configs);
- ``retrieval``: FAISS gallery index, evaluation through it, re-ranking.
"""
__version__ = "0.1.0"
