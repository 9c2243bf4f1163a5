// libFuzzer target: the IDX reader (plain and gzip) on arbitrary bytes. ReadIdx reads a
// path, so each input is written to an in-memory file and read back through /proc.
// Any result is fine except a crash, a sanitizer report, or an exception other than
// epochal::InputError.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "epochal/core/error.h"
#include "epochal/data/idx.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const int fd = memfd_create("idx_fuzz", 0);
  static const std::string path = "/proc/self/fd/" + std::to_string(fd);
  if (fd < 0 || ftruncate(fd, 0) != 0) std::abort();
  if (size > 0 && pwrite(fd, data, size, 0) != static_cast<ssize_t>(size)) std::abort();
  for (const int rank : {0, 1, 3}) {
    try {
      const epochal::data::IdxArray a = epochal::data::ReadIdx(path, rank);
      if (static_cast<int64_t>(a.data.size()) != a.NumElements()) std::abort();
    } catch (const epochal::InputError&) {
      // Rejected with a message: what the reader should do with bad input.
    }
  }
  return 0;
}
