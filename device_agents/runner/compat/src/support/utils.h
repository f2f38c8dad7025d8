/* hilt: the two small helpers the runtime sources use from TVM's support library. */
#ifndef HILT_COMPAT_SUPPORT_UTILS_H_
#define HILT_COMPAT_SUPPORT_UTILS_H_

#include <cctype>
#include <cstddef>
#include <functional>
#include <string>

namespace tvm {
namespace support {

/*! \brief True when s is a non-empty run of decimal digits. */
inline bool IsNumber(const std::string& s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

/*! \brief Mix value into seed (boost-style). */
template <typename T>
inline size_t HashCombine(size_t seed, const T& value) {
  return seed ^ (std::hash<T>()(value) + 0x9e3779b9 + (seed << 6) + (seed >> 2));
}

}  // namespace support
}  // namespace tvm

#endif  // HILT_COMPAT_SUPPORT_UTILS_H_
