// Model-input preprocessing on the GPU: decoded BGR uint8 frames (the same device buffers the
// statistics kernel reads) -> the engine's input tensor, for a whole batch in one launch.
//
// Mapping: a 1-D grid of EGP_THREADS-thread blocks; batch slot s owns blocks
// [block_start, block_start + ceil(W * H / EGP_THREADS)), one thread per output pixel, all
// three channels. A slot is one (frame, squeeze) pair: the plain input and the feature-
// squeezing companions of the same frame are separate slots of the same batch, so they go
// through the engine in the same call. Each slot writes its own W x H x 3 block of the input
// tensor (NCHW or NHWC, float32 / float16 / uint8) at its `dst` address.
//
// The arithmetic (resize, letterbox, squeeze, channel order, normalisation, float16) is in
// preprocess_math.h, also compiled for the host and tested against the CPU preprocessing.
#include "preprocess_math.h"

extern "C" __global__ void __launch_bounds__(EGP_THREADS)
    egp_preprocess(const EgpDesc* __restrict__ descs, int n_slots) {
    __shared__ EgpDesc s_desc;
    const int block = (int)blockIdx.x;
    const int slot = egp_find_slot(descs, n_slots, block);
    // One copy of the 112-byte descriptor per block, read from shared memory afterwards.
    if (threadIdx.x < sizeof(EgpDesc) / 4) {
        reinterpret_cast<egp_u32*>(&s_desc)[threadIdx.x] = reinterpret_cast<const egp_u32*>(descs + slot)[threadIdx.x];
    }
    __syncthreads();
    const EgpDesc& d = s_desc;
    const egp_i64 p = (egp_i64)(block - d.block_start) * EGP_THREADS + (egp_i64)threadIdx.x;
    if (p >= (egp_i64)d.dst_w * d.dst_h) return;
    egp_pixel(d, (egp_i32)(p % d.dst_w), (egp_i32)(p / d.dst_w));
}
