/* hilt: base64 streams built on tvm-ffi's Base64Encode/Base64Decode (whole-buffer, not incremental). */
#ifndef HILT_COMPAT_SUPPORT_BASE64_H_
#define HILT_COMPAT_SUPPORT_BASE64_H_

#include <tvm/ffi/extra/base64.h>
#include <tvm/support/io.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <string>

namespace tvm {
namespace support {

/*! \brief Buffers what is written; Finish() writes its base64 text to the sink. */
class Base64OutStream : public Stream {
 public:
  using Stream::Read;
  using Stream::Write;

  explicit Base64OutStream(Stream* sink) : sink_(sink) {}

  size_t Read(void*, size_t) override { return 0; }
  size_t Write(const void* ptr, size_t size) override {
    buf_.append(static_cast<const char*>(ptr), size);
    return size;
  }
  void Finish() {
    TVMFFIByteArray raw{buf_.data(), buf_.size()};
    ffi::String text = ffi::Base64Encode(raw);
    sink_->Write(text.data(), text.size());
    buf_.clear();
  }

 private:
  Stream* sink_;
  std::string buf_;
};

/*! \brief InitPosition() reads and decodes the whole source; Read() then serves the bytes. */
class Base64InStream : public Stream {
 public:
  using Stream::Read;
  using Stream::Write;

  explicit Base64InStream(Stream* source) : source_(source) {}

  void InitPosition() {
    std::string text;
    char chunk[4096];
    size_t n;
    while ((n = source_->Read(chunk, sizeof(chunk))) != 0) {
      for (size_t i = 0; i < n; ++i) {
        if (!std::isspace(static_cast<unsigned char>(chunk[i]))) text.push_back(chunk[i]);
      }
    }
    TVMFFIByteArray raw{text.data(), text.size()};
    ffi::Bytes bytes = ffi::Base64Decode(raw);
    decoded_.assign(bytes.data(), bytes.size());
    pos_ = 0;
  }
  size_t Read(void* ptr, size_t size) override {
    size_t n = std::min(size, decoded_.size() - pos_);
    if (n != 0) std::memcpy(ptr, decoded_.data() + pos_, n);
    pos_ += n;
    return n;
  }
  size_t Write(const void*, size_t) override { return 0; }

 private:
  Stream* source_;
  std::string decoded_;
  size_t pos_ = 0;
};

}  // namespace support
}  // namespace tvm

#endif  // HILT_COMPAT_SUPPORT_BASE64_H_
