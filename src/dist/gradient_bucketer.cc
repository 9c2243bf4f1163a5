#include "epochal/dist/gradient_bucketer.h"

#include <algorithm>
#include <climits>
#include <exception>
#include <utility>

#include "epochal/core/bf16.h"
#include "epochal/core/error.h"
#include "epochal/dist/mpi_check.h"

namespace epochal::dist {
namespace {

double Seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

// The bf16 wire's MPI op: inout[i] = bf16(float(in[i]) + float(inout[i])). Commutative
// (float addition is, and the rounding depends only on the sum), so MPI may combine
// partial sums in any order; like MPI_SUM on floats it is not associative.
void Bf16Sum(void* in, void* inout, int* len, MPI_Datatype* /*type*/) {
  // MPI passes two distinct buffers.
  AddBf16(static_cast<const uint16_t*>(in), static_cast<uint16_t*>(inout),
          static_cast<size_t>(*len));
}

bool MpiFinalized() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  return finalized != 0;
}

}  // namespace

const char* WirePrecisionName(WirePrecision precision) {
  return precision == WirePrecision::kBf16 ? "bf16" : "f32";
}

const char* ProgressName(Progress progress) {
  return progress == Progress::kThread ? "thread" : "poll";
}

bool ThreadProgressAvailable() {
  int initialized = 0;
  int finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (!initialized || finalized) return false;
  int level = MPI_THREAD_SINGLE;
  MPI_Query_thread(&level);
  return level == MPI_THREAD_MULTIPLE;
}

std::vector<std::vector<size_t>> PlanBuckets(std::span<const size_t> sizes, size_t bucket_bytes) {
  std::vector<std::vector<size_t>> buckets;
  std::vector<size_t> current;
  size_t current_bytes = 0;
  for (size_t i = sizes.size(); i-- > 0;) {
    const size_t bytes = sizes[i] * sizeof(float);
    if (!current.empty() && current_bytes + bytes > bucket_bytes) {
      buckets.push_back(std::move(current));
      current.clear();
      current_bytes = 0;
    }
    current.push_back(i);
    current_bytes += bytes;
  }
  if (!current.empty()) buckets.push_back(std::move(current));
  return buckets;
}

GradientBucketer::GradientBucketer(const Communicator& comm, std::vector<std::span<float>> grads,
                                   size_t bucket_bytes, size_t num_extras, Progress progress,
                                   std::chrono::microseconds poll_interval, WirePrecision wire)
    : comm_(comm.Duplicate()), num_extras_(num_extras), poll_interval_(poll_interval) {
  std::vector<size_t> sizes(grads.size());
  params_.resize(grads.size());
  for (size_t i = 0; i < grads.size(); ++i) {
    sizes[i] = grads[i].size();
    params_[i].grad = grads[i];
  }
  std::vector<std::vector<size_t>> plan = PlanBuckets(sizes, bucket_bytes);
  // Without parameters the extras still need a bucket; Wait starts it.
  if (plan.empty() && num_extras > 0) plan.emplace_back();

  buckets_.resize(plan.size());
  size_t total = 0;
  for (size_t b = 0; b < plan.size(); ++b) {
    Bucket& bucket = buckets_[b];
    bucket.params = std::move(plan[b]);
    bucket.offset = total;
    for (size_t p : bucket.params) {
      params_[p].bucket = b;
      params_[p].offset = bucket.floats;
      bucket.floats += sizes[p];
    }
    bucket.grads = bucket.floats;
    if (b + 1 == plan.size()) bucket.floats += num_extras;
    EPOCHAL_CHECK(bucket.floats <= static_cast<size_t>(INT_MAX), "gradient bucket ", b, " holds ",
                  bucket.floats, " floats, more than one MPI_Iallreduce can send");
    total += bucket.floats;
  }
  // Solo or single-rank: nothing is sent, so only the extras need storage (and bf16 is
  // moot: nothing is converted).
  if (Active() && wire == WirePrecision::kBf16) {
    wire_ = WirePrecision::kBf16;
    wire_buffer_.assign(total - num_extras, 0);
    buffer_.assign(num_extras, 0.0f);
    extras_ = std::span<float>(buffer_);
    EPOCHAL_MPI_CHECK(MPI_Type_contiguous(2, MPI_BYTE, &bf16_type_));
    EPOCHAL_MPI_CHECK(MPI_Type_commit(&bf16_type_));
    EPOCHAL_MPI_CHECK(MPI_Op_create(&Bf16Sum, /*commute=*/1, &bf16_sum_));
  } else if (Active()) {
    buffer_.assign(total, 0.0f);
    extras_ = std::span<float>(buffer_).subspan(total - num_extras, num_extras);
  } else {
    buffer_.assign(num_extras, 0.0f);
    extras_ = std::span<float>(buffer_);
  }
  const bool extras_request = wire_ == WirePrecision::kBf16 && num_extras > 0;
  requests_.assign(buckets_.size() + (extras_request ? 1 : 0), MPI_REQUEST_NULL);
  completed_indices_.assign(requests_.size(), 0);
  just_completed_.reserve(buckets_.size());
  marked_.assign(params_.size(), 0);
  BeginStep();
  if (progress == Progress::kThread && Active()) {
    EPOCHAL_CHECK(ThreadProgressAvailable(),
                  "GradientBucketer: a progress thread needs MPI_THREAD_MULTIPLE");
    progress_ = Progress::kThread;
    thread_ = std::thread([this] { ProgressLoop(); });
  }
}

