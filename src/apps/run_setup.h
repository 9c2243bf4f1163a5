// What the commands that read a config and its data share: the data flags, the config
// with the flags' overrides, and the two splits.
#pragma once

#include "epochal/data/idx.h"
#include "epochal/v1/config.pb.h"
#include "flags.h"

namespace epochal::apps {

// --config, --data-dir, --limit-val, --threads.
void AddDataFlags(Flags& f);

// Loads --config and applies the flags that override it; validates the result.
v1::ExperimentConfig LoadConfig(const Flags& f);

// The training (`train` true) or validation split of `config`, named for messages.
data::Dataset LoadSplit(const v1::ExperimentConfig& config, bool train);

}  // namespace epochal::apps
