// The kernels of stream_kernels.h built for one instruction set; setup.py sets VEC_BYTES and the flags.
#include "stream_kernels.h"
