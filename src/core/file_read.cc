#include "epochal/core/file_read.h"

#include <cerrno>
#include <cstdio>
#include <memory>
#include <system_error>

#include "epochal/core/error.h"

namespace epochal {

std::string FormatBytes(uint64_t bytes) {
  char text[64];
  if (bytes >= kGiB && bytes % kGiB == 0) {
    std::snprintf(text, sizeof text, "%llu GiB", static_cast<unsigned long long>(bytes / kGiB));
  } else if (bytes >= kMiB && bytes % kMiB == 0) {
    std::snprintf(text, sizeof text, "%llu MiB", static_cast<unsigned long long>(bytes / kMiB));
  } else if (bytes >= kKiB && bytes % kKiB == 0) {
    std::snprintf(text, sizeof text, "%llu KiB", static_cast<unsigned long long>(bytes / kKiB));
  } else if (bytes >= kGiB) {
    std::snprintf(text, sizeof text, "%.2f GiB", static_cast<double>(bytes) / kGiB);
  } else if (bytes >= kMiB) {
    std::snprintf(text, sizeof text, "%.2f MiB", static_cast<double>(bytes) / kMiB);
  } else {
    std::snprintf(text, sizeof text, "%llu bytes", static_cast<unsigned long long>(bytes));
  }
  return text;
}

std::string ReadFileCapped(const std::filesystem::path& path, uint64_t max_bytes,
                           const std::string& what) {
  const std::string name = path.string();
  if (name.empty()) throw InputError(what + " path is empty");
  std::error_code ec;
  const std::filesystem::file_status status = std::filesystem::status(path, ec);
  if (ec) throw InputError(name + ": cannot read " + what + ": " + ec.message());
  if (std::filesystem::is_directory(status)) {
    throw InputError(name + ": cannot read " + what + ": is a directory, not a file");
  }
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(name.c_str(), "rb"),
                                                       &std::fclose);
  if (file == nullptr) {
    throw InputError(name + ": cannot read " + what + ": " +
                     std::generic_category().message(errno));
  }
  const auto too_large = [&] {
    return InputError(name + ": " + what + " is larger than its limit of " +
                      FormatBytes(max_bytes) + "; is this the right file?");
  };
  // A regular file says its size up front: refuse it before reading a byte.
  if (std::filesystem::is_regular_file(status)) {
    const uintmax_t size = std::filesystem::file_size(path, ec);
    if (!ec && size > max_bytes) throw too_large();
  }
  std::string text;
  char buffer[1 << 16];
  while (true) {
    const size_t got = std::fread(buffer, 1, sizeof(buffer), file.get());
    if (got == 0) break;
    if (text.size() + got > max_bytes) throw too_large();
    text.append(buffer, got);
  }
  if (std::ferror(file.get())) {
    throw InputError(name + ": cannot read " + what + ": " +
                     std::generic_category().message(errno));
  }
  return text;
}

}  // namespace epochal
