// Communicator: the collectives epochal uses, over an MPI communicator or over nothing.
//
// A Communicator either wraps an MPI_Comm or is *solo*: rank 0 of 1, made without MPI
// (MPI need not be initialized, or even launched). In solo mode every collective is a
// no-op or a copy, so single-process code runs through the same calls as N-rank code.
//
// Collective contract (as in MPI itself): every rank of the communicator calls the same
// collectives, with the same root and the same counts (except where a function says
// otherwise), in the same order. A rank that skips one, or calls them in another order,
// deadlocks the job or pairs the wrong buffers. Decisions that could differ between ranks
// (stop, pause, a new learning rate) are made on the root and broadcast at a step
// boundary (SyncControlWord) before anyone acts on them. Non-blocking collectives issued
// elsewhere (GradientBucketer) run on their own duplicate of the communicator, so their
// order does not interleave with these calls.
//
// Every MPI failure is thrown as SystemError (EPOCHAL_MPI_CHECK); a caller that cannot
// recover should end every rank with Abort.
//
// Ownership: a Communicator made from an MPI_Comm does not own it (MPI_COMM_WORLD is
// never freed); one returned by Duplicate() owns its communicator and frees it on
// destruction. Move-only, since a copy of an owner would free twice.
//
// Thread safety: none. Call from the thread that initialized MPI (MPI_THREAD_FUNNELED),
// one call at a time. rank(), size(), is_root() and solo() may be read from any thread.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace epochal::dist {

class Communicator {
 public:
  // Wraps `comm` (not owned). Throws Error when MPI is not initialized (use Solo() or
  // WorldOrSolo() then) and SystemError when MPI cannot report the rank or size.
  explicit Communicator(MPI_Comm comm = MPI_COMM_WORLD);
  // Rank 0 of 1; calls no MPI function, ever.
  static Communicator Solo();
  // MPI_COMM_WORLD when MPI is initialized, Solo() otherwise.
  static Communicator WorldOrSolo();

  ~Communicator();
  Communicator(Communicator&& other) noexcept;
  Communicator& operator=(Communicator&& other) noexcept;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  bool is_root() const { return rank_ == 0; }
  bool solo() const { return solo_; }
  // The wrapped communicator; MPI_COMM_NULL when solo.
  MPI_Comm comm() const { return comm_; }

  // Collective (MPI_Comm_dup): a new communicator over the same ranks whose traffic never
  // matches this one's, owned by the result. Solo gives solo.
  Communicator Duplicate() const;

  void Barrier() const;

  // Collective: after the call every rank's `data` holds the root's. All ranks pass the
  // same size.
  void Broadcast(std::span<float> data, int root = 0) const;
  void Broadcast(std::span<double> data, int root = 0) const;
  void Broadcast(std::span<int64_t> data, int root = 0) const;
  // Collective: the root's string, length first, then bytes; other ranks' strings are
  // resized to match (the only broadcast that allocates).
  void Broadcast(std::string* data, int root = 0) const;
  // Collective, untyped: `bytes` bytes of a trivially copyable object. Ranks must agree on
  // its layout (same binary on the same kind of machine).
  void BroadcastBytes(void* data, size_t bytes, int root = 0) const;

  // Collective, in place: element i becomes the sum over ranks of element i. Integer
  // sums are exact; floating-point sums are rounded in an order MPI chooses. All ranks
  // pass the same size.
  void AllreduceSum(std::span<double> data) const;
  void AllreduceSum(std::span<float> data) const;
  void AllreduceSum(std::span<int64_t> data) const;
  // Collective: the largest (smallest) of the ranks' values, on every rank.
  int64_t AllreduceMax(int64_t value) const;
  int64_t AllreduceMin(int64_t value) const;

  // Collective: the root receives every rank's `send`, concatenated in rank order, in
  // *recv_at_root (resized). Counts may differ between ranks (an empty shard sends
  // nothing). Other ranks may pass nullptr; their vector is left alone.
  void Gather(std::span<const double> send, std::vector<double>* recv_at_root, int root = 0) const;

  // Ends every rank of the job with exit status `code` (MPI_Abort); solo, std::exit(code).
  // Not collective: one rank calling it is enough.
  [[noreturn]] void Abort(int code) const;

 private:
  struct SoloTag {};
  explicit Communicator(SoloTag);

  void CheckRoot(int root) const;

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
  bool solo_ = true;
  bool owned_ = false;
};

}  // namespace epochal::dist
