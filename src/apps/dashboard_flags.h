// `epochal train`'s live-page flags: --dashboard-port, --dashboard-bind,
// --dashboard-auth-file, --dashboard-linger. Without --dashboard-port nothing listens.
#pragma once

#include <memory>
#include <string>

#include "epochal/dashboard/dashboard_server.h"
#include "epochal/train/trainer.h"
#include "flags.h"

namespace epochal::apps {

void AddDashboardFlags(Flags& f);

// Rank 0: validates the flags, reads the auth file and starts serving, printing the
// page's URL. Returns null without --dashboard-port (and on other ranks, which only
// validate the flags so that every rank agrees on a failure). Throws InputError.
std::unique_ptr<dashboard::DashboardServer> StartDashboard(const Flags& f, bool is_root,
                                                           const v1::ExperimentConfig& config,
                                                           const std::string& run_dir,
                                                           int world_size);

// Rank 0, once the trainer exists: subscribes the page to the trainer's events.
void AttachDashboard(dashboard::DashboardServer& server, train::Trainer& trainer);

// Rank 0, after training: keeps the page up --dashboard-linger seconds (a stop signal
// ends the wait early), so a browser sees the final state.
void LingerForDashboard(const Flags& f, const dashboard::DashboardServer& server);

}  // namespace epochal::apps
