// Per-pixel and per-block arithmetic of the fused frame-statistics kernel (frame_stats.cu).
//
// Everything here is __host__ __device__: the kernel calls it on the GPU, and
// tests/host_harness/frame_stats_host.cpp compiles the very same functions with g++ and
// replays the kernel's block/thread loop on the CPU, so the arithmetic, the tiling and the
// reductions are checked against the NumPy reference (agent/stats/reference.py) on machines
// without a GPU. Definitions: docs/stats.md (stats contract v1).
//
// No #include here: NVRTC compiles this without system headers.
#ifndef EDGE_GUARD_FRAME_STATS_MATH_H
#define EDGE_GUARD_FRAME_STATS_MATH_H

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define EG_HD __host__ __device__ __forceinline__
#define EG_UNROLL _Pragma("unroll")
#define EG_NO_UNROLL _Pragma("unroll 1")
#else
#define EG_HD inline
#define EG_UNROLL _Pragma("GCC unroll 16")
#define EG_NO_UNROLL _Pragma("GCC unroll 1")
#endif

typedef unsigned char eg_u8;
typedef unsigned int eg_u32;
typedef int eg_i32;
typedef long long eg_i64;
typedef unsigned long long eg_u64;

// ---------------------------------------------------------------------------------------
// Contract constants (agent/stats/types.py, agent/stats/finish.py).
// ---------------------------------------------------------------------------------------
#define EG_HIST_BINS 32
#define EG_HIST_SHIFT 3
#define EG_DARK_MAX 15
#define EG_CLIP_MIN 250

// RAW_FIELDS order; n and m are counted from the block's geometry, the others summed.
enum {
    EG_F_N = 0,
    EG_F_M,
    EG_F_SUM_Y,
    EG_F_SUM_Y2,
    EG_F_SUM_S,
    EG_F_SUM_B,
    EG_F_SUM_G,
    EG_F_SUM_R,
    EG_F_N_DARK,
    EG_F_N_CLIP,
    EG_F_SUM_L,
    EG_F_SUM_L2,
    EG_F_SUM_ABS_K,
    EG_F_SUM_ABS_DIFF,
    EG_NFIELDS
};

// Per-thread accumulators: RAW_FIELDS[2:], 32-bit (bounds below), sum_l two's complement.
enum {
    EG_A_SUM_Y = 0,
    EG_A_SUM_Y2,
    EG_A_SUM_S,
    EG_A_SUM_B,
    EG_A_SUM_G,
    EG_A_SUM_R,
    EG_A_N_DARK,
    EG_A_N_CLIP,
    EG_A_SUM_L,
    EG_A_SUM_L2,
    EG_A_SUM_ABS_K,
    EG_A_SUM_ABS_DIFF,
    EG_NACC
};

enum { EG_FMT_BGR = 0, EG_FMT_NV12 = 1 };
enum { EG_RANGE_FULL = 0, EG_RANGE_LIMITED = 1 };

// ---------------------------------------------------------------------------------------
// Block geometry. A block owns a region of at most EG_BW x EG_BH_MAX pixels that lies
// inside ONE tile, so each block ends with one atomic per statistic into that tile.
// Work items are 16-pixel chunks aligned to absolute x multiples of 16 (16-byte loads).
// ---------------------------------------------------------------------------------------
#define EG_THREADS 256
#define EG_WARPS (EG_THREADS / 32)
// Resident blocks per SM the register budget is sized for (__launch_bounds__): 4 x 256
// threads caps ptxas at 64 registers, which compiles without spills for sm_87 and sm_90
// (nvcc 13.0, NVRTC 13.5). Overridable (-DEG_MIN_BLOCKS=n) for tuning on a device.
#ifndef EG_MIN_BLOCKS
#define EG_MIN_BLOCKS 4
#endif
#define EG_CHUNK 16
#define EG_BW 128
#define EG_BH_MAX 64
#define EG_SH_PAD 16
// Shared luma tile: EG_SH_PAD bytes of left pad (the left halo column sits at EG_SH_PAD-1),
// then up to EG_BW + EG_CHUNK chunk-aligned columns, the right halo and pad.
#define EG_SH_PITCH (EG_SH_PAD + EG_BW + EG_CHUNK + EG_SH_PAD)
#define EG_SH_ROWS (EG_BH_MAX + 2)
// Items per block at most (EG_BH_MAX + 2) rows x (EG_BW / 16 + 1) chunks.
#define EG_MAX_ITEMS ((EG_BH_MAX + 2) * (EG_BW / EG_CHUNK + 1))
#define EG_MAX_ITEMS_PER_THREAD ((EG_MAX_ITEMS + EG_THREADS - 1) / EG_THREADS)

