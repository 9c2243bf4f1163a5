#include "epochal/dashboard/dashboard_server.h"

#include <civetweb.h>

#include <cstdlib>
#include <cstring>
#include <string_view>

#include "epochal/core/error.h"
#include "epochal/report/history_writer.h"
#include "epochal/report/html_report.h"

namespace epochal::dashboard {
namespace {

// RFC 4648 base64 (the Authorization header); nothing when malformed.
std::optional<std::string> DecodeBase64(std::string_view text) {
  std::string out;
  uint32_t buffer = 0;
  int bits = 0;
  for (char c : text) {
    int v;
    if (c >= 'A' && c <= 'Z') {
      v = c - 'A';
    } else if (c >= 'a' && c <= 'z') {
      v = c - 'a' + 26;
    } else if (c >= '0' && c <= '9') {
      v = c - '0' + 52;
    } else if (c == '+') {
      v = 62;
    } else if (c == '/') {
      v = 63;
    } else if (c == '=') {
      break;
    } else {
      return std::nullopt;
    }
    buffer = (buffer << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((buffer >> bits) & 0xff));
    }
  }
  return out;
}

void Send(mg_connection* conn, int status, const char* reason, std::string_view type,
          std::string_view body, const char* extra_headers = "") {
  mg_printf(conn,
            "HTTP/1.1 %d %s\r\nContent-Type: %.*s\r\nContent-Length: %zu\r\n"
            "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n%sConnection: "
            "close\r\n\r\n",
            status, reason, static_cast<int>(type.size()), type.data(), body.size(), extra_headers);
  if (!body.empty()) mg_write(conn, body.data(), body.size());
}

// ?since=N, or 0.
int64_t SinceParameter(const mg_request_info* info) {
  if (info->query_string == nullptr) return 0;
  char value[32];
  if (mg_get_var(info->query_string, std::strlen(info->query_string), "since", value,
                 sizeof value) <= 0) {
    return 0;
  }
  char* end = nullptr;
  const long long n = std::strtoll(value, &end, 10);
  return end != value && *end == '\0' && n > 0 ? n : 0;
}

}  // namespace

DashboardServer::DashboardServer(RunInfo info) : info_(std::move(info)) {
  doc_.run = info_.run;
  doc_.config_name = info_.config_name;
  doc_.world_size = info_.world_size;
  doc_.epochs_planned = info_.epochs_planned;
  doc_.state = "starting";
}

DashboardServer::~DashboardServer() {
  if (ctx_ != nullptr) mg_stop(ctx_);  // Waits for the handlers to return.
}

int DashboardServer::Listen(const DashboardOptions& options) {
  if (options.bind_address.find(':') != std::string::npos) {
    throw InputError("dashboard: --dashboard-bind takes an IPv4 address, got " +
                     options.bind_address);
  }
  if (options.threads < 1) throw InputError("dashboard: at least one server thread");
  auth_ = options.auth;
  const std::string address = options.bind_address + ":" + std::to_string(options.port);
  const std::string threads = std::to_string(options.threads);
  const char* mg_options[] = {
      "listening_ports", address.c_str(),     "num_threads", threads.c_str(), "request_timeout_ms",
      "10000",           "enable_keep_alive", "no",          nullptr};
  mg_callbacks callbacks{};
  ctx_ = mg_start(&callbacks, this, mg_options);
  if (ctx_ == nullptr) {
    throw InputError("dashboard: cannot listen on " + address +
                     "; choose another --dashboard-port or --dashboard-bind");
  }
  mg_set_request_handler(ctx_, "/", &DashboardServer::HandleRequest, this);
  mg_server_port ports[4]{};
  const int n = mg_get_server_ports(ctx_, 4, ports);
  port_ = n > 0 ? ports[0].port : options.port;
  return port_;
}

bool DashboardServer::Authorized(mg_connection* conn) const {
  if (!auth_) return true;
  const char* header = mg_get_header(conn, "Authorization");
  if (header == nullptr) return false;
  std::string_view h(header);
  constexpr std::string_view kBasic = "Basic ";
  if (h.substr(0, kBasic.size()) != kBasic) return false;
  const auto decoded = DecodeBase64(h.substr(kBasic.size()));
  if (!decoded) return false;
  const size_t colon = decoded->find(':');
  if (colon == std::string::npos) return false;
  // Both compared in full, each in constant time.
  const bool user_ok = metrics::ConstantTimeEquals(decoded->substr(0, colon), auth_->user);
  const bool password_ok = metrics::ConstantTimeEquals(decoded->substr(colon + 1), auth_->password);
  return user_ok & password_ok;
}

int DashboardServer::HandleRequest(mg_connection* conn, void* self_ptr) {
  const auto* self = static_cast<const DashboardServer*>(self_ptr);
  const mg_request_info* info = mg_get_request_info(conn);
  if (!self->Authorized(conn)) {
    Send(conn, 401, "Unauthorized", "text/plain", "",
         "WWW-Authenticate: Basic realm=\"epochal dashboard\"\r\n");
    return 401;
  }
  const std::string_view method = info->request_method ? info->request_method : "";
  if (method != "GET" && method != "HEAD") {
    Send(conn, 405, "Method Not Allowed", "text/plain", "GET only\n", "Allow: GET, HEAD\r\n");
    return 405;
  }
  const std::string_view uri = info->local_uri ? info->local_uri : "/";
  if (uri == "/" || uri == "/index.html") {
    Send(conn, 200, "OK", "text/html; charset=utf-8", report::LivePageHtml());
  } else if (uri == "/run_view.js") {
    Send(conn, 200, "OK", "text/javascript; charset=utf-8", report::RunViewScript());
  } else if (uri == "/run_view.css") {
    Send(conn, 200, "OK", "text/css; charset=utf-8", report::RunViewStyle());
  } else if (uri == "/api/run") {
    Send(conn, 200, "OK", "application/json", self->RunJson(SinceParameter(info)));
  } else {
    Send(conn, 404, "Not Found", "text/plain", "not found; try / or /api/run\n");
    return 404;
  }
  return 200;
}

