// leakage.json: the leakage scan's counts, index pairs, within-split duplicates, class
// counts and chi-square test, for `epochal scan --json` and a run's leakage.json.
#pragma once

#include <string>

#include "epochal/data/leakage.h"

namespace epochal::report {

std::string LeakageJson(const data::LeakageReport& report);

}  // namespace epochal::report
