"""SIMT emulation of the CUDA C++ kernels on the CPU: the `cuda-sim` test backend."""
