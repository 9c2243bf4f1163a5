#include "epochal/train/stop_signal.h"

#include <csignal>

namespace epochal::train {
namespace {

volatile std::sig_atomic_t g_stop_signal = 0;

extern "C" void OnStopSignal(int signal) { g_stop_signal = signal; }

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

bool StopSignalReceived() { return g_stop_signal != 0; }

int StopSignalNumber() { return static_cast<int>(g_stop_signal); }

}  // namespace epochal::train