static_assert(EG_THREADS == 256, "s_q and the histogram reduction assume 256 threads");
static_assert(EG_SH_PITCH % 16 == 0, "16-byte shared stores need a 16-byte pitch");
// Per-thread histogram counters are bytes: a thread sees at most 16 pixels per item.
static_assert(EG_MAX_ITEMS_PER_THREAD * EG_CHUNK <= 255, "per-thread byte histogram would overflow");
static_assert(EG_MAX_ITEMS_PER_THREAD * EG_CHUNK * 255 <= 65535, "packed 16-bit per-thread sums would overflow");
// Warp-level 32-bit sums: the largest is sum_l2 over a warp's interior pixels.
// Interior groups per block <= EG_BH_MAX * (EG_BW/4 + 1), 4 pixels each, 1020^2 per pixel.
static_assert((eg_u64)((EG_BH_MAX * (EG_BW / 4 + 1) + EG_THREADS - 1) / EG_THREADS) * 4 * 32 * 1040400ull
                  < 4294967296ull,
              "warp sum of L^2 must fit in 32 bits");

// One frame of a batch; the Python side builds the same 128-byte record
// (agent/gpu/statsabi.py, DESC_DTYPE). Pointers are device addresses (host addresses in
// the host harness).
struct EgFrameDesc {
    eg_u64 src;           // BGR pixels (3 bytes each), or the NV12 luma plane
    eg_u64 chroma;        // NV12 interleaved U,V plane; 0 for BGR
    eg_u64 prev_luma;     // previous frame's luma under the same key; 0 = none
    eg_u64 luma_out;      // where this frame's luma goes (may equal prev_luma); 0 = nowhere
    eg_u64 raw_out;       // grid_rows * grid_cols * EG_NFIELDS u64 sums, zeroed before launch
    eg_u64 hist_out;      // EG_HIST_BINS u64 counts, zeroed before launch
    eg_i64 pitch;         // bytes between rows of src
    eg_i64 chroma_pitch;  // bytes between rows of chroma
    eg_i64 luma_pitch;    // bytes between rows of prev_luma / luma_out
    eg_i32 width;
    eg_i32 height;
    eg_i32 format;        // EG_FMT_*
    eg_i32 range;         // EG_RANGE_* (NV12 only)
    eg_i32 grid_rows;
    eg_i32 grid_cols;
    eg_i32 block_start;   // first blockIdx.x of this frame
    eg_i32 block_count;   // blocks of this frame
    eg_i32 tile_bx;       // blocks across one tile
    eg_i32 tile_by;       // blocks down one tile
    eg_i32 block_rows;    // rows per block region (<= EG_BH_MAX)
    eg_i32 reserved0;
    eg_i32 reserved1;
    eg_i32 reserved2;
};
static_assert(sizeof(EgFrameDesc) == 128, "EgFrameDesc must match DESC_DTYPE (128 bytes)");

struct EgRegion {
    eg_i32 tile;  // i * grid_cols + j
    eg_i32 xs, xe, ys, ye;  // pixel region [xs, xe) x [ys, ye), inside one tile
};

// Per-thread accumulators. A thread sees at most EG_MAX_ITEMS_PER_THREAD * 16 pixels, so
// its colour sums fit in 16 bits and its dark/clip counts in 8: they travel packed, two or
// three to a register (fewer registers, one add per pair), and are unpacked by
// eg_acc_values before the warp reduction.
struct EgAcc {
    eg_u32 ys;    // sum_y | sum_s << 16
    eg_u32 bg;    // sum_b | sum_g << 16
    eg_u32 rdc;   // sum_r | n_dark << 16 | n_clip << 24
    eg_u32 y2;    // sum_y2
    eg_u32 diff;  // sum_abs_diff
    eg_u32 l;     // sum_l (two's complement)
    eg_u32 l2;    // sum_l2
    eg_u32 k;     // sum_abs_k
};

