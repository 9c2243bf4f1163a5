// epochal_allreduce_bench: MPI_Allreduce (float, SUM, in place) latency and bandwidth across
// message sizes, the measured side of the scaling model in docs/scaling.md.
//
// For each size: one checked all-reduce (rank r contributes r+1, every element must come back
// as n(n+1)/2), warm-up iterations, then timed iterations. Each timed iteration starts after a
// barrier; its time is the slowest rank's, so it is the time until the collective is complete
// everywhere. Rank 0 prints median and min time, algorithm bandwidth (bytes / time) and bus
// bandwidth (2(n-1)/n * bytes / time, as nccl-tests define it; comparable across rank counts
// and equal to the per-link bandwidth a ring all-reduce achieves).
//
//   mpiexec -n 2 epochal_allreduce_bench [--min-bytes 4K] [--max-bytes 64M] [--factor 2]
//                                        [--iters N] [--warmup N] [--json[=PATH]]
//
// Sizes accept K, M and G suffixes (powers of 1024) and are rounded down to whole floats.
// Without --iters the count is chosen per size: 1 GiB of traffic, clamped to [5, 200].
// --json alone prints JSON instead of the table; --json=PATH writes it to PATH as well.

// The deprecated MPI C++ bindings are not used; their headers warn under -Wextra.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace {

struct Options {
  std::int64_t min_bytes = 4 << 10;
  std::int64_t max_bytes = 64 << 20;
  std::int64_t factor = 2;
  int iters = 0;    // 0: chosen per size
  int warmup = -1;  // -1: chosen per size
  bool json_stdout = false;
  std::string json_path;
};

struct Result {
  std::int64_t bytes = 0;
  std::int64_t count = 0;
  int iters = 0;
  double median_s = 0;
  double min_s = 0;
  double max_s = 0;
  double algbw_gbps = 0;  // at the median, 1e9 bytes/s
  double busbw_gbps = 0;  // at the median, 1e9 bytes/s
};

[[noreturn]] void Usage(int rank, const char* why) {
  if (rank == 0) {
    std::fprintf(stderr,
                 "epochal_allreduce_bench: %s\n"
                 "usage: epochal_allreduce_bench [--min-bytes N] [--max-bytes N] [--factor 2|4]\n"
                 "                               [--iters N] [--warmup N] [--json[=PATH]]\n"
                 "  sizes take K/M/G suffixes (1024-based); default 4K..64M, factor 2\n",
                 why);
  }
  MPI_Finalize();
  std::exit(2);
}

bool ParseBytes(std::string_view text, std::int64_t* out) {
  if (text.empty()) return false;
  std::string digits(text);
  std::int64_t scale = 1;
  switch (digits.back()) {
    case 'k':
    case 'K':
      scale = std::int64_t{1} << 10;
      break;
    case 'm':
    case 'M':
      scale = std::int64_t{1} << 20;
      break;
    case 'g':
    case 'G':
      scale = std::int64_t{1} << 30;
      break;
    default:
      break;
  }
  if (scale != 1) digits.pop_back();
  if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos) return false;
  errno = 0;
  const long long value = std::strtoll(digits.c_str(), nullptr, 10);
  if (errno != 0 || value <= 0 || value > (std::int64_t{1} << 40) / scale) return false;
  *out = static_cast<std::int64_t>(value) * scale;
  return true;
}

bool ParseInt(std::string_view text, int lo, int hi, int* out) {
  std::int64_t value = 0;
  if (text.empty() || text.find_first_not_of("0123456789") != std::string_view::npos) return false;
  for (char c : text) {
    value = value * 10 + (c - '0');
    if (value > hi) return false;
  }
  if (value < lo) return false;
  *out = static_cast<int>(value);
  return true;
}

