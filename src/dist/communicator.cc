#include "epochal/dist/communicator.h"

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <utility>

#include "epochal/core/error.h"
#include "epochal/dist/mpi_check.h"
#include "epochal/dist/mpi_environment.h"

namespace epochal::dist {
namespace {

// MPI counts are int: larger buffers go in pieces of at most INT_MAX elements.
template <typename F>
void ForEachChunk(size_t n, F&& f) {
  constexpr size_t kMaxChunk = static_cast<size_t>(INT_MAX);
  for (size_t begin = 0; begin < n; begin += kMaxChunk) {
    f(begin, static_cast<int>(std::min(kMaxChunk, n - begin)));
  }
}

template <typename T>
MPI_Datatype MpiType();
template <>
MPI_Datatype MpiType<float>() {
  return MPI_FLOAT;
}
template <>
MPI_Datatype MpiType<double>() {
  return MPI_DOUBLE;
}
template <>
MPI_Datatype MpiType<int64_t>() {
  return MPI_INT64_T;
}

template <typename T>
void BroadcastSpan(MPI_Comm comm, std::span<T> data, int root) {
  ForEachChunk(data.size(), [&](size_t begin, int count) {
    EPOCHAL_MPI_CHECK(MPI_Bcast(data.data() + begin, count, MpiType<T>(), root, comm));
  });
}

template <typename T>
void AllreduceSpan(MPI_Comm comm, std::span<T> data, MPI_Op op) {
  ForEachChunk(data.size(), [&](size_t begin, int count) {
    EPOCHAL_MPI_CHECK(
        MPI_Allreduce(MPI_IN_PLACE, data.data() + begin, count, MpiType<T>(), op, comm));
  });
}

}  // namespace

Communicator::Communicator(MPI_Comm comm) : comm_(comm), solo_(false) {
  if (!MpiEnvironment::Initialized()) {
    throw Error(
        "Communicator: MPI is not initialized (create an MpiEnvironment first, or use "
        "Communicator::Solo() / WorldOrSolo())");
  }
  EPOCHAL_CHECK(comm != MPI_COMM_NULL, "Communicator over MPI_COMM_NULL");
  EPOCHAL_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
  EPOCHAL_MPI_CHECK(MPI_Comm_size(comm_, &size_));
}

Communicator::Communicator(SoloTag) {}

Communicator Communicator::Solo() { return Communicator(SoloTag{}); }

Communicator Communicator::WorldOrSolo() {
  return MpiEnvironment::Initialized() ? Communicator(MPI_COMM_WORLD) : Solo();
}

Communicator::~Communicator() {
  if (owned_ && MpiEnvironment::Initialized()) MPI_Comm_free(&comm_);
}

Communicator::Communicator(Communicator&& other) noexcept
    : comm_(std::exchange(other.comm_, MPI_COMM_NULL)),
      rank_(other.rank_),
      size_(other.size_),
      solo_(other.solo_),
      owned_(std::exchange(other.owned_, false)) {}

Communicator& Communicator::operator=(Communicator&& other) noexcept {
  if (this != &other) {
    if (owned_ && MpiEnvironment::Initialized()) MPI_Comm_free(&comm_);
    comm_ = std::exchange(other.comm_, MPI_COMM_NULL);
    rank_ = other.rank_;
    size_ = other.size_;
    solo_ = other.solo_;
    owned_ = std::exchange(other.owned_, false);
  }
  return *this;
}

Communicator Communicator::Duplicate() const {
  if (solo_) return Solo();
  MPI_Comm dup = MPI_COMM_NULL;
  EPOCHAL_MPI_CHECK(MPI_Comm_dup(comm_, &dup));
  Communicator result(dup);
  result.owned_ = true;
  return result;
}

void Communicator::CheckRoot(int root) const {
  EPOCHAL_CHECK(root >= 0 && root < size_, "root ", root, " of ", size_, " ranks");
}

void Communicator::Barrier() const {
  if (solo_) return;
  EPOCHAL_MPI_CHECK(MPI_Barrier(comm_));
}

void Communicator::Broadcast(std::span<float> data, int root) const {
  CheckRoot(root);
  if (!solo_) BroadcastSpan(comm_, data, root);
}

void Communicator::Broadcast(std::span<double> data, int root) const {
  CheckRoot(root);
  if (!solo_) BroadcastSpan(comm_, data, root);
}

void Communicator::Broadcast(std::span<int64_t> data, int root) const {
  CheckRoot(root);
  if (!solo_) BroadcastSpan(comm_, data, root);
}

void Communicator::Broadcast(std::string* data, int root) const {
  CheckRoot(root);
  if (solo_) return;
  int64_t length = static_cast<int64_t>(data->size());
  EPOCHAL_MPI_CHECK(MPI_Bcast(&length, 1, MPI_INT64_T, root, comm_));
  if (rank_ != root) data->resize(static_cast<size_t>(length));
  BroadcastBytes(data->data(), data->size(), root);
}

void Communicator::BroadcastBytes(void* data, size_t bytes, int root) const {
  CheckRoot(root);
  if (solo_) return;
  char* base = static_cast<char*>(data);
  ForEachChunk(bytes, [&](size_t begin, int count) {
    EPOCHAL_MPI_CHECK(MPI_Bcast(base + begin, count, MPI_BYTE, root, comm_));
  });
}

void Communicator::AllreduceSum(std::span<double> data) const {
  if (!solo_) AllreduceSpan(comm_, data, MPI_SUM);
}

void Communicator::AllreduceSum(std::span<float> data) const {
  if (!solo_) AllreduceSpan(comm_, data, MPI_SUM);
}

void Communicator::AllreduceSum(std::span<int64_t> data) const {
  if (!solo_) AllreduceSpan(comm_, data, MPI_SUM);
}

int64_t Communicator::AllreduceMax(int64_t value) const {
  if (!solo_) AllreduceSpan(comm_, std::span<int64_t>(&value, 1), MPI_MAX);
  return value;
}

int64_t Communicator::AllreduceMin(int64_t value) const {
  if (!solo_) AllreduceSpan(comm_, std::span<int64_t>(&value, 1), MPI_MIN);
  return value;
}

void Communicator::Gather(std::span<const double> send, std::vector<double>* recv_at_root,
                          int root) const {
  CheckRoot(root);
  const bool at_root = rank_ == root;
  EPOCHAL_CHECK(!at_root || recv_at_root != nullptr, "Gather: the root needs a receive vector");
  if (solo_) {
    recv_at_root->assign(send.begin(), send.end());
    return;
  }
  EPOCHAL_CHECK(send.size() <= static_cast<size_t>(INT_MAX), "Gather of ", send.size(),
                " doubles exceeds MPI's int count");
  const int count = static_cast<int>(send.size());
  std::vector<int> counts;
  std::vector<int> displacements;
  if (at_root) counts.resize(static_cast<size_t>(size_));
  EPOCHAL_MPI_CHECK(MPI_Gather(&count, 1, MPI_INT, counts.data(), 1, MPI_INT, root, comm_));
  if (at_root) {
    displacements.resize(counts.size());
    int64_t total = 0;
    for (size_t r = 0; r < counts.size(); ++r) {
      displacements[r] = static_cast<int>(total);
      total += counts[r];
      EPOCHAL_CHECK(total <= INT_MAX, "Gather of ", total, " doubles exceeds MPI's int count");
    }
    recv_at_root->resize(static_cast<size_t>(total));
  }
  // const_cast: MPI-3 takes const void* for send buffers, older headers do not.
  EPOCHAL_MPI_CHECK(MPI_Gatherv(const_cast<double*>(send.data()), count, MPI_DOUBLE,
                                at_root ? recv_at_root->data() : nullptr, counts.data(),
                                displacements.data(), MPI_DOUBLE, root, comm_));
}

void Communicator::Abort(int code) const {
  if (!solo_ && MpiEnvironment::Initialized()) MPI_Abort(comm_, code);
  std::exit(code);
}

}  // namespace epochal::dist
