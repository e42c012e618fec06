"""Static evidence without a GPU: the Triton and CUDA C++ kernels compiled ahead of time for
sm_80, sm_86 and sm_90, and their resources read from the generated code
(`python -m bench.static` writes bench/results/static/sm_<arch>.md)."""
