// GradientBucketer: fuses parameter gradients into buckets and all-reduces each bucket
// with MPI_Iallreduce while the backward pass is still producing the rest.
//
// Design. Backward produces the last layer's gradients first, so buckets are cut walking
// the parameters from last to first: a bucket takes parameters until the next one would
// push it past the byte threshold (a parameter larger than the threshold gets a bucket of
// its own). As soon as every parameter of a bucket is marked ready its all-reduce starts
// and overlaps the backward of the earlier layers. The last bucket (the first layers'
// parameters) also carries a few `extras` floats, so the step's loss sum, correct count
// and sample count reach every rank without a collective of their own (in f32; bf16 gives
// them a small one, started with the last bucket: see Wire precision).
//
// Progress. Open MPI's shared-memory and TCP transports move bytes only inside MPI calls,
// so a started MPI_Iallreduce makes no progress while the caller computes. Two modes:
//  - Progress::kThread (when MPI granted MPI_THREAD_MULTIPLE): a progress thread wakes
//    every `poll_interval` while buckets are in flight and calls MPI_Test on them, so the
//    rendezvous handshakes of large messages advance during the long convolution
//    backward passes. It sleeps on a condition variable otherwise, and blocks on the
//    bucketer's mutex while Wait() runs, so it never spins.
//  - Progress::kPolling: only the caller's Poll() between layers' backward passes drives
//    progress (one MPI_Test per bucket in flight, a few microseconds).
// docs/distributed.md compares the two on this machine.
//
// Ordering. MPI requires every rank to start collectives on a communicator in the same
// order. Buckets therefore start strictly in bucket order: a bucket that fills before an
// earlier one waits until that one starts. Ranks may mark parameters in any order; the
// sequence of MPI_Iallreduce calls is the same everywhere. The bucketer works on its own
// duplicate of the communicator, so its collectives never interleave with other
// collectives (a synchronized batch norm's, the coordinator's) on the original one.
//
// Every rank forms identical buckets: the layout depends only on the parameters' sizes,
// their order and the threshold, which all replicas share (PlanBuckets is a pure
// function).
//
// Timing, per step: allreduce_seconds() sums, over buckets, the time from a bucket's start
// to the moment its completion was observed (by Poll or Wait); exposed_wait_seconds() is
// the time Wait() spent blocked on MPI, the part of that time the step could not hide.
// Wait() blocks only while some bucket is in flight, so exposed <= allreduce always holds.
// The copy of the sums back into the gradients is reported separately (unpack_seconds).
//
// Wire precision. WirePrecision::kF32 (the default) sums the buckets as floats with
// MPI_SUM, extras included, one MPI_Iallreduce per bucket. WirePrecision::kBf16 halves the
// bytes: MarkReady converts each gradient to bf16 (round to nearest even, NaN stays NaN;
// core/bf16.h) into a 16-bit fusion buffer, and each bucket is summed with a user-defined,
// commutative MPI op over a 2-byte datatype that adds two bf16 values in float and rounds
// the sum back to bf16; Unpack widens the sums back into the gradients. The extras must
// stay exact (counts, the control word), so they never travel in bf16: they keep a float
// buffer of their own and their own small MPI_Iallreduce(MPI_FLOAT, MPI_SUM), started
// right after the last bucket's, so the sequence of collectives is still the same on
// every rank; the last bucket counts as completed once both of its requests are. The
// bucket layout is the same in both (the threshold counts f32 bytes), and so are
// progress, ordering and timings. Error of a sum over N ranks: each input rounding is at
// most u = 2^-8 relative (bf16 keeps 8 significant bits) and each of the N-1 partial-sum
// roundings another u of the partial sum, so at most ((1 + u)^N - 1) sum |x|
// (tests/dist/gradient_bucketer_test.cc derives it; docs/benchmarks.md measures the error
// on real gradients).
//
// A solo (or single-rank) communicator does no MPI, no copies and no conversion, in
// either precision: gradients and extras keep their values, and every time reads zero.
//
// Ownership: the gradient spans are borrowed and must outlive the bucketer; the fusion
// buffers (and, in bf16, the MPI op and datatype) are owned. Non-copyable, non-movable (MPI holds
// pointers into the buffers while a step is in flight). Thread safety: the public methods are
// called from one thread (the one that calls MPI); with Progress::kThread the bucketer's own thread
// shares the requests under a mutex, which needs MPI_THREAD_MULTIPLE.
#pragma once

