"""Triton kernels. Importing a module here imports triton; wmkernels.ops imports them only
when triton is installed."""