GradientBucketer::~GradientBucketer() {
  if (thread_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      shutdown_ = true;
    }
    work_.notify_one();
    thread_.join();
  }
  if (in_flight_ > 0) {
    // See the header: MPI may still write into the buffers and call the op.
    new std::vector<float>(std::move(buffer_));
    new std::vector<uint16_t>(std::move(wire_buffer_));
    return;
  }
  if (MpiFinalized()) return;
  if (bf16_sum_ != MPI_OP_NULL) MPI_Op_free(&bf16_sum_);
  if (bf16_type_ != MPI_DATATYPE_NULL) MPI_Type_free(&bf16_type_);
}

size_t GradientBucketer::bucket_wire_bytes(size_t b) const {
  const Bucket& bucket = buckets_.at(b);
  const size_t extras = bucket.floats - bucket.grads;
  const size_t grad_bytes = wire_ == WirePrecision::kBf16 ? sizeof(uint16_t) : sizeof(float);
  return bucket.grads * grad_bytes + extras * sizeof(float);
}

void GradientBucketer::BeginStep() {
  std::lock_guard<std::mutex> lock(mu_);
  EPOCHAL_CHECK(!step_open_ || next_to_start_ == 0,
                "GradientBucketer::BeginStep: the previous step's all-reduces were started "
                "but never waited for");
  std::fill(marked_.begin(), marked_.end(), 0);
  for (Bucket& bucket : buckets_) {
    bucket.unready = bucket.params.size();
    bucket.started = false;
    bucket.completed = false;
    bucket.pending = 0;
  }
  next_to_start_ = 0;
  in_flight_ = 0;
  step_open_ = true;
  exposed_wait_seconds_ = 0;
  allreduce_seconds_ = 0;
  unpack_seconds_ = 0;
}

void GradientBucketer::MarkReady(size_t param_index) {
  EPOCHAL_CHECK(step_open_, "GradientBucketer::MarkReady after Wait; call BeginStep first");
  EPOCHAL_CHECK(param_index < params_.size(), "parameter ", param_index, " of ", params_.size());
  EPOCHAL_CHECK(!marked_[param_index], "parameter ", param_index,
                " marked ready twice in one step");
  marked_[param_index] = 1;
  const Param& param = params_[param_index];
  Bucket& bucket = buckets_[param.bucket];
  // The bucket has not started, so MPI and the progress thread leave its bytes alone.
  if (wire_ == WirePrecision::kBf16) {
    FloatsToBf16(param.grad.data(), wire_buffer_.data() + bucket.offset + param.offset,
                 param.grad.size());
  } else if (Active()) {
    std::copy(param.grad.begin(), param.grad.end(),
              buffer_.begin() + static_cast<std::ptrdiff_t>(bucket.offset + param.offset));
  }
  std::unique_lock<std::mutex> lock(mu_);
  if (--bucket.unready == 0) {
    const size_t in_flight_before = in_flight_;
    StartReadyBuckets();
    const bool started = in_flight_ > in_flight_before;
    lock.unlock();
    if (started && progress_ == Progress::kThread) work_.notify_one();
  }
}

void GradientBucketer::StartReadyBuckets() {
  // In bucket order only, so every rank issues the same sequence of collectives whatever
  // order its parameters were marked in.
  while (next_to_start_ < buckets_.size() && buckets_[next_to_start_].unready == 0) {
    Bucket& bucket = buckets_[next_to_start_];
    bucket.started = true;
    if (wire_ == WirePrecision::kBf16) {
      bucket.start_time = Clock::now();
      // A bucket of extras only sends no gradients; every rank makes the same call.
      EPOCHAL_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, wire_buffer_.data() + bucket.offset,
                                       static_cast<int>(bucket.grads), bf16_type_, bf16_sum_,
                                       comm_.comm(), &requests_[next_to_start_]));
      bucket.pending = 1;
      // The extras stay f32, right behind the last bucket's gradients.
      if (next_to_start_ + 1 == buckets_.size() && num_extras_ > 0) {
        EPOCHAL_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, buffer_.data(),
                                         static_cast<int>(num_extras_), MPI_FLOAT, MPI_SUM,
                                         comm_.comm(), &requests_[buckets_.size()]));
        bucket.pending = 2;
      }
      ++in_flight_;
    } else if (Active()) {
      bucket.start_time = Clock::now();
      EPOCHAL_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, buffer_.data() + bucket.offset,
                                       static_cast<int>(bucket.floats), MPI_FLOAT, MPI_SUM,
                                       comm_.comm(), &requests_[next_to_start_]));
      bucket.pending = 1;
      ++in_flight_;
    } else {
      bucket.completed = true;
    }
    ++next_to_start_;
  }
}

