"""wmkernels: fast, exact, differentiable kernels for world models.

Public API (see README):
    vq_lookup, vq_quantize, vq_ema_update_   nearest-codebook lookup and VQ training
    backends                                 which implementation runs each op, and why
    nn                                       nn.Module drop-ins (VectorQuantizer, ...)
"""

from wmkernels import nn
from wmkernels.ops.vq import vq_ema_update_, vq_lookup, vq_quantize
from wmkernels.routing import backends

__version__ = "0.1.0"

__all__ = ["backends", "nn", "vq_ema_update_", "vq_lookup", "vq_quantize"]
