/* hilt: the board runtime has no CUDA, so NVTX ranges are no-ops. */
#ifndef HILT_COMPAT_TVM_SUPPORT_CUDA_NVTX_H_
#define HILT_COMPAT_TVM_SUPPORT_CUDA_NVTX_H_

#include <string>

namespace tvm {
namespace support {

class NVTXScopedRange {
 public:
  explicit NVTXScopedRange(const char*) {}
  explicit NVTXScopedRange(const std::string&) {}
  NVTXScopedRange(const NVTXScopedRange&) = delete;
  NVTXScopedRange& operator=(const NVTXScopedRange&) = delete;
};

}  // namespace support
}  // namespace tvm

#endif  // HILT_COMPAT_TVM_SUPPORT_CUDA_NVTX_H_
