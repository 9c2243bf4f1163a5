// Checksums implemented here so that no dependency is needed for them: CRC32C
// (Castagnoli, the polynomial of iSCSI and ext4 metadata) guards checkpoint files against
// corruption; SHA-256 (FIPS 180-4) names the exact state of a model and optimizer.
// Thread safety: the functions are reentrant; a Sha256 object is used by one thread.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace epochal {

// CRC32C of `data`, continuing from `crc` (0 to start). Crc32c("123456789") == 0xe3069283.
uint32_t Crc32c(std::string_view data, uint32_t crc = 0);

// Incremental SHA-256.
class Sha256 {
 public:
  Sha256();
  void Update(const void* data, size_t bytes);
  void Update(std::string_view data) { Update(data.data(), data.size()); }
  // The digest of everything added; the object must not be updated afterwards.
  std::array<uint8_t, 32> Finish();
  // Finish() as 64 lower-case hex digits.
  std::string HexDigest();

 private:
  void Block(const uint8_t* block);
  std::array<uint32_t, 8> h_;
  std::array<uint8_t, 64> buffer_{};
  size_t buffered_ = 0;
  uint64_t total_bytes_ = 0;
};

// SHA-256 of `data` in hex.
std::string Sha256Hex(std::string_view data);

}  // namespace epochal
