"""Networks: the Parallel-Branch Network, its parts, the image backbone and the
motion discriminator (see doc/model.md)."""
from lib.models.backbone import CROP_SIZE, IMAGENET_MEAN, IMAGENET_STD, ResNetBackbone, load_spin_checkpoint  # noqa: F401
from lib.models.discriminator import MotionDiscriminator, build_discriminator_optimizer  # noqa: F401
from lib.models.pbn import ModelInputError, ParallelBranchNet, PBNOutput  # noqa: F401
