// delay_hub: an Ethernet switch in user space that holds every frame for a fixed delay, for
// the network-namespace multi-host test on kernels without the netem qdisc
// (CONFIG_NET_SCH_NETEM unset), where `tc qdisc add ... netem delay 2ms` is not available.
//
//   delay_hub DELAY_US TAP_NAME...
//
// Creates one TAP device per name (in the caller's network namespace; the caller then moves
// each into a "host" namespace with `ip link set NAME netns NS`, which keeps this process's
// file descriptor attached), prints "ready" on stdout, and forwards frames between them:
// each frame read from one port is written DELAY_US microseconds later to the port that
// last sent from its destination MAC address, or to every other port when that is unknown
// or a broadcast. Frames leave in arrival order (one delay for all, so a FIFO is a timed
// queue). Runs until SIGTERM or SIGINT. Single-threaded; test-only.
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

volatile std::sig_atomic_t g_stop = 0;
void OnSignal(int) { g_stop = 1; }

struct Frame {
  Clock::time_point due;
  size_t port = 0;  // where it came from
  std::vector<uint8_t> bytes;
};

// Opens a TAP device named `name` without packet information headers; exits on failure.
int OpenTap(const std::string& name) {
  const int fd = ::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    std::fprintf(stderr, "delay_hub: open /dev/net/tun: %s\n", std::strerror(errno));
    std::exit(1);
  }
  ifreq req{};
  req.ifr_flags = IFF_TAP | IFF_NO_PI;
  std::snprintf(req.ifr_name, IFNAMSIZ, "%s", name.c_str());
  if (::ioctl(fd, TUNSETIFF, &req) < 0) {
    std::fprintf(stderr, "delay_hub: TUNSETIFF %s: %s\n", name.c_str(), std::strerror(errno));
    std::exit(1);
  }
  return fd;
}

uint64_t MacKey(const uint8_t* mac) {
  uint64_t key = 0;
  for (int i = 0; i < 6; ++i) key = (key << 8) | mac[i];
  return key;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: delay_hub DELAY_US TAP_NAME...\n");
    return 2;
  }
  char* end = nullptr;
  const long delay_us = std::strtol(argv[1], &end, 10);
  if (end == argv[1] || *end != '\0' || delay_us < 0) {
    std::fprintf(stderr, "delay_hub: DELAY_US must be a non-negative integer, got '%s'\n", argv[1]);
    return 2;
  }
  const auto delay = std::chrono::microseconds(delay_us);

  std::vector<pollfd> ports;
  for (int i = 2; i < argc; ++i) ports.push_back({OpenTap(argv[i]), POLLIN, 0});
  std::signal(SIGTERM, OnSignal);
  std::signal(SIGINT, OnSignal);
  std::printf("ready\n");
  std::fflush(stdout);

  std::deque<Frame> queue;
  std::map<uint64_t, size_t> mac_to_port;
  std::array<uint8_t, 65536> buffer{};
  const auto send = [&ports](size_t port, const std::vector<uint8_t>& bytes) {
    // A full TAP queue drops the frame, as a switch would; TCP retransmits.
    (void)!::write(ports[port].fd, bytes.data(), bytes.size());
  };

  while (g_stop == 0) {
    // ppoll: microsecond timeouts, so frames leave on time without spinning.
    timespec timeout{0, 100'000'000};
    if (!queue.empty()) {
      const auto wait = std::max(Clock::duration::zero(), queue.front().due - Clock::now());
      const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(wait).count();
      timeout = {static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
    }
    const int ready = ::ppoll(ports.data(), ports.size(), &timeout, nullptr);
    if (ready < 0 && errno != EINTR) {
      std::fprintf(stderr, "delay_hub: ppoll: %s\n", std::strerror(errno));
      return 1;
    }
    const auto now = Clock::now();
    for (size_t p = 0; ready > 0 && p < ports.size(); ++p) {
      if ((ports[p].revents & POLLIN) == 0) continue;
      for (;;) {
        const ssize_t n = ::read(ports[p].fd, buffer.data(), buffer.size());
        if (n <= 0) break;
        if (n < 14) continue;  // not an Ethernet frame
        mac_to_port[MacKey(buffer.data() + 6)] = p;
        queue.push_back({now + delay, p, std::vector<uint8_t>(buffer.begin(), buffer.begin() + n)});
      }
    }
    while (!queue.empty() && queue.front().due <= Clock::now()) {
      const Frame& f = queue.front();
      const bool group = (f.bytes[0] & 1) != 0;
      const auto known = group ? mac_to_port.end() : mac_to_port.find(MacKey(f.bytes.data()));
      if (known != mac_to_port.end()) {
        if (known->second != f.port) send(known->second, f.bytes);
      } else {
        for (size_t p = 0; p < ports.size(); ++p) {
          if (p != f.port) send(p, f.bytes);
        }
      }
      queue.pop_front();
    }
  }
  for (const pollfd& p : ports) ::close(p.fd);
  return 0;
}
