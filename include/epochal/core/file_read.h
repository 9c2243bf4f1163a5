// Reading a whole file whose size has a cap for its kind. Every file epochal reads from
// outside (config, token, certificate, weights, checkpoint, history) goes through here,
// so that `/dev/zero`, a FIFO or a mistaken multi-gigabyte path fails fast with the file's
// name and the cap instead of reading until the OOM killer ends the process.
//
// Thread safety: the functions share no state and may be called concurrently.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

namespace epochal {

// Caps for each kind of file (bytes). One definition per fact: the docs
// (docs/fault-tolerance.md, "Input limits") quote these.
inline constexpr uint64_t kKiB = 1024;
inline constexpr uint64_t kMiB = 1024 * kKiB;
inline constexpr uint64_t kGiB = 1024 * kMiB;
inline constexpr uint64_t kMaxConfigFileBytes = 1 * kMiB;
inline constexpr uint64_t kMaxTokenFileBytes = 64 * kKiB;
inline constexpr uint64_t kMaxPemFileBytes = 1 * kMiB;
inline constexpr uint64_t kMaxHistoryFileBytes = 512 * kMiB;
inline constexpr uint64_t kMaxLeakageFileBytes = 256 * kMiB;
// Protobuf cannot parse a message of 2 GiB or more, so a weights or checkpoint file is
// never useful beyond that.
inline constexpr uint64_t kMaxProtobufFileBytes = 2 * kGiB - 1;

// "1 MiB", "64 KiB", "2047.99 MiB": a byte count for messages.
std::string FormatBytes(uint64_t bytes);

// The whole of the file at `path`, at most `max_bytes` of it. Throws InputError naming
// the path and `what` ("config", "token file") when the path is a directory, cannot be
// opened or read, or holds more than `max_bytes` bytes (the cap is named; reading stops
// at the first byte past it, so an endless file fails at once).
std::string ReadFileCapped(const std::filesystem::path& path, uint64_t max_bytes,
                           const std::string& what);

}  // namespace epochal
