// EPOCHAL_MPI_CHECK: turns an MPI return code into an exception.
//
// MPI reports errors through return codes only when the communicator's error handler is
// MPI_ERRORS_RETURN; MpiEnvironment installs it on MPI_COMM_WORLD (communicators
// duplicated from it inherit it). Under the default MPI_ERRORS_ARE_FATAL the library
// aborts the job before the check sees anything.
#pragma once

#include <mpi.h>

#include <string>

#include "epochal/core/error.h"

namespace epochal::dist::detail {

// The text MPI_Error_string gives for `code`, or "MPI error <code>" when it gives none.
std::string MpiErrorText(int code);

// Builds the message and throws SystemError. Out of line so the macro stays small.
[[noreturn]] void ThrowMpiError(const char* file, int line, const char* call, int code);

}  // namespace epochal::dist::detail

// Evaluates `call` (an MPI function call) once; on anything but MPI_SUCCESS throws
// epochal::SystemError "<file>:<line>: <call> failed: <MPI_Error_string>".
#define EPOCHAL_MPI_CHECK(call)                                                           \
  do {                                                                                    \
    const int epochal_mpi_rc_ = (call);                                                   \
    if (epochal_mpi_rc_ != MPI_SUCCESS) {                                                 \
      ::epochal::dist::detail::ThrowMpiError(__FILE__, __LINE__, #call, epochal_mpi_rc_); \
    }                                                                                     \
  } while (0)
