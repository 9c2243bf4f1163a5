#include "epochal/train/fault_plan.h"

#include <csignal>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "epochal/core/error.h"

namespace epochal::train {
namespace {

int64_t ToInt(const std::string& text, const std::string& entry) {
  size_t used = 0;
  int64_t v = -1;
  try {
    v = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text.size() || v < 0) {
    throw InputError("EPOCHAL_FAULT: '" + entry + "' needs a non-negative integer");
  }
  return v;
}

}  // namespace

FaultPlan FaultPlan::Parse(const std::string& spec) {
  FaultPlan plan;
  std::stringstream in(spec);
  std::string entry;
  while (std::getline(in, entry, ',')) {
    if (entry.empty()) continue;
    const size_t eq = entry.find('=');
    if (eq == std::string::npos) throw InputError("EPOCHAL_FAULT: '" + entry + "' lacks '='");
    const std::string key = entry.substr(0, eq), value = entry.substr(eq + 1);
    if (key == "kill-after-step") {
      plan.kill_after_step = ToInt(value, entry);
    } else if (key == "kill-in-validation") {
      plan.kill_in_validation = static_cast<int>(ToInt(value, entry));
    } else if (key == "kill-in-checkpoint-write") {
      plan.kill_in_checkpoint_write = static_cast<int>(ToInt(value, entry));
    } else if (key == "corrupt-checkpoint-write") {
      plan.corrupt_checkpoint_write = static_cast<int>(ToInt(value, entry));
    } else if (key == "term-after-step") {
      plan.term_after_step = ToInt(value, entry);
    } else if (key == "nan-grad") {
      const size_t colon = value.find(':');
      if (colon == std::string::npos) throw InputError("EPOCHAL_FAULT: nan-grad=RANK:STEP");
      plan.nan_rank = static_cast<int>(ToInt(value.substr(0, colon), entry));
      plan.nan_step = ToInt(value.substr(colon + 1), entry);
    } else if (key == "perturb-weights") {
      const size_t colon = value.find(':');
      if (colon == std::string::npos) throw InputError("EPOCHAL_FAULT: perturb-weights=RANK:STEP");
      plan.perturb_rank = static_cast<int>(ToInt(value.substr(0, colon), entry));
      plan.perturb_step = ToInt(value.substr(colon + 1), entry);
    } else {
      throw InputError("EPOCHAL_FAULT: unknown fault '" + key + "'");
    }
  }
  return plan;
}

FaultPlan FaultPlan::FromEnvironment() {
  const char* spec = std::getenv("EPOCHAL_FAULT");
  return spec != nullptr ? Parse(spec) : FaultPlan{};
}

void KillSelf() {
  std::raise(SIGKILL);
  std::abort();
}

void CorruptFile(const std::filesystem::path& path) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(0, std::ios::end);
  const std::streamoff middle = f.tellg() / 2;
  char byte = 0;
  f.seekg(middle);
  f.get(byte);
  f.seekp(middle);
  f.put(static_cast<char>(~byte));
}

}  // namespace epochal::train
