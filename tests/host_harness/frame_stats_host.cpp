// Host replay of kernels/frame_stats.cu: the same __host__ __device__ functions from
// kernels/frame_stats_math.h, run block by block and thread by thread on the CPU, with the
// warp sums formed in 32 bits exactly as the kernel's shuffles form them. Built by
// tests/test_cuda_kernel.py (g++ -shared) and called through ctypes; with -DEG_HOST_MAIN it
// is a standalone program for AddressSanitizer / UBSan runs over exact-size buffers.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "frame_stats_math.h"

namespace {

struct Shared {
    std::vector<eg_u8> luma = std::vector<eg_u8>(EG_SH_ROWS * EG_SH_PITCH);
    std::vector<eg_u8> hist = std::vector<eg_u8>(EG_HIST_BINS * EG_THREADS);
    eg_i32 q[256];
    EgAcc acc[EG_THREADS];
    eg_u32 red[EG_WARPS * EG_NACC];
};

void run_block(const EgFrameDesc* frames, eg_i32 n_frames, eg_i32 block, Shared& sh) {
    const EgFrameDesc& d = frames[eg_find_frame(frames, n_frames, block)];
    EgRegion g;
    if (!eg_region(d, block - d.block_start, g)) return;
    // Poison the shared luma tile: the GPU does not clear shared memory between blocks, so a
    // read of a byte this block did not write would give wrong sums here too.
    std::memset(sh.luma.data(), 0xA5, sh.luma.size());
    std::memset(sh.hist.data(), 0, sh.hist.size());
    for (eg_i32 t = 0; t < EG_THREADS; ++t) {
        sh.q[t] = static_cast<eg_i32>(eg_sat_q(static_cast<eg_u32>(t)));
        eg_acc_zero(sh.acc[t]);
    }
    for (eg_i32 t = 0; t < EG_THREADS; ++t) eg_phase1(d, g, sh.q, sh.luma.data(), sh.hist.data(), sh.acc[t], t);
    for (eg_i32 t = 0; t < EG_THREADS; ++t) eg_phase1_halo(d, g, sh.luma.data(), t);
    // __syncthreads()
    for (eg_i32 t = 0; t < EG_THREADS; ++t) eg_phase2(d, g, sh.luma.data(), sh.acc[t], t);
    for (eg_i32 w = 0; w < EG_WARPS; ++w) {
        for (eg_i32 i = 0; i < EG_NACC; ++i) sh.red[w * EG_NACC + i] = 0u;
        for (eg_i32 lane = 0; lane < 32; ++lane) {
            eg_u32 v[EG_NACC];
            eg_acc_values(sh.acc[w * 32 + lane], v);
            for (eg_i32 i = 0; i < EG_NACC; ++i) sh.red[w * EG_NACC + i] += v[i];  // 32-bit wrap, like the shuffles
        }
    }
    auto* raw = reinterpret_cast<eg_u64*>(d.raw_out);
    for (eg_i32 f = 0; f < EG_NFIELDS; ++f) raw[static_cast<eg_i64>(g.tile) * EG_NFIELDS + f] += eg_block_field(f, d, g, sh.red);
    auto* hist = reinterpret_cast<eg_u64*>(d.hist_out);
    for (eg_i32 bin = 0; bin < EG_HIST_BINS; ++bin) {
        eg_u32 c = 0u;
        for (eg_i32 part = 0; part < 8; ++part) c += eg_hist_part(sh.hist.data(), bin, part);
        hist[bin] += c;
    }
}

}  // namespace