#include <mpi.h>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include "epochal/dist/communicator.h"

namespace epochal::dist {

// The one default of the fusion threshold (training.bucket_bytes 0, --bucket-bytes unset).
// Small buckets let the conv layers' gradients leave layer by layer instead of in one
// exposed tail bucket (docs/scaling.md, "How the trainer follows these notes").
inline constexpr size_t kDefaultBucketBytes = size_t{64} << 10;

// The bucket layout for parameters of `sizes` floats (registration order) under
// `bucket_bytes`: bucket b lists its parameter indices in the order they were added
// (descending). Every parameter appears in exactly one bucket. Pure; no MPI.
std::vector<std::vector<size_t>> PlanBuckets(std::span<const size_t> sizes, size_t bucket_bytes);

// How in-flight all-reduces advance while backward computes (see the file comment).
enum class Progress { kPolling, kThread };

// "poll" / "thread".
const char* ProgressName(Progress progress);

// True when MPI is initialized with MPI_THREAD_MULTIPLE, which Progress::kThread needs.
bool ThreadProgressAvailable();

// What the gradients travel as (see the file comment); the extras are always f32.
enum class WirePrecision { kF32, kBf16 };

// "f32" / "bf16".
const char* WirePrecisionName(WirePrecision precision);

class GradientBucketer {
 public:
  // Collective (duplicates `comm`). `grads` in forward (registration) order; the spans
  // must stay valid and keep their sizes for the bucketer's lifetime. `num_extras` floats
  // ride at the end of the last bucket. Throws Error when a bucket exceeds INT_MAX floats
  // (MPI's count limit), or for Progress::kThread without MPI_THREAD_MULTIPLE. A solo or
  // single-rank communicator never starts the thread, and ignores `wire` (nothing is sent).
  GradientBucketer(const Communicator& comm, std::vector<std::span<float>> grads,
                   size_t bucket_bytes = kDefaultBucketBytes, size_t num_extras = 0,
                   Progress progress = Progress::kPolling,
                   std::chrono::microseconds poll_interval = std::chrono::microseconds(200),
                   WirePrecision wire = WirePrecision::kF32);
  // If a step is still in flight (Wait was never reached, e.g. after an exception), the
  // fusion buffers (and the bf16 op and datatype) are deliberately leaked: MPI may still
  // write into them, and freeing them would corrupt the heap; waiting could hang when
  // other ranks have gone.
  ~GradientBucketer();

  GradientBucketer(const GradientBucketer&) = delete;
  GradientBucketer& operator=(const GradientBucketer&) = delete;

  // Starts a step: every parameter unmarked, timings zero. Throws Error when the previous
  // step's all-reduces were started but not waited for.
  void BeginStep();

  // Parameter `param_index`'s gradient is final for this step. Copies it into its bucket
  // (the gradient was just written, so it is still in cache) and starts every bucket
  // that is now complete and next in order. After this call the caller must not write to
  // that gradient until Wait returns. Throws Error for an index out of range or a
  // parameter already marked in this step (both bugs).
  void MarkReady(size_t param_index);

  // Where the caller writes this step's extras; they are sent with the last bucket, so
  // write them before marking that bucket's last parameter. After Wait they hold the sums
  // over ranks. Solo: left as written.
  std::span<float> extras() { return extras_; }

  // Drives MPI progress: MPI_Test on every bucket in flight. Call between layers. With
  // Progress::kThread it only tests when the progress thread is not doing so already.
  void Poll();

  Progress progress() const { return progress_; }
  // kBf16 only when asked for and there is someone to send to (solo: kF32).
  WirePrecision wire_precision() const { return wire_; }

  // Buckets of this step whose all-reduce has completed (solo: those started). Safe to
  // call while the progress thread runs.
  size_t completed_buckets();

  // Completes the step: waits for every bucket, then writes the sums into the gradients.
  // Throws Error naming the first parameter not marked ready (before blocking; the step
  // stays open so the caller may mark it and call Wait again).
  void Wait();