std::string DashboardServer::RunJson(int64_t since) const {
  report::RunDocument doc;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    doc = doc_;
    const auto n = static_cast<int64_t>(batches_.size());
    const int64_t first = std::min(std::max<int64_t>(since, 0), n);
    doc.batches_offset = first;
    doc.batches.assign(batches_.begin() + first, batches_.end());
  }
  doc.generated_at = report::UtcTimestamp();
  return report::RunDocumentJson(doc);
}

void DashboardServer::SetLeakage(const data::LeakageReport& report, const data::Dataset* train,
                                 const data::Dataset* val) {
  report::LeakageView view = report::MakeLeakageView(report, train, val);
  std::lock_guard<std::mutex> lock(mutex_);
  doc_.leakage = std::move(view);
}

void DashboardServer::FlushPending() {
  batches_.insert(batches_.end(), pending_.begin(), pending_.end());
  pending_.clear();
  if (pending_progress_set_) doc_.progress = pending_progress_;
}

void DashboardServer::OnEpochStart(int epoch, int total_epochs, int64_t /*samples*/) {
  std::lock_guard<std::mutex> lock(mutex_);
  FlushPending();
  doc_.epochs_planned = total_epochs;
  if (doc_.state != "paused") doc_.state = "training";
  if (!doc_.progress) doc_.progress = report::RunProgress{};
  doc_.progress->epoch = epoch;
}

void DashboardServer::OnStep(const train::StepEvent& e) {
  pending_.push_back({e.epoch_progress, e.batch_loss, e.learning_rate, e.batch_samples});
  pending_progress_ = {e.epoch,        e.epoch_progress,   e.global_step,
                       e.running_loss, e.running_accuracy, e.learning_rate};
  pending_progress_set_ = true;
  // Never wait for a request: if one holds the lock, the batch goes with a later step.
  std::unique_lock<std::mutex> lock(mutex_, std::try_to_lock);
  if (lock.owns_lock()) FlushPending();
}

void DashboardServer::Publish(const train::History& history, bool final) {
  std::string epochs = report::EpochsJson(history);
  std::vector<train::Finding> findings;
  if (diagnosis_ != nullptr) findings = diagnosis_->findings();
  std::vector<report::RankThroughput> ranks;
  if (!history.epochs.empty()) {
    ranks = report::ThroughputFromEpoch(history.epochs.back(), info_.per_rank_batch);
  }
  std::lock_guard<std::mutex> lock(mutex_);
  FlushPending();
  doc_.epochs_json = std::move(epochs);
  doc_.partial_epoch_json = report::PartialEpochJson(history);
  doc_.absent_terms = history.absent_terms;
  doc_.findings = std::move(findings);
  if (doc_.config_json.empty()) doc_.config_json = history.config_json;
  doc_.world_size = history.world_size;
  // The gathered timings are fresher while training; the epoch's own are complete.
  if (final || doc_.ranks.empty() || doc_.ranks.size() != ranks.size()) doc_.ranks = ranks;
  if (final) {
    bool stopped = false;
    for (const auto& c : history.control_events) stopped = stopped || c.action == "stop";
    doc_.state = stopped ? "stopped" : "finished";
  }
}

void DashboardServer::OnEpochEnd(const train::EpochRecord& /*record*/,
                                 const train::EvalResult& /*validation*/,
                                 const train::History& history) {
  Publish(history, false);
}

void DashboardServer::OnTrainingEnd(const train::History& history,
                                    const train::EvalResult& /*validation*/) {
  Publish(history, true);
}

void DashboardServer::OnControl(const train::ControlEvent& event) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (event.action == "pause") doc_.state = "paused";
  if (event.action == "resume") doc_.state = "training";
  if (event.action == "stop") doc_.state = "stopped";
}

void DashboardServer::OnRankTimings(const train::RankTimingSnapshot& snapshot) {
  using K = train::RankTimingIncrements;
  std::vector<report::RankThroughput> ranks;
  for (const K& inc : snapshot.ranks) {
    double steps = 0;
    for (double c : inc.counts[K::kStep]) steps += c;
    if (steps <= 0 || inc.sums[K::kStep] <= 0) return;  // Nothing new: keep the last.
    report::RankThroughput r;
    r.rank = inc.rank;
    r.images_per_second = inc.samples / inc.sums[K::kStep];
    r.step_ms = 1000.0 * inc.sums[K::kStep] / steps;
    r.data_ms = 1000.0 * inc.sums[K::kDataWait] / steps;
    r.allreduce_wait_ms = 1000.0 * inc.sums[K::kAllreduceWait] / steps;
    ranks.push_back(r);
  }
  std::lock_guard<std::mutex> lock(mutex_);
  doc_.ranks = std::move(ranks);
}

}  // namespace epochal::dashboard
