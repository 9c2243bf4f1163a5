#include "epochal/dashboard/dashboard_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <string>

#include "epochal/core/error.h"
#include "epochal/report/history_writer.h"

namespace epochal::dashboard {
namespace {

struct Reply {
  int status = 0;
  std::string headers;
  std::string body;
};

// One HTTP/1.1 GET to 127.0.0.1:port, read to the end (the server closes).
Reply Get(int port, const std::string& path, const std::string& extra_headers = "") {
  Reply reply;
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  EXPECT_GE(fd, 0);
  timeval timeout{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    ADD_FAILURE() << "connect to port " << port;
    return reply;
  }
  const std::string request = "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra_headers +
                              "Connection: close\r\n\r\n";
  EXPECT_EQ(::send(fd, request.data(), request.size(), 0), static_cast<ssize_t>(request.size()));
  std::string all;
  char buf[8192];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) all.append(buf, static_cast<size_t>(n));
  ::close(fd);
  const size_t end = all.find("\r\n\r\n");
  if (all.size() < 12 || end == std::string::npos) {
    ADD_FAILURE() << "no HTTP reply: " << all;
    return reply;
  }
  reply.status = std::stoi(all.substr(9, 3));
  reply.headers = all.substr(0, end);
  reply.body = all.substr(end + 4);
  return reply;
}

train::History SmallHistory() {
  train::History h;
  h.world_size = 1;
  h.config_json = R"({"name": "tiny"})";
  for (int e = 1; e <= 2; ++e) {
    train::EpochRecord r;
    r.epoch = e;
    r.loss = 1.0 / e;
    r.val_loss = 0.9 / e;
    r.gap_timing = -0.05;
    r.gap_regularization = -0.03;
    r.gap_data = r.val_loss - r.loss + 0.08;
    r.images_per_second = 500;
    r.findings = {"TIMING: the timing term dominates"};
    h.epochs.push_back(r);
  }
  return h;
}

RunInfo Info() {
  RunInfo info;
  info.run = "run-x";
  info.config_name = "tiny";
  info.epochs_planned = 2;
  info.per_rank_batch = 32;
  return info;
}

TEST(DashboardServerTest, ServesThePageAndTheSnapshot) {
  DashboardServer server(Info());
  const int port = server.Listen({});
  ASSERT_GT(port, 0);
  EXPECT_EQ(Get(port, "/api/run").status, 200);
  EXPECT_NE(Get(port, "/api/run").body.find("\"state\":\"starting\""), std::string::npos);

  server.OnEpochStart(1, 2, 64);
  for (int s = 1; s <= 4; ++s) {
    train::StepEvent e;
    e.epoch = 1;
    e.global_step = s;
    e.epoch_progress = s / 4.0;
    e.batch_loss = 2.0 - 0.1 * s;
    e.running_loss = 1.9;
    e.learning_rate = 0.01;
    server.OnStep(e);
  }
  const Reply page = Get(port, "/");
  EXPECT_EQ(page.status, 200);
  EXPECT_NE(page.headers.find("text/html"), std::string::npos);
  EXPECT_NE(page.body.find("/run_view.js"), std::string::npos);
  EXPECT_NE(Get(port, "/run_view.js").body.find("EpochalRunView"), std::string::npos);
  EXPECT_EQ(Get(port, "/run_view.css").status, 200);
  EXPECT_EQ(Get(port, "/nope").status, 404);

  const std::string run = Get(port, "/api/run").body;
  EXPECT_NE(run.find("\"state\":\"training\""), std::string::npos) << run;
  EXPECT_NE(run.find("\"global_step\":4"), std::string::npos) << run;
  EXPECT_NE(run.find("\"batches_offset\":0"), std::string::npos) << run;
  EXPECT_NE(run.find("\"loss\":1.6"), std::string::npos) << run;
  const std::string tail = Get(port, "/api/run?since=3").body;
  EXPECT_NE(tail.find("\"batches_offset\":3,\"batches\":[{\"epoch_progress\":1,"),
            std::string::npos)
      << tail;
  // Beyond the end: no batches, the offset clamped.
  EXPECT_NE(Get(port, "/api/run?since=99").body.find("\"batches_offset\":4,\"batches\":[]"),
            std::string::npos);

  const train::History h = SmallHistory();
  server.OnEpochEnd(h.epochs.back(), {}, h);
  server.OnTrainingEnd(h, {});
  const std::string done = server.RunJson(0);
  EXPECT_NE(done.find("\"state\":\"finished\""), std::string::npos) << done;
  EXPECT_NE(done.find("\"epochs\":" + report::EpochsJson(h) + ","), std::string::npos) << done;
  EXPECT_NE(done.find("\"config\":{\"name\": \"tiny\"}"), std::string::npos) << done;
  // One rank: the epoch's throughput is rank 0's.
  EXPECT_NE(done.find("\"ranks\":[{\"rank\":0,\"images_per_second\":500,"), std::string::npos)
      << done;
}

TEST(DashboardServerTest, BasicAuth) {
  DashboardServer server(Info());
  DashboardOptions options;
  options.auth = metrics::BasicAuth{"ann", "s3cret:x"};
  const int port = server.Listen(options);
  const Reply none = Get(port, "/api/run");
  EXPECT_EQ(none.status, 401);
  EXPECT_NE(none.headers.find("WWW-Authenticate: Basic"), std::string::npos);
  // ann:wrong, then ann:s3cret:x.
  EXPECT_EQ(Get(port, "/api/run", "Authorization: Basic YW5uOndyb25n\r\n").status, 401);
  EXPECT_EQ(Get(port, "/", "Authorization: Basic YW5uOnMzY3JldDp4\r\n").status, 200);
}

TEST(DashboardServerTest, ControlEventsSetTheState) {
  DashboardServer server(Info());
  server.OnEpochStart(1, 2, 64);
  server.OnControl({5, "pause", 0});
  EXPECT_NE(server.RunJson(0).find("\"state\":\"paused\""), std::string::npos);
  server.OnControl({6, "resume", 0});
  EXPECT_NE(server.RunJson(0).find("\"state\":\"training\""), std::string::npos);
  server.OnControl({7, "stop", 0});
  EXPECT_NE(server.RunJson(0).find("\"state\":\"stopped\""), std::string::npos);
}

TEST(DashboardServerTest, BusyPortIsAnInputError) {
  DashboardServer first(Info());
  const int port = first.Listen({});
  DashboardServer second(Info());
  DashboardOptions options;
  options.port = port;
  EXPECT_THROW(second.Listen(options), InputError);
  options.bind_address = "::1";
  EXPECT_THROW(second.Listen(options), InputError);
}

}  // namespace
}  // namespace epochal::dashboard
