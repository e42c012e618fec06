"""nn.Module drop-ins built on the wmkernels ops."""

from wmkernels.nn.attention import (
    SpatialAttention,
    STBlock,
    TemporalAttention,
    TemporalKVCache,
)
from wmkernels.nn.vq import VectorQuantizer

__all__ = ["VectorQuantizer",
           "SpatialAttention", "TemporalAttention", "STBlock", "TemporalKVCache"]
