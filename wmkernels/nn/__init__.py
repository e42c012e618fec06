"""nn.Module drop-ins built on the wmkernels ops."""

from wmkernels.nn.maskgit import MaskGITSampler
from wmkernels.nn.vq import VectorQuantizer

__all__ = ["VectorQuantizer"]
__all__ += ["MaskGITSampler"]
