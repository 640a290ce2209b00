"""HTG: adversarial hard triplet generation in embedding space (Zhao et al., ECCV 2018)."""
from reid_htg.htg.htg import HTG, Discriminator, Generator

__all__ = ["HTG", "Discriminator", "Generator"]
