// hilt-runner: SHA-256 (FIPS 180-4) so the runner can verify a bundle without extra libraries.
#ifndef HILT_RUNNER_SHA256_H_
#define HILT_RUNNER_SHA256_H_

#include <cstddef>
#include <cstdint>
#include <string>

namespace hilt {

class Sha256 {
 public:
  Sha256();
  void Update(const void* data, size_t size);
  /*! \return lowercase hex digest; the object must not be updated afterwards. */
  std::string HexDigest();

 private:
  void Block(const uint8_t* block);
  uint32_t state_[8];
  uint8_t buf_[64];
  size_t buf_len_ = 0;
  uint64_t total_bytes_ = 0;
};

/*! \return hex sha256 of a file's contents; throws std::runtime_error if it cannot be read. */
std::string Sha256File(const std::string& path);

/*! \return hex sha256 of a string. */
std::string Sha256String(const std::string& text);

}  // namespace hilt

#endif  // HILT_RUNNER_SHA256_H_