  size_t num_params() const { return params_.size(); }
  size_t num_buckets() const { return buckets_.size(); }
  // Parameter indices of bucket `b`, in the order they were added (descending).
  std::span<const size_t> bucket_params(size_t b) const { return buckets_.at(b).params; }
  // Values bucket `b` sends, extras included (in bf16 the gradients are 2-byte values).
  size_t bucket_floats(size_t b) const { return buckets_.at(b).floats; }
  // Bytes bucket `b`'s all-reduces take from each rank: 4 per gradient in f32, 2 in bf16,
  // and 4 per extra in both.
  size_t bucket_wire_bytes(size_t b) const;
  size_t bucket_of(size_t param_index) const { return params_.at(param_index).bucket; }

  // This step's timings (see the file comment); valid after Wait.
  double exposed_wait_seconds() const { return exposed_wait_seconds_; }
  double allreduce_seconds() const { return allreduce_seconds_; }
  double unpack_seconds() const { return unpack_seconds_; }
  // 1 - exposed / allreduce, clamped to [0, 1]; 0 when nothing was all-reduced.
  double hidden_fraction() const;

 private:
  using Clock = std::chrono::steady_clock;

  struct Param {
    std::span<float> grad;
    size_t bucket = 0;
    size_t offset = 0;  // floats from the start of the bucket's buffer
  };
  struct Bucket {
    std::vector<size_t> params;  // in the order added (descending index)
    size_t offset = 0;           // floats from the start of buffer_
    size_t floats = 0;           // extras included
    size_t grads = 0;            // gradient values only
    // Per step.
    size_t unready = 0;
    int pending = 0;  // its requests still in flight (bf16's last bucket has two)
    bool started = false;
    bool completed = false;
    Clock::time_point start_time;
  };

  bool Active() const { return !comm_.solo() && comm_.size() > 1; }
  void StartReadyBuckets();
  // MPI_Test on every bucket in flight; the caller holds mu_ in thread mode.
  void TestInFlight();
  // Request `request` completed; true when that completed its bucket.
  bool Complete(size_t request, Clock::time_point now);
  void Unpack(size_t bucket);
  void ProgressLoop();

  Communicator comm_;
  std::vector<Param> params_;
  std::vector<Bucket> buckets_;
  // f32: every bucket, back to back, the extras last. bf16: the extras only.
  std::vector<float> buffer_;
  std::vector<uint16_t> wire_buffer_;  // bf16: every bucket's gradients, back to back
  std::span<float> extras_;
  size_t num_extras_ = 0;
  WirePrecision wire_ = WirePrecision::kF32;
  MPI_Datatype bf16_type_ = MPI_DATATYPE_NULL;  // bf16 only: 2 bytes
  MPI_Op bf16_sum_ = MPI_OP_NULL;               // bf16 only: sum in float, round to bf16
  // One per bucket, then (bf16 with extras) one for the extras, which belongs to the last
  // bucket; MPI_REQUEST_NULL when idle.
  std::vector<MPI_Request> requests_;
  std::vector<int> completed_indices_;  // scratch for MPI_Waitsome
  std::vector<size_t> just_completed_;  // scratch: buckets one MPI_Waitsome completed
  std::vector<char> marked_;            // per parameter, this step
  size_t next_to_start_ = 0;            // buckets start in index order
  size_t in_flight_ = 0;
  bool step_open_ = true;
  double exposed_wait_seconds_ = 0;
  double allreduce_seconds_ = 0;
  double unpack_seconds_ = 0;

  // Progress::kThread only. mu_ guards requests_, the buckets' per-step fields and
  // in_flight_ against the progress thread; the caller's thread takes it in MarkReady,
  // Poll and Wait (for the whole wait, so the thread stays off the requests).
  Progress progress_ = Progress::kPolling;
  std::chrono::microseconds poll_interval_;
  std::mutex mu_;
  std::condition_variable work_;
  bool shutdown_ = false;
  std::exception_ptr thread_error_;  // a failed MPI_Test on the progress thread
  std::thread thread_;
};

}  // namespace epochal::dist
