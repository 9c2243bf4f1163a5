#include "checkpoint_flags.h"

#include <algorithm>
#include <ctime>
#include <iostream>
#include <limits>
#include <system_error>

#include "epochal/core/error.h"
#include "epochal/core/logging.h"
#include "epochal/train/config.h"

namespace epochal::apps {
namespace {

namespace fs = std::filesystem;
using detail::StrCat;

// `message` without the "<source>: " that CheckResumeCompatible and the checkpoint reader
// put first.
std::string WithoutPrefix(std::string message, const std::string& source) {
  if (const std::string prefix = source + ": "; message.starts_with(prefix)) {
    message.erase(0, prefix.size());
  }
  return message;
}

// "" when a run of `world_size` ranks with `config` can continue from `checkpoint`
// exactly, else why not.
std::string WhyNotContinuable(const fs::path& path, const v1::Checkpoint& checkpoint,
                              const v1::ExperimentConfig& config, int world_size) {
  try {
    train::CheckResumeCompatible(checkpoint.config(), config, path.string());
  } catch (const InputError& e) {
    return WithoutPrefix(e.what(), path.string());
  }
  if (checkpoint.world_size() != world_size) {
    return StrCat("written by a run of ", checkpoint.world_size(), " ranks, this one has ",
                  world_size, "; resume with the same rank count for an exact continuation");
  }
  return "";
}

std::string RunName(const std::string& run_id) {
  return run_id.empty() ? std::string("no run id: written before run ids") : "run " + run_id;
}

// A new runs/<timestamp> that does not exist yet (two runs started in the same second
// get "-2", "-3", ...).
std::string NewRunDir() {
  const std::time_t now = std::time(nullptr);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", std::localtime(&now));
  const std::string base = (fs::path(kDefaultRunsParent) / stamp).string();
  std::error_code ec;
  std::string dir = base;
  for (int i = 2; fs::exists(dir, ec); ++i) dir = StrCat(base, "-", i);
  return dir;
}

// The newest write time of the checkpoints in `dir`, nullopt when it has none.
std::optional<fs::file_time_type> NewestCheckpointTime(const fs::path& dir) {
  std::optional<fs::file_time_type> newest;
  for (const fs::path& p : train::CheckpointCandidates(dir)) {
    std::error_code ec;
    const auto t = fs::last_write_time(p, ec);
    if (!ec && (!newest || t > *newest)) newest = t;
  }
  return newest;
}

// The directory under `parent` holding a run of `config` (its config.textproto, as every
// run writes it, matches as CheckResumeCompatible asks) whose newest checkpoint is the
// newest; `count` is set to how many runs of the config with checkpoints there are.
std::optional<fs::path> NewestRunOfConfig(const fs::path& parent,
                                          const v1::ExperimentConfig& config, int* count) {
  *count = 0;
  std::optional<fs::path> best;
  fs::file_time_type best_time{};
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(parent, ec)) {
    std::error_code entry_ec;
    if (!entry.is_directory(entry_ec)) continue;
    const fs::path saved_config = entry.path() / "config.textproto";
    if (!fs::is_regular_file(saved_config, entry_ec)) continue;
    try {
      train::CheckResumeCompatible(train::LoadExperimentConfig(saved_config.string()), config,
                                   saved_config.string());
    } catch (const Error&) {
      continue;  // Another config, or not a config at all: not a run to continue.
    }
    const auto newest = NewestCheckpointTime(entry.path() / "checkpoints");
    if (!newest) continue;
    ++*count;
    if (!best || *newest > best_time) {
      best = entry.path();
      best_time = *newest;
    }
  }
  return best;
}

// What in `dir` belongs to a run, sorted: every entry but config.textproto and a
// checkpoints/ without checkpoints, which a run that failed at start-up leaves behind.
std::vector<std::string> RunDirContents(const fs::path& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return names;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name == "config.textproto") continue;
    if (name == "checkpoints" && train::CheckpointCandidates(entry.path()).empty()) continue;
    names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

// Quoted for a POSIX shell when it holds anything but safe characters.
std::string ShellWord(const std::string& word) {
  const bool safe = !word.empty() && std::all_of(word.begin(), word.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           std::string_view("_-./=:,+@%").find(c) != std::string_view::npos;
  });
  if (safe) return word;
  std::string quoted = "'";
  for (char c : word) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

}  // namespace

