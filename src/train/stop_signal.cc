#include "epochal/train/stop_signal.h"

#include <atomic>
#include <csignal>

namespace epochal::train {
namespace {

// The handler may run on any thread (a gRPC, exposer or OpenMP thread as well as the
// trainer's), and the trainer reads the flag on its own: an atomic makes the write
// visible there. Only a lock-free atomic may be touched in a signal handler.
std::atomic<int> g_stop_signal{0};
static_assert(std::atomic<int>::is_always_lock_free,
              "the stop flag is written by a signal handler, so it must be lock-free");

extern "C" void OnStopSignal(int signal) { g_stop_signal.store(signal, std::memory_order_release); }

}  // namespace

void InstallStopSignalHandlers() {
  struct sigaction action = {};
  action.sa_handler = OnStopSignal;
  sigemptyset(&action.sa_mask);
  // SA_RESETHAND: a second signal takes the default action (ends the process).
  action.sa_flags = SA_RESETHAND | SA_RESTART;
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
}

bool StopSignalReceived() { return g_stop_signal.load(std::memory_order_acquire) != 0; }

int StopSignalNumber() { return g_stop_signal.load(std::memory_order_acquire); }

}  // namespace epochal::train
