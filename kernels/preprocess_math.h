// Per-pixel arithmetic of the model-input preprocessing kernel (preprocess.cu).
//
// Everything here is __host__ __device__: the kernel calls it on the GPU, and
// tests/host_harness/preprocess_host.cpp compiles the very same functions with g++ and runs
// them over every output pixel, so the arithmetic is checked against the CPU preprocessing
// (agent/model/preprocess.py: cv2.resize + NumPy) on machines without a GPU.
//
// What one output pixel (x, y) of one batch slot gets:
//   1. its "canvas" value per channel, 0..255: inside the content box (stretch: the whole
//      input; letterbox: the resized image) the bilinear sample of the BGR uint8 source,
//      outside it the pad value. The sample reproduces OpenCV's INTER_LINEAR for 8-bit
//      images: half-pixel centres, x = (dx + 0.5) * scale - 0.5 in double then float,
//      11-bit fixed-point weights, the vertical pass with OpenCV's SIMD rounding
//      (((b0 * (h0 >> 4)) >> 16) + ((b1 * (h1 >> 4)) >> 16) + 2) >> 2, columns clamped
//      with weight 0 and rows clamped with their weights kept, as in cv::resize.
//   2. an optional feature squeeze of the canvas (never combined): bit-depth reduction
//      to `bits` bits, v' = round(round(v * L / 255) * 255 / L) with L = 2^bits - 1 (halves
//      up), or the 3x3 median of the canvas with replicated borders (cv2.medianBlur).
//   3. channel order (model channel c reads source channel c, or 2 - c for RGB), then
//      out = v * mul[c] + add[c] in float32 with separate roundings (no FMA: the CPU path
//      multiplies then adds), stored as float32, float16 (round to nearest even) or uint8.
//
// No #include here: NVRTC compiles this without system headers.
#ifndef EDGE_GUARD_PREPROCESS_MATH_H
#define EDGE_GUARD_PREPROCESS_MATH_H

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define EGP_HD __host__ __device__ __forceinline__
#define EGP_UNROLL _Pragma("unroll")
#else
#define EGP_HD inline
#define EGP_UNROLL _Pragma("GCC unroll 16")
#endif

typedef unsigned char egp_u8;
typedef unsigned short egp_u16;
typedef unsigned int egp_u32;
typedef int egp_i32;
typedef long long egp_i64;
typedef unsigned long long egp_u64;

#define EGP_THREADS 256

// flags: bit 0 RGB output order; bit 1 NHWC layout; bits 2-3 dtype; bits 4-5 squeeze.
#define EGP_FLAG_RGB 1
#define EGP_FLAG_NHWC 2
#define EGP_DTYPE_SHIFT 2
#define EGP_DTYPE_F32 0
#define EGP_DTYPE_F16 1
#define EGP_DTYPE_U8 2
#define EGP_SQUEEZE_SHIFT 4
#define EGP_SQUEEZE_NONE 0
#define EGP_SQUEEZE_BITS 1
#define EGP_SQUEEZE_MEDIAN3 2

// OpenCV's INTER_RESIZE_COEF_BITS: interpolation weights are integers summing to 2048.
#define EGP_COEF_SCALE 2048.0f

// One batch slot: one source frame -> one model input (agent/gpu/preprocess.py: DESC_DTYPE).
struct EgpDesc {
    egp_u64 src;          //   0 BGR uint8 pixels, 3 bytes each (device address)
    egp_u64 dst;          //   8 first element of this slot's input tensor (device address)
    egp_i64 src_pitch;    //  16 bytes from one source row to the next
    double scale_x;       //  24 source pixels per content pixel, 1 / (box_w / src_w) as cv::resize
    double scale_y;       //  32
    float mul[3];         //  40 out = v * mul[c] + add[c], c in model channel order
    float add[3];         //  52
    egp_i32 src_w;        //  64
    egp_i32 src_h;        //  68
    egp_i32 dst_w;        //  72 model input width
    egp_i32 dst_h;        //  76
    egp_i32 box_x;        //  80 content box inside the model input (letterbox)
    egp_i32 box_y;        //  84
    egp_i32 box_w;        //  88
    egp_i32 box_h;        //  92
    egp_i32 block_start;  //  96 first block of this slot in the 1-D grid
    egp_i32 flags;        // 100 EGP_FLAG_* | dtype << 2 | squeeze << 4
    egp_i32 pad_value;    // 104 0..255
    egp_i32 bits;         // 108 bit depth of EGP_SQUEEZE_BITS (1..8)
};                        // 112 bytes

