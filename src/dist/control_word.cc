#include "epochal/dist/control_word.h"

#include <bit>
#include <thread>

#include "epochal/dist/mpi_check.h"

namespace epochal::dist {

const char* ActionName(int32_t action) {
  switch (action) {
    case ControlWord::kContinue:
      return "continue";
    case ControlWord::kPause:
      return "pause";
    case ControlWord::kStop:
      return "stop";
    case ControlWord::kSetLearningRate:
      return "set_learning_rate";
    case ControlWord::kCheckpoint:
      return "checkpoint";
    default:
      return "unknown";
  }
}

ControlWord SyncControlWord(const Communicator& comm, const ControlWord& root_word) {
  ControlWord word = root_word;
  comm.BroadcastBytes(&word, sizeof(word), /*root=*/0);
  return word;
}

ControlWord SyncControlWordIdle(const Communicator& comm, const ControlWord& root_word,
                                std::chrono::microseconds poll_interval) {
  ControlWord word = root_word;
  if (comm.solo()) return word;
  MPI_Request request = MPI_REQUEST_NULL;
  EPOCHAL_MPI_CHECK(MPI_Ibcast(&word, static_cast<int>(sizeof(word)), MPI_BYTE, /*root=*/0,
                               comm.comm(), &request));
  int done = 0;
  EPOCHAL_MPI_CHECK(MPI_Test(&request, &done, MPI_STATUS_IGNORE));
  while (done == 0) {
    std::this_thread::sleep_for(poll_interval);
    EPOCHAL_MPI_CHECK(MPI_Test(&request, &done, MPI_STATUS_IGNORE));
  }
  return word;
}

namespace {
constexpr int kRateBits = 22;  // 3 x 22 >= 64, and each part is exact in a float.
constexpr uint64_t kRateMask = (uint64_t{1} << kRateBits) - 1;
}  // namespace

PackedRate PackRate(double rate) {
  const auto bits = std::bit_cast<uint64_t>(rate);
  PackedRate p;
  for (int i = 0; i < 3; ++i) {
    p.part[i] = static_cast<float>((bits >> (kRateBits * i)) & kRateMask);
  }
  return p;
}

double UnpackRate(const float part[3]) {
  uint64_t bits = 0;
  for (int i = 0; i < 3; ++i) {
    bits |= static_cast<uint64_t>(part[i]) << (kRateBits * i);
  }
  return std::bit_cast<double>(bits);
}

}  // namespace epochal::dist
