"""wmkernels: fast, exact, differentiable kernels for world models.

Public API (see README):
    vq_lookup, vq_quantize, vq_ema_update_   nearest-codebook lookup and VQ training
    spatial_attention, temporal_attention    factorized video attention on (B, T, S, H, D)
    maskgit_sample, maskgit_step,            MaskGIT sampling: fused sampler, re-masking step,
    maskgit_schedule, maskgit_decode         mask schedule and the full decode loop
    backends                                 which implementation runs each op, and why
    use_backend                              context manager: run the ops in a block on one backend
    nn                                       nn.Module drop-ins (VectorQuantizer, STBlock, ...)
"""

from wmkernels.ops.attention import spatial_attention, temporal_attention
from wmkernels.ops.maskgit import maskgit_sample, maskgit_schedule, maskgit_step
from wmkernels.ops.maskgit_decode import maskgit_decode
from wmkernels.ops.vq import vq_ema_update_, vq_lookup, vq_quantize
from wmkernels.routing import backends, use_backend

# The modules are built on the functions above.
# isort: split
from wmkernels import nn

__version__ = "0.1.0"

__all__ = [
    "backends", "nn", "use_backend",
    "vq_ema_update_", "vq_lookup", "vq_quantize",
    "spatial_attention", "temporal_attention",
    "maskgit_decode", "maskgit_sample", "maskgit_schedule", "maskgit_step",
]
