// hilt's BLAS matmuls for the Relax VM, in destination-passing style (output last), so a bundle can
// call them with R.call_dps_packed: OpenBLAS's sgemm runs the weight matmuls at 2x the GFLOP/s of
// hilt's TensorIR schedule on the demo shapes. Linked with a static OpenBLAS into libhilt_blas.so.
//
//   hilt.blas.matmul(A[M,K], W, transposed, C[M,N])          C = A @ W   (W [K,N], or [N,K] if transposed)
//   hilt.blas.matmul_bias(A[M,K], W, b[N], transposed, C[M,N]) C = A @ W + b
//   hilt.blas.set_num_threads(n), hilt.blas.config() -> OpenBLAS's build string
#include <dlpack/dlpack.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/reflection/registry.h>
#include <tvm/ffi/string.h>

#include <cstdint>
#include <cstring>

extern "C" {
#include <cblas.h>
}

namespace {

float* Floats(DLTensor* t, int ndim, const char* what) {
  TVM_FFI_ICHECK_EQ(t->ndim, ndim) << "hilt.blas: " << what << " must have " << ndim << " dimensions";
  TVM_FFI_ICHECK(t->dtype.code == kDLFloat && t->dtype.bits == 32 && t->dtype.lanes == 1)
      << "hilt.blas: " << what << " must be float32";
  if (t->strides != nullptr) {
    int64_t expected = 1;
    for (int i = ndim - 1; i >= 0; --i) {
      TVM_FFI_ICHECK_EQ(t->strides[i], expected) << "hilt.blas: " << what << " must be compact";
      expected *= t->shape[i];
    }
  }
  return reinterpret_cast<float*>(static_cast<char*>(t->data) + t->byte_offset);
}

void Gemm(DLTensor* a, DLTensor* w, DLTensor* bias, DLTensor* c, bool transposed) {
  const float* pa = Floats(a, 2, "input");
  const float* pw = Floats(w, 2, "weight");
  float* pc = Floats(c, 2, "output");
  const int64_t m = a->shape[0], k = a->shape[1], n = c->shape[1];
  TVM_FFI_ICHECK_EQ(c->shape[0], m) << "hilt.blas: output rows";
  TVM_FFI_ICHECK_EQ(w->shape[transposed ? 1 : 0], k) << "hilt.blas: weight rows";
  TVM_FFI_ICHECK_EQ(w->shape[transposed ? 0 : 1], n) << "hilt.blas: weight columns";
  float beta = 0.0f;
  if (bias != nullptr) {
    const float* pb = Floats(bias, 1, "bias");
    TVM_FFI_ICHECK_EQ(bias->shape[0], n) << "hilt.blas: bias length";
    for (int64_t i = 0; i < m; ++i) std::memcpy(pc + i * n, pb, static_cast<size_t>(n) * sizeof(float));
    beta = 1.0f;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, transposed ? CblasTrans : CblasNoTrans, static_cast<int>(m),
              static_cast<int>(n), static_cast<int>(k), 1.0f, pa, static_cast<int>(k), pw,
              static_cast<int>(transposed ? k : n), beta, pc, static_cast<int>(n));
}

}  // namespace

TVM_FFI_STATIC_INIT_BLOCK() {
  namespace refl = tvm::ffi::reflection;
  refl::GlobalDef()
      .def("hilt.blas.matmul",
           [](DLTensor* a, DLTensor* w, bool transposed, DLTensor* c) { Gemm(a, w, nullptr, c, transposed); })
      .def("hilt.blas.matmul_bias",
           [](DLTensor* a, DLTensor* w, DLTensor* b, bool transposed, DLTensor* c) {
             Gemm(a, w, b, c, transposed);
           })
      .def("hilt.blas.set_num_threads", [](int n) { openblas_set_num_threads(n); })
      .def("hilt.blas.config", []() { return tvm::ffi::String(openblas_get_config()); });
}
