// The one crash-safe file writer, for everything a run writes (checkpoints, weights,
// history, reports).
//
// Writes to a temporary in the same directory ("<name>.tmp.<pid>"), fsyncs it, renames it
// over the final name, then fsyncs the directory, so a reader or a crash sees either the
// old file or the complete new one, never a partial one under the real name, and the
// rename survives a power loss. Strict: a failed directory sync is a failed write, except
// on a file system that cannot sync a directory at all (EINVAL).
// Thread safety: safe to call concurrently for different paths.
#pragma once

#include <filesystem>
#include <functional>
#include <string_view>

namespace epochal {

// Writes `bytes` to `path` atomically. The directory must exist. Throws SystemError
// naming the path, the failed operation and the OS error ("No space left on device");
// the temporary is removed on failure and `path` keeps its previous content.
// `after_partial_write`, if set, runs after half of the bytes are written (tests use it
// to kill the process mid-write).
void WriteFileAtomic(const std::filesystem::path& path, std::string_view bytes,
                     const std::function<void()>& after_partial_write = {});

}  // namespace epochal