// --- exact arithmetic helpers (no FMA contraction, as on the CPU) --------------------------
EGP_HD double egp_dmul(double a, double b) {
#if defined(__CUDA_ARCH__)
    return __dmul_rn(a, b);
#else
    return a * b;
#endif
}

EGP_HD double egp_dsub(double a, double b) {
#if defined(__CUDA_ARCH__)
    return __dsub_rn(a, b);
#else
    return a - b;
#endif
}

EGP_HD float egp_fmul(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}

EGP_HD float egp_fadd(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fadd_rn(a, b);
#else
    return a + b;
#endif
}

EGP_HD egp_u32 egp_float_bits(float f) {
#if defined(__CUDA_ARCH__)
    return __float_as_uint(f);
#else
    egp_u32 u;
    __builtin_memcpy(&u, &f, sizeof(u));
    return u;
#endif
}

EGP_HD egp_i32 egp_floorf(float f) {  // |f| < 2^31
    egp_i32 i = (egp_i32)f;
    return ((float)i > f) ? i - 1 : i;
}

// Round a non-negative float to the nearest integer, ties to even (cvRound, __float2int_rn).
EGP_HD egp_i32 egp_rint_pos(float v) {
    egp_i32 i = (egp_i32)v;
    const float r = v - (float)i;
    if (r > 0.5f || (r == 0.5f && (i & 1))) ++i;
    return i;
}

// float32 -> IEEE binary16 bits, round to nearest even (numpy's astype(float16)).
EGP_HD egp_u16 egp_f32_to_f16(float f) {
    const egp_u32 x = egp_float_bits(f);
    const egp_u32 sign = (x >> 16) & 0x8000u;
    egp_u32 mant = x & 0x7FFFFFu;
    const egp_i32 exp = (egp_i32)((x >> 23) & 0xFFu);
    if (exp == 0xFF) return (egp_u16)(sign | 0x7C00u | (mant ? 0x200u | (mant >> 13) : 0u));
    const egp_i32 e = exp - 127 + 15;
    if (e >= 0x1F) return (egp_u16)(sign | 0x7C00u);  // overflow: infinity
    if (e <= 0) {                                      // half subnormal (or zero)
        if (e < -10) return (egp_u16)sign;             // below half the smallest subnormal
        mant |= 0x800000u;
        const egp_u32 shift = (egp_u32)(14 - e);
        egp_u32 h = mant >> shift;
        const egp_u32 rem = mant & ((1u << shift) - 1u);
        const egp_u32 half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (h & 1u))) ++h;
        return (egp_u16)(sign | h);
    }
    egp_u32 h = ((egp_u32)e << 10) | (mant >> 13);
    const egp_u32 rem = mant & 0x1FFFu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // a carry into the exponent is right
    return (egp_u16)(sign | h);
}

// --- geometry: cv::resize INTER_LINEAR coordinates and weights -----------------------------
struct EgpAxis {
    egp_i32 i0, i1;  // source indices
    egp_i32 w0, w1;  // fixed-point weights (sum 2048)
};

EGP_HD float egp_src_coord(egp_i32 d, double scale) {
    return (float)egp_dsub(egp_dmul((double)d + 0.5, scale), 0.5);
}

// Columns: an out-of-range sample is clamped with its fraction set to 0 (cv::resize xofs).
EGP_HD EgpAxis egp_axis_x(egp_i32 d, double scale, egp_i32 n_src) {
    const float f = egp_src_coord(d, scale);
    egp_i32 s = egp_floorf(f);
    float fr = f - (float)s;
    if (s < 0) {
        s = 0;
        fr = 0.0f;
    }
    if (s >= n_src - 1) {
        s = n_src - 1;
        fr = 0.0f;
    }
    EgpAxis a;
    a.i0 = s;
    a.i1 = (s + 1 < n_src) ? s + 1 : s;
    a.w0 = egp_rint_pos(egp_fmul(1.0f - fr, EGP_COEF_SCALE));
    a.w1 = egp_rint_pos(egp_fmul(fr, EGP_COEF_SCALE));
    return a;
}

