// Fused frame statistics: one launch reduces a batch of frames (several cameras, mixed
// sizes, BGR or NV12) to per-tile exact integer sums (RAW_FIELDS) and a 32-bin luma
// histogram per frame; agent/stats/finish.py turns them into FrameStats on the host.
//
// Mapping: a 1-D grid; frame f owns blocks [block_start, block_start + block_count). Each
// block owns a region of at most EG_BW x block_rows pixels inside one tile (tile
// boundaries floor(i*H/rows)), so it ends with one 64-bit atomicAdd per statistic into
// that tile and one per non-empty histogram bin.
//   phase 1: 16-pixel chunks (16-byte loads where aligned) of the region plus one halo row
//            above and below -> luma into a shared tile; colour sums, histogram (per-thread
//            byte counters in shared memory, no atomics), diff against the previous luma,
//            luma copy for the next frame. Integer per-thread accumulators.
//   halo:    the left/right halo columns when the region edge is 16-aligned.
//   phase 2: 3x3 Laplacian and Immerkaer response of interior pixels from the shared tile.
//   reduce:  warp shuffles (32-bit, bounded) -> shared -> 64-bit block totals -> atomics.
// All arithmetic lives in frame_stats_math.h (also compiled for the host and tested there).
#include "frame_stats_math.h"

extern "C" __global__ void __launch_bounds__(EG_THREADS, EG_MIN_BLOCKS)
    eg_frame_stats(const EgFrameDesc* __restrict__ frames, int n_frames) {
    __shared__ __align__(16) eg_u8 s_luma[EG_SH_ROWS * EG_SH_PITCH];
    __shared__ __align__(16) eg_u8 s_hist[EG_HIST_BINS * EG_THREADS];
    __shared__ eg_i32 s_q[256];
    __shared__ eg_u32 s_red[EG_WARPS * EG_NACC];

    __shared__ EgFrameDesc s_desc;

    const eg_i32 tid = (eg_i32)threadIdx.x;
    const eg_i32 block = (eg_i32)blockIdx.x;
    const EgFrameDesc& gd = frames[eg_find_frame(frames, n_frames, block)];
    EgRegion g;
    if (!eg_region(gd, block - gd.block_start, g)) return;  // uniform across the block
    // The descriptor goes to shared memory: its fields are then re-read where used instead
    // of occupying ~20 registers for the whole block.
    if (tid < (eg_i32)(sizeof(EgFrameDesc) / 4)) {
        reinterpret_cast<eg_u32*>(&s_desc)[tid] = reinterpret_cast<const eg_u32*>(&gd)[tid];
    }
    const EgFrameDesc& d = s_desc;

    s_q[tid] = (eg_i32)eg_sat_q((eg_u32)tid);
    {
        uint4* h = reinterpret_cast<uint4*>(s_hist);
        for (eg_i32 i = tid; i < EG_HIST_BINS * EG_THREADS / 16; i += EG_THREADS) h[i] = make_uint4(0u, 0u, 0u, 0u);
    }
    __syncthreads();

    EgAcc acc;
    eg_acc_zero(acc);
    eg_phase1(d, g, s_q, s_luma, s_hist, acc, tid);
    eg_phase1_halo(d, g, s_luma, tid);
    __syncthreads();
    eg_phase2(d, g, s_luma, acc, tid);

    // Warp totals (32-bit: the static_asserts in frame_stats_math.h bound them).
    const eg_i32 lane = tid & 31;
    const eg_i32 warp = tid >> 5;
    eg_u32 vals[EG_NACC];
    eg_acc_values(acc, vals);
#pragma unroll
    for (int i = 0; i < EG_NACC; ++i) {
        eg_u32 v = vals[i];
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, o);
        if (lane == 0) s_red[warp * EG_NACC + i] = v;
    }
    __syncthreads();

    if (tid < EG_NFIELDS) {
        const eg_u64 v = eg_block_field(tid, d, g, s_red);
        if (v != 0ull) {
            unsigned long long* raw = reinterpret_cast<unsigned long long*>(d.raw_out);
            atomicAdd(raw + (eg_i64)g.tile * EG_NFIELDS + tid, (unsigned long long)v);
        }
    }
    // Histogram: 8 threads per bin, each summing 32 threads' byte counters.
    {
        const eg_i32 bin = tid >> 3;
        eg_u32 c = eg_hist_part(s_hist, bin, tid & 7);
        c += __shfl_xor_sync(0xFFFFFFFFu, c, 1);
        c += __shfl_xor_sync(0xFFFFFFFFu, c, 2);
        c += __shfl_xor_sync(0xFFFFFFFFu, c, 4);
        if ((tid & 7) == 0 && c != 0u) {
            unsigned long long* hist = reinterpret_cast<unsigned long long*>(d.hist_out);
            atomicAdd(hist + bin, (unsigned long long)c);
        }
    }
}