void AddCheckpointFlags(Flags& f) {
  f.Value("resume", "auto|FILE",
          "continue from a checkpoint: auto = the newest good one in <out>/checkpoints of a "
          "run this config can continue (no checkpoint there: start fresh; only ones that "
          "cannot be continued: an error); without --out, auto continues the newest run of "
          "this config under runs/");
  f.Switch("overwrite",
           "start a new run in an --out directory that is not empty (its run files are "
           "replaced; its checkpoints stay, apart by run id)");
  f.Value("checkpoint-every-steps", "N", "also checkpoint every N global steps",
          "config's checkpoint.every_steps, else only after epochs");
  f.Value("keep-checkpoints", "N", "keep this run's newest N checkpoints (plus its best one)",
          "config's checkpoint.keep_last, else 3");
  f.Switch("no-checkpoints", "write no checkpoints");
}

void ApplyCheckpointFlags(const Flags& f, v1::ExperimentConfig* config) {
  auto* c = config->mutable_checkpoint();
  if (auto v = f.GetInt("checkpoint-every-steps", 0)) c->set_every_steps(*v);
  constexpr int64_t kMaxInt32 = std::numeric_limits<int32_t>::max();
  if (auto v = f.GetInt("keep-checkpoints", 1, kMaxInt32)) {
    c->set_keep_last(static_cast<int32_t>(*v));
  }
  if (f.Has("no-checkpoints")) c->set_disabled(true);
}

std::string PrepareRunDir(const Flags& f, const v1::ExperimentConfig& config) {
  const auto resume = f.Get("resume");
  const bool overwrite = f.Has("overwrite");
  if (overwrite && resume) {
    throw InputError("--overwrite starts a new run and --resume continues one; give one of them");
  }
  std::string out;
  if (auto v = f.Get("out")) {
    out = *v;
  } else if (resume == "auto") {
    int runs = 0;
    if (auto found = NewestRunOfConfig(kDefaultRunsParent, config, &runs)) {
      out = found->string();
      std::cout << "epochal: --resume auto without --out: continuing " << out
                << ", the run of this config under " << kDefaultRunsParent
                << "/ with the newest checkpoint (" << runs << (runs == 1 ? " run" : " runs")
                << " of it there)\n";
    } else {
      out = NewRunDir();
      std::cout << "epochal: --resume auto without --out: no run of this config with "
                   "checkpoints under "
                << kDefaultRunsParent << "/, starting a new run in " << out << "\n";
    }
  } else {
    out = NewRunDir();
  }
  std::error_code ec;
  const std::vector<std::string> names = RunDirContents(out);
  if (!names.empty() && !resume) {
    if (!overwrite) {
      std::string held;
      for (size_t i = 0; i < names.size() && i < 4; ++i) held += (i > 0 ? ", " : "") + names[i];
      if (names.size() > 4) held += StrCat(" and ", names.size() - 4, " more");
      throw InputError(StrCat(
          "--out ", out, " is not empty (it holds ", held,
          "): continue the run there with --resume auto, or start a new run in it with "
          "--overwrite (its run files are replaced; its checkpoints stay, apart by run id)"));
    }
    for (const std::string& name : kRunFiles) {
      const fs::path p = fs::path(out) / name;
      if (fs::is_regular_file(p, ec)) fs::remove(p, ec);
    }
  }
  fs::create_directories(out, ec);
  if (ec) throw InputError("cannot create output directory " + out + ": " + ec.message());
  return out;
}

