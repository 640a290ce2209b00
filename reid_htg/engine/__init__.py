"""Training support: optimisers and schedules, checkpoints, feature extraction, distributed helpers."""
