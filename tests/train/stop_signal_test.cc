// The stop flag: set by a signal handler that may run on any thread of the process (the
// kernel picks one that does not block the signal: a gRPC, exposer or OpenMP thread as
// often as the trainer's), read by the training thread.
#include "epochal/train/stop_signal.h"

#include <gtest/gtest.h>
#include <pthread.h>

#include <chrono>
#include <csignal>
#include <thread>

namespace epochal::train {
namespace {

TEST(StopSignalTest, SignalHandledOnAnotherThreadIsSeenByThePollingThread) {
  InstallStopSignalHandlers();
  ASSERT_FALSE(StopSignalReceived());
  EXPECT_EQ(StopSignalNumber(), 0);
  // pthread_kill aims the signal at that thread, so the handler runs there.
  std::thread other([] { ASSERT_EQ(pthread_kill(pthread_self(), SIGTERM), 0); });
  other.join();
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!StopSignalReceived() && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_TRUE(StopSignalReceived());
  EXPECT_EQ(StopSignalNumber(), SIGTERM);
}

}  // namespace
}  // namespace epochal::train