// Rows: both source rows are clamped into the image, the weights are kept (cv::resize yofs).
EGP_HD EgpAxis egp_axis_y(egp_i32 d, double scale, egp_i32 n_src) {
    const float f = egp_src_coord(d, scale);
    const egp_i32 s = egp_floorf(f);
    const float fr = f - (float)s;
    EgpAxis a;
    a.i0 = s < 0 ? 0 : (s > n_src - 1 ? n_src - 1 : s);
    a.i1 = s + 1 < 0 ? 0 : (s + 1 > n_src - 1 ? n_src - 1 : s + 1);
    a.w0 = egp_rint_pos(egp_fmul(1.0f - fr, EGP_COEF_SCALE));
    a.w1 = egp_rint_pos(egp_fmul(fr, EGP_COEF_SCALE));
    return a;
}

// The three channels (BGR) of canvas pixel (x, y): resized source inside the box, pad outside.
EGP_HD void egp_canvas_px(const EgpDesc& d, egp_i32 x, egp_i32 y, egp_i32 v[3]) {
    const egp_i32 cx = x - d.box_x;
    const egp_i32 cy = y - d.box_y;
    if (cx < 0 || cy < 0 || cx >= d.box_w || cy >= d.box_h) {
        v[0] = v[1] = v[2] = d.pad_value;
        return;
    }
    const EgpAxis ax = egp_axis_x(cx, d.scale_x, d.src_w);
    const EgpAxis ay = egp_axis_y(cy, d.scale_y, d.src_h);
    const egp_u8* r0 = (const egp_u8*)(d.src + (egp_u64)((egp_i64)ay.i0 * d.src_pitch));
    const egp_u8* r1 = (const egp_u8*)(d.src + (egp_u64)((egp_i64)ay.i1 * d.src_pitch));
    EGP_UNROLL
    for (egp_i32 c = 0; c < 3; ++c) {
        // horizontal pass: <= 255 * 2048; vertical pass in OpenCV's SIMD rounding (int32 exact)
        const egp_i32 h0 = (egp_i32)r0[ax.i0 * 3 + c] * ax.w0 + (egp_i32)r0[ax.i1 * 3 + c] * ax.w1;
        const egp_i32 h1 = (egp_i32)r1[ax.i0 * 3 + c] * ax.w0 + (egp_i32)r1[ax.i1 * 3 + c] * ax.w1;
        egp_i32 s = (((ay.w0 * (h0 >> 4)) >> 16) + ((ay.w1 * (h1 >> 4)) >> 16) + 2) >> 2;
        v[c] = s < 0 ? 0 : (s > 255 ? 255 : s);
    }
}

// --- feature squeezing ---------------------------------------------------------------------
// Bit-depth reduction to `bits` (1..8) bits on the 0..255 scale, halves rounded up.
EGP_HD egp_i32 egp_bit_depth(egp_i32 v, egp_i32 bits) {
    const egp_i32 levels = (1 << bits) - 1;
    const egp_i32 q = (2 * v * levels + 255) / 510;  // round(v * L / 255)
    return (2 * q * 255 + levels) / (2 * levels);     // round(q * 255 / L)
}

#define EGP_SORT2(a, b)    \
    {                      \
        if ((a) > (b)) {   \
            egp_i32 t = a; \
            a = b;         \
            b = t;         \
        }                  \
    }

// Median of 9 values: 19 compare-exchanges (the classic opt_med9 network); p is clobbered.
EGP_HD egp_i32 egp_median9(egp_i32 p[9]) {
    EGP_SORT2(p[1], p[2]);
    EGP_SORT2(p[4], p[5]);
    EGP_SORT2(p[7], p[8]);
    EGP_SORT2(p[0], p[1]);
    EGP_SORT2(p[3], p[4]);
    EGP_SORT2(p[6], p[7]);
    EGP_SORT2(p[1], p[2]);
    EGP_SORT2(p[4], p[5]);
    EGP_SORT2(p[7], p[8]);
    EGP_SORT2(p[0], p[3]);
    EGP_SORT2(p[5], p[8]);
    EGP_SORT2(p[4], p[7]);
    EGP_SORT2(p[3], p[6]);
    EGP_SORT2(p[1], p[4]);
    EGP_SORT2(p[2], p[5]);
    EGP_SORT2(p[4], p[7]);
    EGP_SORT2(p[4], p[2]);
    EGP_SORT2(p[6], p[4]);
    EGP_SORT2(p[4], p[2]);
    return p[4];
}

