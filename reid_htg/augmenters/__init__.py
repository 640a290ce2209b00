"""Image-level augmenters for re-ID: DCGAN samples with LSRO labels, CycleGAN camera style (CamStyle), FGSM."""
from reid_htg.augmenters.cyclegan import CycleGAN
from reid_htg.augmenters.dcgan import DCGAN, from_uint8, to_uint8
from reid_htg.augmenters.fgsm import (
    fgsm,
    metric_attack_loss,
    normalized_bounds,
    pixel_step,
)
from reid_htg.augmenters.mixing import (
    GANCheckpointError,
    LSROSource,
    camstyle_images,
    load_gan,
    smoothed_targets,
    uniform_targets,
)

__all__ = [
    "DCGAN", "CycleGAN", "GANCheckpointError", "LSROSource", "camstyle_images", "fgsm", "from_uint8", "load_gan",
    "metric_attack_loss", "normalized_bounds", "pixel_step", "smoothed_targets", "to_uint8", "uniform_targets",
]
