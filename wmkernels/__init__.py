"""wmkernels: fast, exact, differentiable kernels for world models.

Public API (see README):
    vq_lookup, vq_quantize, vq_ema_update_   nearest-codebook lookup and VQ training
    spatial_attention, temporal_attention    factorized video attention on (B, T, S, H, D)
    backends                                 which implementation runs each op, and why
    nn                                       nn.Module drop-ins (VectorQuantizer, ...)
"""

from wmkernels.ops.attention import spatial_attention, temporal_attention
from wmkernels.ops.vq import vq_ema_update_, vq_lookup, vq_quantize
from wmkernels.routing import backends

# isort: split
from wmkernels import nn  # noqa: E402  (modules are built on the functions above)

__version__ = "0.1.0"

__all__ = ["backends", "nn", "vq_ema_update_", "vq_lookup", "vq_quantize",
           "spatial_attention", "temporal_attention"]