EG_HD eg_i32 eg_min(eg_i32 a, eg_i32 b) { return a < b ? a : b; }
EG_HD eg_i32 eg_max(eg_i32 a, eg_i32 b) { return a > b ? a : b; }
EG_HD eg_u32 eg_byte(eg_u32 w, int i) { return (w >> (8 * i)) & 0xFFu; }

// ---------------------------------------------------------------------------------------
// Per-pixel arithmetic (docs/stats.md, "Per-pixel quantities").
// ---------------------------------------------------------------------------------------

// Luma: BT.601 weights in 15-bit fixed point, bit-identical to OpenCV COLOR_BGR2GRAY.
EG_HD eg_u32 eg_luma(eg_u32 b, eg_u32 g, eg_u32 r) {
    return (3735u * b + 19235u * g + 9798u * r + 16384u) >> 15;
}

// q(v) = round(255 * 4096 / v), q(0) = 0 (OpenCV's 8-bit HSV division table).
EG_HD eg_u32 eg_sat_q(eg_u32 v) { return v == 0 ? 0u : (2u * 255u * 4096u + v) / (2u * v); }

// HSV saturation S = (d * q(v) + 2048) >> 12 with q from a 256-entry table.
EG_HD eg_u32 eg_saturation(eg_u32 b, eg_u32 g, eg_u32 r, const eg_i32* q) {
    eg_u32 v = b > g ? b : g;
    v = v > r ? v : r;
    eg_u32 lo = b < g ? b : g;
    lo = lo < r ? lo : r;
    return ((v - lo) * (eg_u32)q[v] + 2048u) >> 12;
}

// Limited-range (16..235) video luma to full range: clamp(((Y-16)*510 + 219) // 438).
EG_HD eg_u32 eg_limited_to_full(eg_u32 y) {
    if (y <= 16u) return 0u;
    if (y >= 235u) return 255u;
    return ((y - 16u) * 510u + 219u) / 438u;
}

EG_HD eg_u32 eg_clamp_u8(eg_i32 v) { return v < 0 ? 0u : (v > 255 ? 255u : (eg_u32)v); }

// NV12 chroma to B, G, R (docs/stats.md, "NV12 input").
// Limited range: OpenCV's COLOR_YUV2BGR_NV12 integer path (BT.601 video range, 20-bit).
// Full range: OpenCV's COLOR_YCrCb2BGR integer path (BT.601 full range, 14-bit), Cr = V, Cb = U.
// Arithmetic shifts of negative values are floor divisions (nvcc, NVRTC and g++ all do that).
EG_HD void eg_nv12_bgr(eg_u32 y, eg_u32 u, eg_u32 v, bool limited, eg_u32& b, eg_u32& g, eg_u32& r) {
    const eg_i32 uu = (eg_i32)u - 128;
    const eg_i32 vv = (eg_i32)v - 128;
    if (limited) {
        const eg_i32 yy = eg_max((eg_i32)y - 16, 0) * 1220542;
        const eg_i32 half = 1 << 19;
        r = eg_clamp_u8((yy + half + 1673527 * vv) >> 20);
        g = eg_clamp_u8((yy + half - 852492 * vv - 409993 * uu) >> 20);
        b = eg_clamp_u8((yy + half + 2116026 * uu) >> 20);
    } else {
        const eg_i32 yy = (eg_i32)y;
        const eg_i32 half = 1 << 13;
        b = eg_clamp_u8(yy + ((uu * 29049 + half) >> 14));
        g = eg_clamp_u8(yy + ((uu * -5636 + vv * -11698 + half) >> 14));
        r = eg_clamp_u8(yy + ((vv * 22987 + half) >> 14));
    }
}

EG_HD void eg_acc_zero(EgAcc& a) { a.ys = a.bg = a.rdc = a.y2 = a.diff = a.l = a.l2 = a.k = 0u; }

// One pixel's colour / luma statistics.
EG_HD void eg_acc_pixel(EgAcc& a, eg_u32 y, eg_u32 s, eg_u32 b, eg_u32 g, eg_u32 r) {
    a.ys += y + (s << 16);
    a.bg += b + (g << 16);
    a.rdc += r + (y <= (eg_u32)EG_DARK_MAX ? 1u << 16 : 0u) + (y >= (eg_u32)EG_CLIP_MIN ? 1u << 24 : 0u);
    a.y2 += y * y;
}

