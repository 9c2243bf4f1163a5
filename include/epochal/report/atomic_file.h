// Crash-safe file replacement for everything a run writes (history, reports).
// Thread safety: safe to call concurrently for different paths; two writers of the same
// path race on "<path>.tmp".
#pragma once

#include <filesystem>
#include <string_view>

namespace epochal::report {

// Writes `text` to "<path>.tmp" in the same directory, flushes it to disk (fsync),
// renames it over `path` and syncs the directory, so a reader or a crash sees either the
// old file or the complete new one, never a partial one under the real name. The
// directory must exist. On failure removes the temporary file and throws
// epochal::SystemError naming the path and the OS error.
void WriteTextFileAtomic(const std::filesystem::path& path, std::string_view text);

}  // namespace epochal::report
