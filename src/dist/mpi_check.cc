#include "epochal/dist/mpi_check.h"

namespace epochal::dist::detail {

std::string MpiErrorText(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS || length <= 0) {
    return ::epochal::detail::StrCat("MPI error ", code);
  }
  return std::string(text, static_cast<size_t>(length));
}

void ThrowMpiError(const char* file, int line, const char* call, int code) {
  throw SystemError(
      ::epochal::detail::StrCat(file, ":", line, ": ", call, " failed: ", MpiErrorText(code)));
}

}  // namespace epochal::dist::detail