// 3x3 median of the canvas around (x, y), borders replicated (cv2.medianBlur, ksize 3).
EGP_HD void egp_median3_px(const EgpDesc& d, egp_i32 x, egp_i32 y, egp_i32 v[3]) {
    egp_i32 win[3][9];
    egp_i32 k = 0;
    EGP_UNROLL
    for (egp_i32 dy = -1; dy <= 1; ++dy) {
        egp_i32 yy = y + dy;
        yy = yy < 0 ? 0 : (yy >= d.dst_h ? d.dst_h - 1 : yy);
        EGP_UNROLL
        for (egp_i32 dx = -1; dx <= 1; ++dx) {
            egp_i32 xx = x + dx;
            xx = xx < 0 ? 0 : (xx >= d.dst_w ? d.dst_w - 1 : xx);
            egp_i32 px[3];
            egp_canvas_px(d, xx, yy, px);
            win[0][k] = px[0];
            win[1][k] = px[1];
            win[2][k] = px[2];
            ++k;
        }
    }
    EGP_UNROLL
    for (egp_i32 c = 0; c < 3; ++c) v[c] = egp_median9(win[c]);
}

// --- one output pixel ----------------------------------------------------------------------
EGP_HD void egp_pixel(const EgpDesc& d, egp_i32 x, egp_i32 y) {
    const egp_i32 squeeze = (d.flags >> EGP_SQUEEZE_SHIFT) & 3;
    egp_i32 v[3];
    if (squeeze == EGP_SQUEEZE_MEDIAN3) {
        egp_median3_px(d, x, y, v);
    } else {
        egp_canvas_px(d, x, y, v);
        if (squeeze == EGP_SQUEEZE_BITS) {
            EGP_UNROLL
            for (egp_i32 c = 0; c < 3; ++c) v[c] = egp_bit_depth(v[c], d.bits);
        }
    }
    const egp_i32 dtype = (d.flags >> EGP_DTYPE_SHIFT) & 3;
    const bool rgb = (d.flags & EGP_FLAG_RGB) != 0;
    const bool nhwc = (d.flags & EGP_FLAG_NHWC) != 0;
    const egp_i64 plane = (egp_i64)d.dst_w * d.dst_h;
    const egp_i64 pix = (egp_i64)y * d.dst_w + x;
    // model channel order; selected without a run-time array index (keeps v in registers)
    const egp_i32 o[3] = {rgb ? v[2] : v[0], v[1], rgb ? v[0] : v[2]};
    EGP_UNROLL
    for (egp_i32 c = 0; c < 3; ++c) {
        const egp_i32 value = o[c];
        const egp_i64 idx = nhwc ? pix * 3 + c : (egp_i64)c * plane + pix;
        if (dtype == EGP_DTYPE_U8) {
            ((egp_u8*)d.dst)[idx] = (egp_u8)value;
        } else {
            const float out = egp_fadd(egp_fmul((float)value, d.mul[c]), d.add[c]);
            if (dtype == EGP_DTYPE_F16) {
                ((egp_u16*)d.dst)[idx] = egp_f32_to_f16(out);
            } else {
                ((float*)d.dst)[idx] = out;
            }
        }
    }
}

// The slot that owns 1-D block `block`: the last slot whose block_start <= block.
EGP_HD egp_i32 egp_find_slot(const EgpDesc* descs, egp_i32 n, egp_i32 block) {
    egp_i32 lo = 0;
    egp_i32 hi = n - 1;
    while (lo < hi) {
        const egp_i32 mid = (lo + hi + 1) >> 1;
        if (descs[mid].block_start <= block) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    return lo;
}

#endif  // EDGE_GUARD_PREPROCESS_MATH_H
