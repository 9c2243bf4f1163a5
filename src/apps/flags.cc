#include "flags.h"

#include <cmath>
#include <iostream>
#include <sstream>

#include "epochal/core/error.h"

namespace epochal::apps {

void Flags::Value(const std::string& name, const std::string& placeholder, const std::string& help,
                  const std::string& default_text) {
  specs_.push_back({name, placeholder, help, default_text, false});
}

void Flags::Switch(const std::string& name, const std::string& help) {
  specs_.push_back({name, "", help, "", true});
}

bool Flags::Parse(int argc, char** argv, int first) {
  for (int i = first; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::cout << Help();
      return false;
    }
    if (arg.rfind("--", 0) != 0) {
      throw InputError("unexpected argument '" + arg + "' (see " + command_ + " --help)");
    }
    std::string name = arg.substr(2);
    std::optional<std::string> inline_value;
    if (const auto eq = name.find('='); eq != std::string::npos) {
      inline_value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    const Spec* spec = nullptr;
    for (const auto& s : specs_) {
      if (s.name == name) spec = &s;
    }
    if (spec == nullptr) {
      throw InputError("unknown flag --" + name + " (see " + command_ + " --help)");
    }
    if (spec->is_switch) {
      if (inline_value) throw InputError("--" + name + " takes no value");
      values_[name] = "true";
      continue;
    }
    if (inline_value) {
      values_[name] = *inline_value;
    } else if (i + 1 < argc) {
      values_[name] = argv[++i];
    } else {
      throw InputError("--" + name + " needs a value (" + spec->placeholder + ")");
    }
  }
  return true;
}

bool Flags::IsSwitch(const std::string& name) const {
  for (const auto& s : specs_) {
    if (s.name == name) return s.is_switch;
  }
  return false;
}

std::optional<std::string> Flags::Get(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end()) return std::nullopt;
  return it->second;
}

std::optional<int64_t> Flags::GetInt(const std::string& name, int64_t min_value,
                                     int64_t max_value) const {
  const auto text = Get(name);
  if (!text) return std::nullopt;
  size_t used = 0;
  int64_t v = 0;
  try {
    v = std::stoll(*text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text->size()) {
    throw InputError("--" + name + " expects an integer, got '" + *text + "'");
  }
  if (v < min_value) {
    throw InputError("--" + name + " must be at least " + std::to_string(min_value) + ", got " +
                     *text);
  }
  if (v > max_value) {
    throw InputError("--" + name + " must be at most " + std::to_string(max_value) + ", got " +
                     *text);
  }
  return v;
}

std::optional<double> Flags::GetDouble(const std::string& name) const {
  const auto text = Get(name);
  if (!text) return std::nullopt;
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(*text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text->size() || !std::isfinite(v)) {
    throw InputError("--" + name + " expects a finite number, got '" + *text + "'");
  }
  return v;
}

std::optional<double> Flags::GetBytes(const std::string& name) const {
  const auto text = Get(name);
  if (!text) return std::nullopt;
  const auto bad = [&] {
    return InputError("--" + name + " expects a size in bytes such as 8G, 512M or 65536, got '" +
                      *text + "'");
  };
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(*text, &used);
  } catch (const std::exception&) {
    throw bad();
  }
  std::string suffix = text->substr(used);
  if (suffix.ends_with("iB")) suffix.resize(suffix.size() - 2);
  double scale = 1;
  if (suffix == "K") {
    scale = 1024.0;
  } else if (suffix == "M") {
    scale = 1024.0 * 1024;
  } else if (suffix == "G") {
    scale = 1024.0 * 1024 * 1024;
  } else if (suffix == "T") {
    scale = 1024.0 * 1024 * 1024 * 1024;
  } else if (!suffix.empty()) {
    throw bad();
  }
  if (!std::isfinite(v) || !(v > 0)) throw bad();
  return v * scale;
}

std::string Flags::Help() const {
  std::ostringstream os;
  os << "usage: " << command_ << " [flags]\n\n" << summary_ << "\n\nflags:\n";
  for (const auto& s : specs_) {
    std::string left = "  --" + s.name + (s.is_switch ? "" : " " + s.placeholder);
    if (left.size() < 26) left.resize(26, ' ');
    os << left << " " << s.help;
    if (!s.default_text.empty()) os << " (default: " << s.default_text << ")";
    os << "\n";
  }
  os << "  --help                     show this help\n";
  return os.str();
}

}  // namespace epochal::apps