bool GradientBucketer::Complete(size_t request, Clock::time_point now) {
  // The request past the buckets' is the extras', part of the last bucket.
  Bucket& b = buckets_[std::min(request, buckets_.size() - 1)];
  if (--b.pending > 0) return false;
  b.completed = true;
  allreduce_seconds_ += Seconds(now - b.start_time);
  --in_flight_;
  return true;
}

void GradientBucketer::Unpack(size_t bucket) {
  const Bucket& b = buckets_[bucket];
  if (wire_ == WirePrecision::kBf16) {
    for (size_t p : b.params) {
      const Param& param = params_[p];
      Bf16ToFloats(wire_buffer_.data() + b.offset + param.offset, param.grad.data(),
                   param.grad.size());
    }
    return;  // the extras were reduced in place, in f32
  }
  for (size_t p : b.params) {
    const Param& param = params_[p];
    const auto src = buffer_.begin() + static_cast<std::ptrdiff_t>(b.offset + param.offset);
    std::copy(src, src + static_cast<std::ptrdiff_t>(param.grad.size()), param.grad.begin());
  }
}

void GradientBucketer::Poll() {
  std::unique_lock<std::mutex> lock(mu_, std::try_to_lock);
  if (!lock.owns_lock()) return;  // the progress thread is testing right now
  TestInFlight();
}

void GradientBucketer::TestInFlight() {
  if (in_flight_ == 0) return;
  // Requests not started, or already completed (MPI_Test resets them), are null.
  for (size_t r = 0; r < requests_.size(); ++r) {
    if (requests_[r] == MPI_REQUEST_NULL) continue;
    int done = 0;
    EPOCHAL_MPI_CHECK(MPI_Test(&requests_[r], &done, MPI_STATUS_IGNORE));
    if (done) Complete(r, Clock::now());
  }
}

void GradientBucketer::Wait() {
  EPOCHAL_CHECK(step_open_, "GradientBucketer::Wait called twice; call BeginStep first");
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!marked_[i]) {
      throw Error(::epochal::detail::StrCat("GradientBucketer::Wait: parameter ", i, " (bucket ",
                                            params_[i].bucket, ") was not marked ready this step"));
    }
  }
  // Held for the whole wait: the progress thread must not test requests MPI_Waitsome
  // may complete. It blocks on the mutex meanwhile (no spinning).
  std::lock_guard<std::mutex> lock(mu_);
  if (thread_error_) std::rethrow_exception(thread_error_);
  StartReadyBuckets();  // a bucket without parameters (extras only) starts here
  if (Active()) {
    Clock::duration exposed{};
    Clock::duration unpack{};
    // Buckets Poll saw complete are unpacked first; then each wait returns some buckets,
    // unpacked while the rest are still on the wire.
    Clock::time_point t0 = Clock::now();
    for (size_t b = 0; b < buckets_.size(); ++b) {
      if (buckets_[b].completed) Unpack(b);
    }
    unpack += Clock::now() - t0;
    while (in_flight_ > 0) {
      int count = 0;
      const Clock::time_point before = Clock::now();
      EPOCHAL_MPI_CHECK(MPI_Waitsome(static_cast<int>(requests_.size()), requests_.data(), &count,
                                     completed_indices_.data(), MPI_STATUSES_IGNORE));
      const Clock::time_point after = Clock::now();
      exposed += after - before;
      just_completed_.clear();
      for (int k = 0; k < count; ++k) {
        const auto request = static_cast<size_t>(completed_indices_[k]);
        if (Complete(request, after))
          just_completed_.push_back(std::min(request, buckets_.size() - 1));
      }
      for (size_t b : just_completed_) Unpack(b);
      unpack += Clock::now() - after;
    }
    exposed_wait_seconds_ = Seconds(exposed);
    unpack_seconds_ = Seconds(unpack);
  }
  step_open_ = false;
}

size_t GradientBucketer::completed_buckets() {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<size_t>(
      std::count_if(buckets_.begin(), buckets_.end(), [](const Bucket& b) { return b.completed; }));
}

void GradientBucketer::ProgressLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    work_.wait(lock, [this] { return shutdown_ || in_flight_ > 0; });
    if (shutdown_) return;
    try {
      TestInFlight();
    } catch (...) {  // A failed MPI_Test: Wait() rethrows it on the caller's thread.
      thread_error_ = std::current_exception();
      return;
    }
    // Sleep without the lock so MarkReady and Wait never queue behind the sleep.
    lock.unlock();
    std::this_thread::sleep_for(poll_interval_);
    lock.lock();
  }
}

double GradientBucketer::hidden_fraction() const {
  if (allreduce_seconds_ <= 0) return 0.0;
  return std::clamp(1.0 - exposed_wait_seconds_ / allreduce_seconds_, 0.0, 1.0);
}

}  // namespace epochal::dist