extern "C" {

int eg_host_desc_size(void) { return static_cast<int>(sizeof(EgFrameDesc)); }

// Byte offsets of the EgFrameDesc fields, in declaration order; returns how many.
int eg_host_desc_offsets(long long* out) {
    const long long offs[] = {
        offsetof(EgFrameDesc, src),        offsetof(EgFrameDesc, chroma),     offsetof(EgFrameDesc, prev_luma),
        offsetof(EgFrameDesc, luma_out),   offsetof(EgFrameDesc, raw_out),    offsetof(EgFrameDesc, hist_out),
        offsetof(EgFrameDesc, pitch),      offsetof(EgFrameDesc, chroma_pitch), offsetof(EgFrameDesc, luma_pitch),
        offsetof(EgFrameDesc, width),      offsetof(EgFrameDesc, height),     offsetof(EgFrameDesc, format),
        offsetof(EgFrameDesc, range),      offsetof(EgFrameDesc, grid_rows),  offsetof(EgFrameDesc, grid_cols),
        offsetof(EgFrameDesc, block_start), offsetof(EgFrameDesc, block_count), offsetof(EgFrameDesc, tile_bx),
        offsetof(EgFrameDesc, tile_by),    offsetof(EgFrameDesc, block_rows), offsetof(EgFrameDesc, reserved0),
        offsetof(EgFrameDesc, reserved1),  offsetof(EgFrameDesc, reserved2),
    };
    const int n = static_cast<int>(sizeof(offs) / sizeof(offs[0]));
    for (int i = 0; i < n; ++i) out[i] = offs[i];
    return n;
}

// Geometry constants the Python side mirrors (agent/gpu/statsabi.py).
int eg_host_constants(long long* out) {
    const long long c[] = {EG_THREADS, EG_BW, EG_BH_MAX, EG_CHUNK, EG_NFIELDS, EG_HIST_BINS,
                           EG_FMT_BGR, EG_FMT_NV12, EG_RANGE_FULL, EG_RANGE_LIMITED, EG_NACC};
    const int n = static_cast<int>(sizeof(c) / sizeof(c[0]));
    for (int i = 0; i < n; ++i) out[i] = c[i];
    return n;
}

// The kernel's blocks [0, total_blocks) over host buffers (desc pointers are host addresses).
void eg_host_frame_stats(const EgFrameDesc* frames, int n_frames, int total_blocks) {
    Shared sh;
    for (int b = 0; b < total_blocks; ++b) run_block(frames, n_frames, b, sh);
}

// Per-pixel luma and saturation of n BGR pixels.
void eg_host_pixels(const unsigned char* bgr, long long n, unsigned char* y_out, unsigned char* s_out) {
    eg_i32 q[256];
    for (int v = 0; v < 256; ++v) q[v] = static_cast<eg_i32>(eg_sat_q(static_cast<eg_u32>(v)));
    for (long long i = 0; i < n; ++i) {
        const eg_u32 b = bgr[3 * i], g = bgr[3 * i + 1], r = bgr[3 * i + 2];
        y_out[i] = static_cast<unsigned char>(eg_luma(b, g, r));
        s_out[i] = static_cast<unsigned char>(eg_saturation(b, g, r, q));
    }
}

// Per-pixel NV12 conversion of n (Y, U, V) triples: B, G, R and the statistics luma Y'.
void eg_host_yuv_pixels(const unsigned char* yuv, long long n, int limited, unsigned char* bgr_out,
                        unsigned char* luma_out) {
    for (long long i = 0; i < n; ++i) {
        eg_u32 b, g, r;
        eg_nv12_bgr(yuv[3 * i], yuv[3 * i + 1], yuv[3 * i + 2], limited != 0, b, g, r);
        bgr_out[3 * i] = static_cast<unsigned char>(b);
        bgr_out[3 * i + 1] = static_cast<unsigned char>(g);
        bgr_out[3 * i + 2] = static_cast<unsigned char>(r);
        luma_out[i] = static_cast<unsigned char>(limited ? eg_limited_to_full(yuv[3 * i]) : yuv[3 * i]);
    }
}

}  // extern "C"

#ifdef EG_HOST_MAIN
// Sanitizer driver: each argument "fmt,range,W,H,rows,cols,tile_bx,tile_by,block_rows,prev"
// describes one frame of one batch (plan from agent/gpu/statsabi.plan_frame). Buffers are
// allocated to their exact size with packed pitches, so any read past a frame's last byte
// is an AddressSanitizer error. Prints the total of all sums.
int main(int argc, char** argv) {
    std::vector<EgFrameDesc> descs;
    std::vector<std::vector<eg_u8>> bufs;
    std::vector<std::vector<eg_u64>> outs;
    eg_i32 block = 0;
    std::srand(12345);
    for (int a = 1; a < argc; ++a) {
        int v[10];
        if (std::sscanf(argv[a], "%d,%d,%d,%d,%d,%d,%d,%d,%d,%d", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6],
                        &v[7], &v[8], &v[9]) != 10) {
            std::fprintf(stderr, "bad frame spec %s\n", argv[a]);
            return 2;
        }
        EgFrameDesc d;
        std::memset(&d, 0, sizeof d);
        d.format = v[0];
        d.range = v[1];
        d.width = v[2];
        d.height = v[3];
        d.grid_rows = v[4];
        d.grid_cols = v[5];
        d.tile_bx = v[6];
        d.tile_by = v[7];
        d.block_rows = v[8];
        d.block_count = d.grid_rows * d.grid_cols * d.tile_bx * d.tile_by;
        d.block_start = block;
        block += d.block_count;
        const bool nv12 = d.format == EG_FMT_NV12;
        d.pitch = nv12 ? d.width : 3 * d.width;
        d.chroma_pitch = (d.width + 1) & ~1;
        d.luma_pitch = d.width;
        auto fill = [&](std::size_t n) -> eg_u64 {
            bufs.emplace_back(n);
            for (auto& x : bufs.back()) x = static_cast<eg_u8>(std::rand() & 0xFF);
            return reinterpret_cast<eg_u64>(bufs.back().data());
        };
        d.src = fill(static_cast<std::size_t>(d.pitch) * d.height);
        if (nv12) d.chroma = fill(static_cast<std::size_t>(d.chroma_pitch) * ((d.height + 1) / 2));
        d.luma_out = fill(static_cast<std::size_t>(d.width) * d.height);
        if (v[9]) d.prev_luma = d.luma_out;
        outs.emplace_back(static_cast<std::size_t>(d.grid_rows) * d.grid_cols * EG_NFIELDS + EG_HIST_BINS, 0ull);
        d.raw_out = reinterpret_cast<eg_u64>(outs.back().data());
        d.hist_out = reinterpret_cast<eg_u64>(outs.back().data() + static_cast<std::size_t>(d.grid_rows) * d.grid_cols * EG_NFIELDS);
        descs.push_back(d);
    }
    eg_host_frame_stats(descs.data(), static_cast<int>(descs.size()), block);
    eg_u64 total = 0;
    for (const auto& o : outs)
        for (eg_u64 x : o) total += x;
    std::printf("blocks %d total %llu\n", block, static_cast<unsigned long long>(total));
    return 0;
}
#endif