// One interior pixel's Laplacian L and Immerkær response K from its 3x3 luma window:
// c = centre, a4 = N + S + W + E, d4 = the four corners.
EG_HD void eg_acc_window(EgAcc& a, eg_i32 c, eg_i32 a4, eg_i32 d4) {
    const eg_i32 l = a4 - 4 * c;              // [[0,1,0],[1,-4,1],[0,1,0]]
    const eg_i32 k = d4 - 2 * a4 + 4 * c;     // [[1,-2,1],[-2,4,-2],[1,-2,1]]
    a.l += (eg_u32)l;                         // two's complement; sign restored per warp
    a.l2 += (eg_u32)(l * l);
    a.k += (eg_u32)(k < 0 ? -k : k);
}

// The accumulators in EG_A_* order, unpacked to one 32-bit value each.
EG_HD void eg_acc_values(const EgAcc& a, eg_u32 (&v)[EG_NACC]) {
    v[EG_A_SUM_Y] = a.ys & 0xFFFFu;
    v[EG_A_SUM_S] = a.ys >> 16;
    v[EG_A_SUM_B] = a.bg & 0xFFFFu;
    v[EG_A_SUM_G] = a.bg >> 16;
    v[EG_A_SUM_R] = a.rdc & 0xFFFFu;
    v[EG_A_N_DARK] = (a.rdc >> 16) & 0xFFu;
    v[EG_A_N_CLIP] = a.rdc >> 24;
    v[EG_A_SUM_Y2] = a.y2;
    v[EG_A_SUM_ABS_DIFF] = a.diff;
    v[EG_A_SUM_L] = a.l;
    v[EG_A_SUM_L2] = a.l2;
    v[EG_A_SUM_ABS_K] = a.k;
}

// ---------------------------------------------------------------------------------------
// Memory access helpers: 16-byte vector loads on the GPU, memcpy on the host.
// ---------------------------------------------------------------------------------------
EG_HD void eg_load16_ro(const eg_u8* p, eg_u32* w) {
#ifdef __CUDA_ARCH__
    const uint4 v = __ldg(reinterpret_cast<const uint4*>(p));  // read-only path: src never changes
    w[0] = v.x;
    w[1] = v.y;
    w[2] = v.z;
    w[3] = v.w;
#else
    __builtin_memcpy(w, p, 16);
#endif
}

EG_HD void eg_load16(const eg_u8* p, eg_u32* w) {
#ifdef __CUDA_ARCH__
    // Plain (coherent) load: prev_luma may be the buffer this kernel writes (in place).
    const uint4 v = *reinterpret_cast<const uint4*>(p);
    w[0] = v.x;
    w[1] = v.y;
    w[2] = v.z;
    w[3] = v.w;
#else
    __builtin_memcpy(w, p, 16);
#endif
}

EG_HD void eg_store16(eg_u8* p, const eg_u32* w) {
#ifdef __CUDA_ARCH__
    *reinterpret_cast<uint4*>(p) = make_uint4(w[0], w[1], w[2], w[3]);
#else
    __builtin_memcpy(p, w, 16);
#endif
}

EG_HD eg_u32 eg_load4(const eg_u8* p) {
#ifdef __CUDA_ARCH__
    return *reinterpret_cast<const eg_u32*>(p);
#else
    eg_u32 w;
    __builtin_memcpy(&w, p, 4);
    return w;
#endif
}

// Sum of the four bytes of w.
EG_HD eg_u32 eg_byte_sum(eg_u32 w) {
#ifdef __CUDA_ARCH__
    return __dp4a(w, 0x01010101u, 0u);
#else
    return eg_byte(w, 0) + eg_byte(w, 1) + eg_byte(w, 2) + eg_byte(w, 3);
#endif
}

// NW words of read-only pixels from p: one 16-byte load per 4 words when `vec`, else byte
// loads of the first `limit` bytes (the rest zero) so nothing past the frame's end is read.
// The byte loop is deliberately not unrolled: this path only serves odd pitches and frame
// edges, and 48 hoisted byte loads would cost the fast path its registers.
template <int NW>
EG_HD void eg_load_words(const eg_u8* p, bool vec, eg_i32 limit, eg_u32 (&w)[NW]) {
    if (vec) {
        EG_UNROLL
        for (int i = 0; i < NW; i += 4) eg_load16_ro(p + 4 * i, &w[i]);
    } else {
        EG_UNROLL
        for (int i = 0; i < NW; ++i) {
            eg_u32 x = 0u;
            EG_NO_UNROLL
            for (int k = 0; k < 4; ++k) {
                if (4 * i + k < limit) x |= (eg_u32)p[4 * i + k] << (8 * k);
            }
            w[i] = x;
        }
    }
}

