// SIGTERM and SIGINT as a request to stop: the handler only sets a flag
// (async-signal-safe), and rank 0's training loop turns it into a stop control word at
// the next step boundary, so every rank writes the checkpoint and stops at the same step
// and the process exits 0. This is how a Slurm preemption (SIGTERM, then SIGKILL after
// KillWait) loses nothing. Other ranks also catch the signal (mpirun and srun forward it)
// but only wait for rank 0's word. A second signal of the same kind is not caught: it
// ends the process at once.
// Thread safety: the functions may be called from any thread.
#pragma once

namespace epochal::train {

// Installs the handlers for SIGTERM and SIGINT (once per process).
void InstallStopSignalHandlers();
// True once SIGTERM or SIGINT arrived after InstallStopSignalHandlers.
bool StopSignalReceived();
// The signal number that arrived, 0 if none.
int StopSignalNumber();

}  // namespace epochal::train