Options ParseOptions(int argc, char** argv, int rank) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    std::string_view value;
    bool has_value = false;
    if (const auto eq = arg.find('='); eq != std::string_view::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      has_value = true;
    }
    auto next = [&]() -> std::string_view {
      if (has_value) return value;
      if (i + 1 >= argc) Usage(rank, "missing value for a flag");
      return argv[++i];
    };
    if (arg == "--min-bytes") {
      if (!ParseBytes(next(), &opt.min_bytes)) Usage(rank, "bad --min-bytes");
    } else if (arg == "--max-bytes") {
      if (!ParseBytes(next(), &opt.max_bytes)) Usage(rank, "bad --max-bytes");
    } else if (arg == "--factor") {
      int f = 0;
      if (!ParseInt(next(), 2, 16, &f)) Usage(rank, "bad --factor (2..16)");
      opt.factor = f;
    } else if (arg == "--iters") {
      if (!ParseInt(next(), 1, 1000000, &opt.iters)) Usage(rank, "bad --iters (1..1000000)");
    } else if (arg == "--warmup") {
      if (!ParseInt(next(), 0, 1000000, &opt.warmup)) Usage(rank, "bad --warmup (0..1000000)");
    } else if (arg == "--json") {
      if (has_value) {
        if (value.empty()) Usage(rank, "empty --json path");
        opt.json_path = std::string(value);
      } else {
        opt.json_stdout = true;
      }
    } else if (arg == "--help" || arg == "-h") {
      Usage(rank, "help");
    } else {
      Usage(rank, "unknown flag");
    }
  }
  if (opt.min_bytes < 4 || opt.max_bytes < opt.min_bytes) {
    Usage(rank, "need 4 <= --min-bytes <= --max-bytes");
  }
  return opt;
}

int ItersFor(const Options& opt, std::int64_t bytes) {
  if (opt.iters > 0) return opt.iters;
  const std::int64_t budget = std::int64_t{1} << 30;
  return static_cast<int>(std::clamp<std::int64_t>(budget / bytes, 5, 200));
}