// 16 luma bytes of the previous frame: one coherent 16-byte load when `whole`, else only
// the bytes whose `mask` bit is set (the others belong to blocks that may be rewriting
// them in place right now).
EG_HD void eg_load_prev(const eg_u8* p, bool whole, eg_u32 mask, eg_u32 (&w)[4]) {
    if (whole) {
        eg_load16(p, w);
        return;
    }
    EG_UNROLL
    for (int i = 0; i < 4; ++i) {
        eg_u32 x = 0u;
        EG_NO_UNROLL
        for (int k = 0; k < 4; ++k) {
            if ((mask >> (4 * i + k)) & 1u) x |= (eg_u32)p[4 * i + k] << (8 * k);
        }
        w[i] = x;
    }
}

// ---------------------------------------------------------------------------------------
// Geometry.
// ---------------------------------------------------------------------------------------

// Tile boundary floor(i * len / parts) (docs/stats.md, "Tiles").
EG_HD eg_i32 eg_bound(eg_i32 i, eg_i32 len, eg_i32 parts) { return (eg_i32)(((eg_i64)i * len) / parts); }

// Frame owning global block `block`: the last descriptor with block_start <= block.
EG_HD eg_i32 eg_find_frame(const EgFrameDesc* frames, eg_i32 n_frames, eg_i32 block) {
    eg_i32 lo = 0, hi = n_frames - 1;
    while (lo < hi) {
        const eg_i32 mid = (lo + hi + 1) >> 1;
        if (frames[mid].block_start <= block) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    return lo;
}

// Region of the frame's local block `local`; false when it is empty (tiles of unequal size,
// or a frame smaller than the grid).
EG_HD bool eg_region(const EgFrameDesc& d, eg_i32 local, EgRegion& g) {
    if (local < 0 || local >= d.block_count) return false;
    const eg_i32 per_tile = d.tile_bx * d.tile_by;
    const eg_i32 tile = local / per_tile;
    const eg_i32 sub = local - tile * per_tile;
    const eg_i32 by = sub / d.tile_bx;
    const eg_i32 bx = sub - by * d.tile_bx;
    const eg_i32 ti = tile / d.grid_cols;
    const eg_i32 tj = tile - ti * d.grid_cols;
    const eg_i32 r1 = eg_bound(ti + 1, d.height, d.grid_rows);
    const eg_i32 c1 = eg_bound(tj + 1, d.width, d.grid_cols);
    g.tile = tile;
    g.ys = eg_bound(ti, d.height, d.grid_rows) + by * d.block_rows;
    g.ye = eg_min(g.ys + d.block_rows, r1);
    g.xs = eg_bound(tj, d.width, d.grid_cols) + bx * EG_BW;
    g.xe = eg_min(g.xs + EG_BW, c1);
    return g.ys < g.ye && g.xs < g.xe;
}

// Interior (Laplacian / noise centre) pixels of the region: [iy0, iy1) x [ix0, ix1).
EG_HD eg_i64 eg_interior_count(const EgFrameDesc& d, const EgRegion& g) {
    const eg_i32 ih = eg_min(g.ye, d.height - 1) - eg_max(g.ys, 1);
    const eg_i32 iw = eg_min(g.xe, d.width - 1) - eg_max(g.xs, 1);
    return (ih > 0 && iw > 0) ? (eg_i64)ih * iw : 0;
}

// Shared luma tile: row 0 is frame row ys-1, column EG_SH_PAD is frame column xbase.
EG_HD eg_i32 eg_sh_index(const EgRegion& g, eg_i32 y, eg_i32 x) {
    return (y - g.ys + 1) * EG_SH_PITCH + (x - ((g.xs >> 4) << 4)) + EG_SH_PAD;
}

// Luma (full range) of one pixel, scalar loads (halo columns).
EG_HD eg_u32 eg_luma_at(const EgFrameDesc& d, eg_i32 y, eg_i32 x) {
    const eg_u8* row = reinterpret_cast<const eg_u8*>(d.src + (eg_u64)((eg_i64)y * d.pitch));
    if (d.format == EG_FMT_NV12) {
        const eg_u32 yr = row[x];
        return d.range == EG_RANGE_LIMITED ? eg_limited_to_full(yr) : yr;
    }
    const eg_u8* p = row + 3 * x;
    return eg_luma(p[0], p[1], p[2]);
}

// ---------------------------------------------------------------------------------------
// Phase 1: every chunk of rows [ys-1, ye+1) (clipped to the frame): luma into shared
// memory; for rows and columns of the region also colour stats, histogram, diff_prev and
// the luma copy for the next frame. Thread `tid` takes items tid, tid + EG_THREADS, ...
// ---------------------------------------------------------------------------------------
EG_HD void eg_phase1(const EgFrameDesc& d, const EgRegion& g, const eg_i32* q, eg_u8* s_luma, eg_u8* s_hist,
                     EgAcc& a, eg_i32 tid) {
    const eg_i32 W = d.width;
    const eg_i32 H = d.height;
    const eg_i32 ca = g.xs >> 4;
    const eg_i32 nch = ((g.xe + 15) >> 4) - ca;
    const eg_i32 ry0 = eg_max(g.ys - 1, 0);
    const eg_i32 ry1 = eg_min(g.ye + 1, H);
    const eg_i32 items = (ry1 - ry0) * nch;
    const bool nv12 = d.format == EG_FMT_NV12;
    const bool limited = d.range == EG_RANGE_LIMITED;
    const bool src_vec = ((d.src | (eg_u64)d.pitch) & 15u) == 0u &&
                         (!nv12 || ((d.chroma | (eg_u64)d.chroma_pitch) & 15u) == 0u);
    const bool luma_vec = ((d.prev_luma | d.luma_out | (eg_u64)d.luma_pitch) & 15u) == 0u;
    const eg_i32 chroma_bytes = (W + 1) & ~1;  // one U,V pair per two columns

    // Not unrolled: the loads of one 16-pixel item (48 bytes) are already independent, and
    // an unrolled item loop costs registers (occupancy) the memory system needs more.
    EG_NO_UNROLL
    for (eg_i32 it = tid; it < items; it += EG_THREADS) {
        const eg_i32 row = it / nch;
        const eg_i32 y = ry0 + row;
        const eg_i32 x0 = (ca + (it - row * nch)) << 4;
        const eg_i32 nvalid = eg_min(EG_CHUNK, W - x0);
        const bool full = nvalid == EG_CHUNK;
        eg_u32 mask = 0u;  // pixels of this chunk inside the region (stats pixels)
        if (y >= g.ys && y < g.ye) {
            const eg_i32 lo = eg_max(g.xs - x0, 0);
            const eg_i32 hi = eg_min(g.xe - x0, EG_CHUNK);
            mask = ((1u << hi) - 1u) & ~((1u << lo) - 1u);
        }
        const eg_u8* src_row = reinterpret_cast<const eg_u8*>(d.src + (eg_u64)((eg_i64)y * d.pitch));
        eg_u32 lw[4] = {0u, 0u, 0u, 0u};  // luma of the 16 pixels, packed
        if (!nv12) {
            eg_u32 w[12];
            eg_load_words<12>(src_row + 3 * x0, src_vec && full, 3 * nvalid, w);
            EG_UNROLL
            for (int k = 0; k < EG_CHUNK; ++k) {
                const eg_u32 b = eg_byte(w[(3 * k) >> 2], (3 * k) & 3);
                const eg_u32 gg = eg_byte(w[(3 * k + 1) >> 2], (3 * k + 1) & 3);
                const eg_u32 r = eg_byte(w[(3 * k + 2) >> 2], (3 * k + 2) & 3);
                const eg_u32 yv = eg_luma(b, gg, r);
                lw[k >> 2] |= yv << (8 * (k & 3));
                if ((mask >> k) & 1u) {
                    eg_acc_pixel(a, yv, eg_saturation(b, gg, r, q), b, gg, r);
                    s_hist[(yv >> EG_HIST_SHIFT) * EG_THREADS + tid] += 1;
                }
            }
        } else {
            eg_u32 yw[4];
            eg_load_words<4>(src_row + x0, src_vec && full, nvalid, yw);
            eg_u32 cw[4] = {0u, 0u, 0u, 0u};
            if (mask != 0u) {
                const eg_u8* c_row =
                    reinterpret_cast<const eg_u8*>(d.chroma + (eg_u64)((eg_i64)(y >> 1) * d.chroma_pitch));
                eg_load_words<4>(c_row + x0, src_vec && full, eg_min(EG_CHUNK, chroma_bytes - x0), cw);
            }
            EG_UNROLL
            for (int k = 0; k < EG_CHUNK; ++k) {
                const eg_u32 yr = eg_byte(yw[k >> 2], k & 3);
                const eg_u32 yv = limited ? eg_limited_to_full(yr) : yr;
                lw[k >> 2] |= yv << (8 * (k & 3));
                if ((mask >> k) & 1u) {
                    eg_u32 b, gg, r;
                    eg_nv12_bgr(yr, eg_byte(cw[k >> 2], k & 2), eg_byte(cw[k >> 2], (k & 2) | 1), limited, b, gg, r);
                    eg_acc_pixel(a, yv, eg_saturation(b, gg, r, q), b, gg, r);
                    s_hist[(yv >> EG_HIST_SHIFT) * EG_THREADS + tid] += 1;
                }
            }
        }
        eg_store16(s_luma + eg_sh_index(g, y, x0), lw);
        if (mask == 0u) continue;

        const bool whole = mask == 0xFFFFu && luma_vec;
        const eg_i64 loff = (eg_i64)y * d.luma_pitch + x0;
        if (d.prev_luma != 0u) {
            eg_u32 pw[4];
            eg_load_prev(reinterpret_cast<const eg_u8*>(d.prev_luma + (eg_u64)loff), whole, mask, pw);
            eg_u32 diff = 0u;
            EG_UNROLL
            for (int k = 0; k < EG_CHUNK; ++k) {
                const eg_u32 yv = eg_byte(lw[k >> 2], k & 3);
                const eg_u32 pv = eg_byte(pw[k >> 2], k & 3);
                diff += ((mask >> k) & 1u) ? (yv > pv ? yv - pv : pv - yv) : 0u;
            }
            a.diff += diff;
        }
        if (d.luma_out != 0u) {
            eg_u8* lp = reinterpret_cast<eg_u8*>(d.luma_out + (eg_u64)loff);
            if (whole) {
                eg_store16(lp, lw);
            } else {
                EG_UNROLL
                for (int k = 0; k < EG_CHUNK; ++k) {
                    if ((mask >> k) & 1u) lp[k] = (eg_u8)eg_byte(lw[k >> 2], k & 3);
                }
            }
        }
    }
}

// Halo columns xs-1 and xe when they fall outside the chunks phase 1 loaded (region edge on a
// 16-pixel boundary): scalar luma of rows [ys-1, ye+1).
EG_HD void eg_phase1_halo(const EgFrameDesc& d, const EgRegion& g, eg_u8* s_luma, eg_i32 tid) {
    const eg_i32 ry0 = eg_max(g.ys - 1, 0);
    const eg_i32 n = eg_min(g.ye + 1, d.height) - ry0;
    const bool left = (g.xs & 15) == 0 && g.xs > 0;
    const bool right = (g.xe & 15) == 0 && g.xe < d.width;
    for (eg_i32 it = tid; it < 2 * n; it += EG_THREADS) {
        const bool is_right = it >= n;
        if (is_right ? !right : !left) continue;
        const eg_i32 y = ry0 + (is_right ? it - n : it);
        const eg_i32 x = is_right ? g.xe : g.xs - 1;
        s_luma[eg_sh_index(g, y, x)] = (eg_u8)eg_luma_at(d, y, x);
    }
}

// ---------------------------------------------------------------------------------------
// Phase 2: Laplacian and noise response of the region's interior pixels from the shared
// luma tile, four horizontally adjacent pixels per item (3 rows x 3 words).
// ---------------------------------------------------------------------------------------
EG_HD void eg_phase2(const EgFrameDesc& d, const EgRegion& g, const eg_u8* s_luma, EgAcc& a, eg_i32 tid) {
    const eg_i32 iy0 = eg_max(g.ys, 1);
    const eg_i32 iy1 = eg_min(g.ye, d.height - 1);
    const eg_i32 ix0 = eg_max(g.xs, 1);
    const eg_i32 ix1 = eg_min(g.xe, d.width - 1);
    if (iy0 >= iy1 || ix0 >= ix1) return;
    const eg_i32 gx0 = ix0 >> 2;
    const eg_i32 ng = ((ix1 + 3) >> 2) - gx0;
    const eg_i32 total = (iy1 - iy0) * ng;
    for (eg_i32 it = tid; it < total; it += EG_THREADS) {
        const eg_i32 row = it / ng;
        const eg_i32 y = iy0 + row;
        const eg_i32 x4 = (gx0 + it - row * ng) << 2;
        const eg_u8* c = s_luma + eg_sh_index(g, y, x4);
        // Columns x4-1 .. x4+4 of rows y-1 (t), y (m), y+1 (b).
        eg_u32 t[6], m[6], bt[6];
        {
            const eg_u32 tl = eg_load4(c - EG_SH_PITCH - 4), tc = eg_load4(c - EG_SH_PITCH),
                         tr = eg_load4(c - EG_SH_PITCH + 4);
            const eg_u32 ml = eg_load4(c - 4), mc = eg_load4(c), mr = eg_load4(c + 4);
            const eg_u32 bl = eg_load4(c + EG_SH_PITCH - 4), bc = eg_load4(c + EG_SH_PITCH),
                         br = eg_load4(c + EG_SH_PITCH + 4);
            t[0] = eg_byte(tl, 3);
            m[0] = eg_byte(ml, 3);
            bt[0] = eg_byte(bl, 3);
            EG_UNROLL
            for (int k = 0; k < 4; ++k) {
                t[k + 1] = eg_byte(tc, k);
                m[k + 1] = eg_byte(mc, k);
                bt[k + 1] = eg_byte(bc, k);
            }
            t[5] = eg_byte(tr, 0);
            m[5] = eg_byte(mr, 0);
            bt[5] = eg_byte(br, 0);
        }
        const eg_i32 lo = eg_max(ix0 - x4, 0);
        const eg_i32 hi = eg_min(ix1 - x4, 4);
        EG_UNROLL
        for (int k = 0; k < 4; ++k) {
            if (k >= lo && k < hi) {
                const eg_i32 vl = (eg_i32)(t[k] + bt[k]);
                const eg_i32 vc = (eg_i32)(t[k + 1] + bt[k + 1]);
                const eg_i32 vr = (eg_i32)(t[k + 2] + bt[k + 2]);
                eg_acc_window(a, (eg_i32)m[k + 1], vc + (eg_i32)(m[k] + m[k + 2]), vl + vr);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Block totals. warp_sums[w * EG_NACC + i] are the 32-bit sums of warp w (the kernel's
// shuffle reduction; the host harness adds the same lanes with the same 32-bit wrap).
// ---------------------------------------------------------------------------------------
EG_HD eg_u64 eg_block_field(eg_i32 f, const EgFrameDesc& d, const EgRegion& g, const eg_u32* warp_sums) {
    if (f == EG_F_N) return (eg_u64)((eg_i64)(g.ye - g.ys) * (g.xe - g.xs));
    if (f == EG_F_M) return (eg_u64)eg_interior_count(d, g);
    const eg_i32 i = f - 2;
    if (i == EG_A_SUM_L) {
        eg_i64 s = 0;
        for (eg_i32 w = 0; w < EG_WARPS; ++w) s += (eg_i64)(eg_i32)warp_sums[w * EG_NACC + i];
        return (eg_u64)s;  // two's complement: atomicAdd of u64 adds signed values correctly
    }
    eg_u64 s = 0;
    for (eg_i32 w = 0; w < EG_WARPS; ++w) s += warp_sums[w * EG_NACC + i];
    return s;
}

// Histogram bin `bin`, part `part` (0..7) of the per-thread byte counters: 32 threads' bytes.
EG_HD eg_u32 eg_hist_part(const eg_u8* s_hist, eg_i32 bin, eg_i32 part) {
    const eg_u8* h = s_hist + bin * EG_THREADS + part * 32;
    eg_u32 c = 0u;
    EG_UNROLL
    for (int i = 0; i < 8; ++i) c += eg_byte_sum(eg_load4(h + 4 * i));
    return c;
}

#endif  // EDGE_GUARD_FRAME_STATS_MATH_H
