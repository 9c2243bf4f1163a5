// A small command-line parser for the epochal subcommands: "--name value",
// "--name=value" and boolean "--name"; each subcommand declares its flags with help text.
#pragma once

#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace epochal::apps {

class Flags {
 public:
  Flags(std::string command, std::string summary)
      : command_(std::move(command)), summary_(std::move(summary)) {}

  // Declares a flag taking a value; `placeholder` is shown in --help ("N", "FILE").
  void Value(const std::string& name, const std::string& placeholder, const std::string& help,
             const std::string& default_text = "");
  // Declares a boolean switch.
  void Switch(const std::string& name, const std::string& help);

  // Parses argv[first..]. Returns false if --help was given (help already printed).
  // Throws InputError for an unknown flag or a missing value, naming it.
  bool Parse(int argc, char** argv, int first);

  bool Has(const std::string& name) const { return values_.count(name) > 0; }
  // True when `name` is a declared switch (it takes no value).
  bool IsSwitch(const std::string& name) const;
  std::optional<std::string> Get(const std::string& name) const;
  // Typed getters; InputError names the flag and the bad text.
  std::optional<int64_t> GetInt(const std::string& name, int64_t min_value,
                                int64_t max_value = std::numeric_limits<int64_t>::max()) const;
  std::optional<double> GetDouble(const std::string& name) const;
  // A positive byte count: a number with an optional binary suffix K, M, G or T (also
  // written KiB, MiB, ...; "8G", "1.5GiB", "65536").
  std::optional<double> GetBytes(const std::string& name) const;
  std::string Help() const;

 private:
  struct Spec {
    std::string name, placeholder, help, default_text;
    bool is_switch = false;
  };
  std::string command_, summary_;
  std::vector<Spec> specs_;
  std::map<std::string, std::string> values_;
};

}  // namespace epochal::apps
