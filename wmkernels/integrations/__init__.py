"""Drop-in integrations: route other libraries' hot paths through wmkernels' ops.

In the style of Liger-Kernel's `apply_liger_kernel_to_*`: one call patches the library's
classes (every instance, existing or new), one call reverts the patch.

    apply_to_vector_quantize_pytorch / unapply_from_vector_quantize_pytorch
        vector-quantize-pytorch's Euclidean and cosine codebooks: lookup, quantized vectors
        and EMA statistics without the N x K distance and one-hot matrices.
    WMKFactorizedAttnProcessor / apply_to_latte
        a diffusers attention processor running Latte-style spatial and temporal attention
        through `spatial_attention` / `temporal_attention`.

The libraries are imported only when an integration is used; none is a dependency.
"""

from wmkernels.integrations._versions import check_version
from wmkernels.integrations.diffusers import WMKFactorizedAttnProcessor, apply_to_latte
from wmkernels.integrations.vector_quantize_pytorch import (
    apply_to_vector_quantize_pytorch,
    unapply_from_vector_quantize_pytorch,
)

__all__ = [
    "WMKFactorizedAttnProcessor", "apply_to_latte", "apply_to_vector_quantize_pytorch",
    "check_version", "unapply_from_vector_quantize_pytorch",
]
