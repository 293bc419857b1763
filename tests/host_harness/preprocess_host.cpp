// Host replay of kernels/preprocess.cu: the same __host__ __device__ functions from
// kernels/preprocess_math.h, run for every block and thread of the 1-D grid exactly as the
// kernel maps them (slot lookup included). Built by tests/test_gpu_preprocess.py with g++
// (-ffp-contract=off: the kernel forbids FMA contraction too) and called through ctypes.
#include <cstddef>

#include "preprocess_math.h"

extern "C" {

// One emulated launch of `blocks` blocks over `n` slot descriptors (host pointers inside).
void egp_host_preprocess(const EgpDesc* descs, int n, int blocks) {
    for (int b = 0; b < blocks; ++b) {
        const EgpDesc& d = descs[egp_find_slot(descs, n, b)];
        for (int t = 0; t < EGP_THREADS; ++t) {
            const egp_i64 p = (egp_i64)(b - d.block_start) * EGP_THREADS + t;
            if (p >= (egp_i64)d.dst_w * d.dst_h) continue;
            egp_pixel(d, (egp_i32)(p % d.dst_w), (egp_i32)(p / d.dst_w));
        }
    }
}

// Byte offsets of EgpDesc's fields in declaration order, then sizeof(EgpDesc).
void egp_host_desc_layout(long long* out) {
    int k = 0;
    out[k++] = offsetof(EgpDesc, src);
    out[k++] = offsetof(EgpDesc, dst);
    out[k++] = offsetof(EgpDesc, src_pitch);
    out[k++] = offsetof(EgpDesc, scale_x);
    out[k++] = offsetof(EgpDesc, scale_y);
    out[k++] = offsetof(EgpDesc, mul);
    out[k++] = offsetof(EgpDesc, add);
    out[k++] = offsetof(EgpDesc, src_w);
    out[k++] = offsetof(EgpDesc, src_h);
    out[k++] = offsetof(EgpDesc, dst_w);
    out[k++] = offsetof(EgpDesc, dst_h);
    out[k++] = offsetof(EgpDesc, box_x);
    out[k++] = offsetof(EgpDesc, box_y);
    out[k++] = offsetof(EgpDesc, box_w);
    out[k++] = offsetof(EgpDesc, box_h);
    out[k++] = offsetof(EgpDesc, block_start);
    out[k++] = offsetof(EgpDesc, flags);
    out[k++] = offsetof(EgpDesc, pad_value);
    out[k++] = offsetof(EgpDesc, bits);
    out[k++] = sizeof(EgpDesc);
}

// float32 -> float16 bits for n values (the kernel's conversion).
void egp_host_f16(const float* in, unsigned short* out, long long n) {
    for (long long i = 0; i < n; ++i) out[i] = egp_f32_to_f16(in[i]);
}

// Median of 9 values (the kernel's sorting network), for exhaustive-ish checks.
int egp_host_median9(const int* values) {
    int p[9];
    for (int i = 0; i < 9; ++i) p[i] = values[i];
    return egp_median9(p);
}

// EGP_THREADS, for the Python constants check.
int egp_host_threads(void) { return EGP_THREADS; }

}  // extern "C"