CheckpointSetup PrepareCheckpoints(const Flags& f, const v1::ExperimentConfig& config,
                                   const fs::path& out, int world_size) {
  CheckpointSetup setup;
  const fs::path dir = out / "checkpoints";
  const auto resume = f.Get("resume");
  if (resume == "auto") {
    train::CheckpointSearch search =
        train::SearchCheckpoints(dir, [&](const fs::path& path, const v1::Checkpoint& c) {
          return WhyNotContinuable(path, c, config, world_size);
        });
    if (search.found) {
      for (const train::SkippedCheckpoint& s : search.skipped) {
        EPOCHAL_LOG(kWarning, s.path.string(), ": ", s.reason, "; passed over");
      }
      setup.resume = std::move(search.found);
    } else if (search.candidates == 0) {
      std::cout << "epochal: --resume auto: no checkpoint in " << dir.string()
                << ", starting from the beginning\n";
    } else {
      std::string list;
      for (const train::SkippedCheckpoint& s : search.skipped) {
        list += StrCat("\n  ", s.path.string(), ": ", s.reason);
      }
      throw InputError(StrCat(
          "--resume auto: none of the ", search.candidates, " checkpoints in ", dir.string(),
          " can be continued:", list,
          "\nresume with the config and rank count they were written with, give a checkpoint "
          "with --resume FILE, or start a new run without --resume (--overwrite to reuse ",
          out.string(), ")"));
    }
  } else if (resume) {
    try {
      setup.resume = train::FoundCheckpoint{*resume, train::ReadCheckpointFile(*resume)};
    } catch (const train::CheckpointError& e) {
      throw InputError(std::string("--resume: ") + e.what());
    }
    const std::string why =
        WhyNotContinuable(setup.resume->path, setup.resume->checkpoint, config, world_size);
    if (!why.empty()) throw InputError(setup.resume->path.string() + ": " + why);
  }
  setup.run_id = setup.resume ? setup.resume->checkpoint.run_id() : train::NewRunId();
  const auto& c = config.checkpoint();
  if (!c.disabled()) {
    train::CheckpointStoreOptions options;
    options.keep_last = c.has_keep_last() ? c.keep_last() : 3;
    options.keep_best = c.has_keep_best() ? c.keep_best() : true;
    options.run_id = setup.run_id;
    setup.store = std::make_unique<train::CheckpointStore>(dir, options);
  }
  if (setup.resume) {
    const v1::Checkpoint& ckpt = setup.resume->checkpoint;
    std::cout << "epochal: resuming from " << setup.resume->path.string() << " ("
              << RunName(ckpt.run_id()) << ", " << ckpt.reason() << ", epoch "
              << ckpt.position().epoch() << ", batch " << ckpt.position().batches_done()
              << ", global step " << ckpt.position().global_step() << ")\n";
  } else if (!c.disabled()) {
    std::cout << "epochal: new run " << setup.run_id << ", checkpoints in " << dir.string() << "\n";
  }
  return setup;
}

std::string ResumeCommand(const Flags& f, int argc, char** argv, const std::string& out) {
  static const std::vector<std::string> kDropped = {"out", "resume", "overwrite",
                                                    "stop-after-steps"};
  std::string command;
  for (int i = 0; i < std::min(argc, 2); ++i) command += (i > 0 ? " " : "") + ShellWord(argv[i]);
  for (int i = 2; i < argc; ++i) {
    const std::string arg = argv[i];
    std::string name = arg.starts_with("--") ? arg.substr(2) : std::string();
    const bool inline_value = name.find('=') != std::string::npos;
    name = name.substr(0, name.find('='));
    const bool takes_next = !name.empty() && !inline_value && !f.IsSwitch(name) && i + 1 < argc;
    const bool drop = std::find(kDropped.begin(), kDropped.end(), name) != kDropped.end();
    if (!drop) {
      command += " " + ShellWord(arg);
      if (takes_next) command += " " + ShellWord(argv[i + 1]);
    }
    if (takes_next) ++i;
  }
  return command + " --out " + ShellWord(out) + " --resume auto";
}

}  // namespace epochal::apps
