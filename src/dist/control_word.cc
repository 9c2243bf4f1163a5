#include "epochal/dist/control_word.h"

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

}  // namespace epochal::dist
