/*
 * hilt: minimal byte-stream interface for building the TVM runtime from the wheel's sources.
 * Written for hilt (the wheel omits this header). Only little-endian targets are supported.
 */
#ifndef HILT_COMPAT_TVM_SUPPORT_IO_H_
#define HILT_COMPAT_TVM_SUPPORT_IO_H_

#include <cstddef>
#include <cstdint>

namespace tvm {
namespace support {

class Stream;

/*! \brief Per-type (de)serialisation; specialised in serializer.h. */
template <typename T, typename Enable = void>
struct Serializer {
  static constexpr bool enabled = false;
};

/*! \brief A sequential byte stream with typed helpers on top of raw Read/Write. */
class Stream {
 public:
  virtual ~Stream() = default;
  /*! \return number of bytes actually read */
  virtual size_t Read(void* ptr, size_t size) = 0;
  /*! \return number of bytes actually written */
  virtual size_t Write(const void* ptr, size_t size) = 0;

  template <typename T>
  void Write(const T& value) {
    static_assert(Serializer<T>::enabled, "no serializer for this type");
    Serializer<T>::Write(this, value);
  }

  template <typename T>
  bool Read(T* out) {
    static_assert(Serializer<T>::enabled, "no serializer for this type");
    return Serializer<T>::Read(this, out);
  }

  template <typename T>
  void WriteArray(const T* data, size_t count) {
    for (size_t i = 0; i < count; ++i) this->Write<T>(data[i]);
  }

  template <typename T>
  bool ReadArray(T* data, size_t count) {
    for (size_t i = 0; i < count; ++i) {
      if (!this->Read<T>(data + i)) return false;
    }
    return true;
  }
};

}  // namespace support
}  // namespace tvm

#include <tvm/support/serializer.h>

#endif  // HILT_COMPAT_TVM_SUPPORT_IO_H_