int WarmupFor(const Options& opt, int iters) {
  if (opt.warmup >= 0) return opt.warmup;
  return std::max(2, iters / 10);
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// One all-reduce of `count` floats, split into calls of at most INT_MAX elements.
void Allreduce(std::vector<float>& buf, std::int64_t count, MPI_Comm comm) {
  constexpr std::int64_t kMaxCall = 1 << 30;
  for (std::int64_t off = 0; off < count; off += kMaxCall) {
    const int n = static_cast<int>(std::min(kMaxCall, count - off));
    MPI_Allreduce(MPI_IN_PLACE, buf.data() + off, n, MPI_FLOAT, MPI_SUM, comm);
  }
}

Result RunSize(const Options& opt, std::int64_t bytes, int rank, int size, MPI_Comm comm) {
  Result r;
  r.count = bytes / static_cast<std::int64_t>(sizeof(float));
  r.bytes = r.count * static_cast<std::int64_t>(sizeof(float));
  r.iters = ItersFor(opt, r.bytes);
  std::vector<float> buf(static_cast<std::size_t>(r.count));

  // Correctness check: small integers sum exactly in float.
  std::fill(buf.begin(), buf.end(), static_cast<float>(rank + 1));
  Allreduce(buf, r.count, comm);
  const float expected = static_cast<float>(size) * static_cast<float>(size + 1) / 2.0f;
  int bad = 0;
  for (float v : buf) bad += (v != expected) ? 1 : 0;
  int bad_total = 0;
  MPI_Allreduce(&bad, &bad_total, 1, MPI_INT, MPI_SUM, comm);
  if (bad_total != 0) {
    if (rank == 0) {
      std::fprintf(stderr, "epochal_allreduce_bench: wrong sum at %lld bytes (%d elements)\n",
                   static_cast<long long>(r.bytes), bad_total);
    }
    MPI_Abort(comm, 1);
  }

  // Zeros stay zero under SUM: no growth towards inf, no denormals.
  std::fill(buf.begin(), buf.end(), 0.0f);
  const int warmup = WarmupFor(opt, r.iters);
  for (int i = 0; i < warmup; ++i) Allreduce(buf, r.count, comm);

  std::vector<double> local(static_cast<std::size_t>(r.iters));
  for (int i = 0; i < r.iters; ++i) {
    MPI_Barrier(comm);
    const double t0 = MPI_Wtime();
    Allreduce(buf, r.count, comm);
    local[static_cast<std::size_t>(i)] = MPI_Wtime() - t0;
  }
  std::vector<double> slowest(local.size());
  MPI_Reduce(local.data(), slowest.data(), r.iters, MPI_DOUBLE, MPI_MAX, 0, comm);
  if (rank == 0) {
    r.median_s = Median(slowest);
    r.min_s = *std::min_element(slowest.begin(), slowest.end());
    r.max_s = *std::max_element(slowest.begin(), slowest.end());
    const double b = static_cast<double>(r.bytes);
    r.algbw_gbps = b / r.median_s / 1e9;
    r.busbw_gbps = r.algbw_gbps * 2.0 * (size - 1) / size;
  }
  return r;
}

std::string JsonEscape(const char* s) {
  std::string out;
  for (; *s != '\0'; ++s) {
    const char c = *s;
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out;
}

void WriteJson(std::FILE* f, int size, const char* library, const std::vector<Result>& results) {
  std::fprintf(
      f, "{\"ranks\": %d, \"mpi_library\": \"%s\", \"op\": \"allreduce_sum_float_inplace\",\n",
      size, JsonEscape(library).c_str());
  std::fprintf(f, " \"results\": [\n");
  for (std::size_t i = 0; i < results.size(); ++i) {
    const Result& r = results[i];
    std::fprintf(
        f,
        "  {\"bytes\": %lld, \"count\": %lld, \"iters\": %d, \"median_us\": %.3f, "
        "\"min_us\": %.3f, \"max_us\": %.3f, \"algbw_GBps\": %.4f, \"busbw_GBps\": %.4f}%s\n",
        static_cast<long long>(r.bytes), static_cast<long long>(r.count), r.iters, r.median_s * 1e6,
        r.min_s * 1e6, r.max_s * 1e6, r.algbw_gbps, r.busbw_gbps,
        i + 1 < results.size() ? "," : "");
  }
  std::fprintf(f, "]}\n");
}

void PrintTable(int size, const char* library, const std::vector<Result>& results) {
  std::printf("# MPI_Allreduce float SUM in place, %d ranks, %s\n", size, library);
  std::printf("# time: slowest rank per iteration; bandwidths at the median, GB/s = 1e9 B/s\n");
  std::printf("%12s %11s %6s %12s %12s %10s %10s\n", "bytes", "floats", "iters", "median_us",
              "min_us", "algbw_GBps", "busbw_GBps");
  for (const Result& r : results) {
    std::printf("%12lld %11lld %6d %12.1f %12.1f %10.3f %10.3f\n", static_cast<long long>(r.bytes),
                static_cast<long long>(r.count), r.iters, r.median_s * 1e6, r.min_s * 1e6,
                r.algbw_gbps, r.busbw_gbps);
  }
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0;
  int size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  const Options opt = ParseOptions(argc, argv, rank);

  char library[MPI_MAX_LIBRARY_VERSION_STRING] = {};
  int library_len = 0;
  MPI_Get_library_version(library, &library_len);
  // Keep the first line only ("Open MPI v4.1.4, package: ...").
  if (char* nl = std::strchr(library, '\n'); nl != nullptr) *nl = '\0';
  if (char* comma = std::strchr(library, ','); comma != nullptr) *comma = '\0';

  std::vector<Result> results;
  for (std::int64_t bytes = opt.min_bytes; bytes <= opt.max_bytes; bytes *= opt.factor) {
    results.push_back(RunSize(opt, bytes, rank, size, MPI_COMM_WORLD));
  }

  if (rank == 0) {
    if (opt.json_stdout) {
      WriteJson(stdout, size, library, results);
    } else {
      PrintTable(size, library, results);
    }
    if (!opt.json_path.empty()) {
      std::FILE* f = std::fopen(opt.json_path.c_str(), "w");
      if (f == nullptr) {
        std::fprintf(stderr, "epochal_allreduce_bench: cannot write %s: %s\n",
                     opt.json_path.c_str(), std::strerror(errno));
        MPI_Abort(MPI_COMM_WORLD, 1);
      }
      WriteJson(f, size, library, results);
      std::fclose(f);
    }
  }
  MPI_Finalize();
  return 0;
}
