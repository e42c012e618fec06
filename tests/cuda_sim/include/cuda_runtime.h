// Stand-in for the CUDA toolkit header under the SIMT emulation (tests/cuda_sim).
#pragma once
#include "../simt.h"
