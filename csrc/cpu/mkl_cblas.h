// The MKL CBLAS functions fast_s2s calls beyond at::mm, declared weak: resolved from torch's
// CPU library where it links MKL (x86 builds), null elsewhere, so the extension loads on every
// torch build (check for null before a call). The enum values and LP64 integers are those of
// torch's MKL (mkl_cblas.h). Used by gemm.cpp (packed sgemm) and gemm_bf16.cpp (bf16 GEMM).
#pragma once

#include <cstddef>
#include <cstdint>

extern "C" {
size_t cblas_sgemm_pack_get_size(int identifier, int m, int n, int k) __attribute__((weak));
void cblas_sgemm_pack(int layout, int identifier, int trans, int m, int n, int k, float alpha,
                      const float* src, int ld, float* dest) __attribute__((weak));
void cblas_sgemm_compute(int layout, int transa, int transb, int m, int n, int k, const float* a,
                         int lda, const float* b, int ldb, float beta, float* c, int ldc)
    __attribute__((weak));
void cblas_gemm_bf16bf16f32(int layout, int transa, int transb, int m, int n, int k, float alpha,
                            const uint16_t* a, int lda, const uint16_t* b, int ldb, float beta,
                            float* c, int ldc) __attribute__((weak));
void MKL_Get_Version_String(char* buffer, int len) __attribute__((weak));
}

namespace fast_s2s::cpu::mkl {

inline constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112, kPacked = 151, kBMatrix = 162;

}  // namespace fast_s2s::cpu::mkl
