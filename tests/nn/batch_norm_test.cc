#include "epochal/nn/batch_norm.h"

#include <gtest/gtest.h>

#include <condition_variable>
#include <mutex>
#include <thread>

#include "layer_test_util.h"

namespace epochal::nn {
namespace {

using testing::kTolerance;
using testing::RandomArray;
using testing::RelativeError;
using testing::ToFloat;

class BatchNormTest : public ::testing::TestWithParam<std::vector<int64_t>> {};

// The 4-D cases use the blocked layout a conv would hand over, as in the real model.
dnnl::memory::desc SrcDesc(const std::vector<int64_t>& shape) {
  if (shape.size() == 4 && shape[1] % 8 == 0) {
    return dnnl::memory::desc(shape, dt::f32, tag::aBcd8b);
  }
  return PlainDesc(shape);
}

TEST_P(BatchNormTest, MatchesReferenceInTrainingAndInference) {
  const auto shape = GetParam();
  testing::PlanHarness h;
  BatchNorm bn("bn", {});
  const dnnl::memory::desc src_md = SrcDesc(shape);
  auto plan = bn.MakePlan(h.ctx, src_md);
  const int64_t c = shape[1];
  const ref::Array src = RandomArray(shape, 1, -2, 3);
  const ref::Array gamma = RandomArray({c}, 2, 0.5, 1.5);
  const ref::Array beta = RandomArray({c}, 3);
  FromPlain(h.ctx, ToFloat(gamma), bn.parameters()[0]->value);
  FromPlain(h.ctx, ToFloat(beta), bn.parameters()[1]->value);
  dnnl::memory src_m = h.Like(src_md, src);

  StepContext train;
  plan->Forward(train, src_m);
  ref::Array expected, mean, variance;
  ref::BatchNormForwardTraining(src, gamma, beta, 1e-3, &expected, &mean, &variance);
  EXPECT_LT(RelativeError(ToFloat(h.Read(plan->dst())), expected), kTolerance);

  // Running statistics: one Keras update from (0, 1).
  int64_t reduced = src.size() / c;
  const double correction = shape.size() == 4 ? double(reduced) / double(reduced - 1) : 1.0;
  for (int64_t k = 0; k < c; ++k) {
    EXPECT_NEAR(bn.state()[0]->value[static_cast<size_t>(k)], 0.01 * mean[k], 1e-5);
    EXPECT_NEAR(bn.state()[1]->value[static_cast<size_t>(k)],
                0.99 + 0.01 * variance[k] * correction, 1e-5);
  }

  const ref::Array diff_dst = RandomArray(shape, 4);
  dnnl::memory diff_m = h.Like(plan->dst().get_desc(), diff_dst);
  plan->Backward(train, src_m, diff_m, true);
  ref::Array diff_src, diff_gamma, diff_beta;
  ref::BatchNormBackward(src, gamma, mean, variance, diff_dst, 1e-3, &diff_src, &diff_gamma,
                         &diff_beta);
  EXPECT_LT(RelativeError(ToFloat(h.Read(plan->diff_src())), diff_src), kTolerance);
  EXPECT_LT(RelativeError(ToFloat(h.Read(bn.parameters()[0]->grad)), diff_gamma), kTolerance);
  EXPECT_LT(RelativeError(ToFloat(h.Read(bn.parameters()[1]->grad)), diff_beta), kTolerance);

  // Inference uses the running statistics; a frozen training pass leaves them alone.
  const std::vector<float> running_mean = bn.state()[0]->value;
  StepContext frozen;
  frozen.mode = Mode::kTrainFrozen;
  plan->Forward(frozen, src_m);
  EXPECT_EQ(bn.state()[0]->value, running_mean);
  StepContext infer;
  infer.mode = Mode::kInference;
  plan->Forward(infer, src_m);
  ref::Array rm({c}), rv({c});
  for (int64_t k = 0; k < c; ++k) {
    rm[k] = bn.state()[0]->value[static_cast<size_t>(k)];
    rv[k] = bn.state()[1]->value[static_cast<size_t>(k)];
  }
  ref::BatchNormForwardInference(src, gamma, beta, rm, rv, 1e-3, &expected);
  EXPECT_LT(RelativeError(ToFloat(h.Read(plan->dst())), expected), kTolerance);
}

INSTANTIATE_TEST_SUITE_P(Shapes, BatchNormTest,
                         ::testing::Values(std::vector<int64_t>{4, 8, 5, 5},
                                           std::vector<int64_t>{2, 32, 7, 7},
                                           std::vector<int64_t>{3, 3, 4, 6},
                                           std::vector<int64_t>{16, 40}));

}  // namespace
}  // namespace epochal::nn

namespace epochal::nn {
namespace {

// Two "processes" as two threads: AllreduceSum adds both threads' vectors.
class TwoThreadReducer {
 public:
  class Side : public StatisticsReducer {
   public:
    Side(TwoThreadReducer* shared, int index) : shared_(shared), index_(index) {}
    void AllreduceSum(std::span<double> values) override { shared_->Exchange(index_, values); }

   private:
    TwoThreadReducer* shared_;
    int index_;
  };
  void Exchange(int index, std::span<double> values) {
    std::unique_lock<std::mutex> lock(mutex_);
    slot_[index].assign(values.begin(), values.end());
    const int64_t round = round_;
    if (++arrived_ == 2) {
      arrived_ = 0;
      ++round_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return round_ != round; });
    }
    for (size_t i = 0; i < values.size(); ++i) values[i] = slot_[0][i] + slot_[1][i];
    // Both sides must read before the next round overwrites the slots.
    if (++read_ == 2) {
      read_ = 0;
      ++read_round_;
      cv_.notify_all();
    } else {
      const int64_t r = read_round_;
      cv_.wait(lock, [&] { return read_round_ != r; });
    }
  }

 private:
  std::mutex mutex_;  // Guards everything below.
  std::condition_variable cv_;
  std::vector<double> slot_[2];
  int arrived_ = 0, read_ = 0;
  int64_t round_ = 0, read_round_ = 0;
};

// Synchronized batch norm over two halves of a batch equals plain batch norm over the
// whole batch, forward and backward, in the blocked layout a conv hands over.
TEST(SyncBatchNormTest, TwoHalvesEqualTheWholeBatch) {
  const std::vector<int64_t> whole = {8, 16, 5, 5}, half = {4, 16, 5, 5};
  const ref::Array src = RandomArray(whole, 1, -2, 3);
  const ref::Array gamma = RandomArray({16}, 2, 0.5, 1.5);
  const ref::Array beta = RandomArray({16}, 3);
  const ref::Array diff_dst = RandomArray(whole, 4);
  ref::Array expected, mean, variance, diff_src, diff_gamma, diff_beta;
  ref::BatchNormForwardTraining(src, gamma, beta, 1e-3, &expected, &mean, &variance);
  ref::BatchNormBackward(src, gamma, mean, variance, diff_dst, 1e-3, &diff_src, &diff_gamma,
                         &diff_beta);

  TwoThreadReducer shared;
  std::vector<float> dst_half[2], diff_src_half[2], dgamma[2], dbeta[2], running_var[2];
  auto run = [&](int side) {
    testing::PlanHarness h;
    TwoThreadReducer::Side reducer(&shared, side);
    BatchNorm bn("bn", {});
    bn.set_statistics_reducer(&reducer);
    const auto md = dnnl::memory::desc(half, dt::f32, tag::aBcd8b);
    auto plan = bn.MakePlan(h.ctx, md);
    FromPlain(h.ctx, ToFloat(gamma), bn.parameters()[0]->value);
    FromPlain(h.ctx, ToFloat(beta), bn.parameters()[1]->value);
    const int64_t per_half = src.size() / 2;
    ref::Array s(half), d(half);
    std::copy_n(src.data.begin() + side * per_half, per_half, s.data.begin());
    std::copy_n(diff_dst.data.begin() + side * per_half, per_half, d.data.begin());
    dnnl::memory src_m = h.Like(md, s);
    StepContext step;
    plan->Forward(step, src_m);
    dst_half[side] = ToFloat(h.Read(plan->dst()));
    dnnl::memory diff_m = h.Like(md, d);
    plan->Backward(step, src_m, diff_m, true);
    diff_src_half[side] = ToFloat(h.Read(plan->diff_src()));
    dgamma[side] = ToFloat(h.Read(bn.parameters()[0]->grad));
    dbeta[side] = ToFloat(h.Read(bn.parameters()[1]->grad));
    running_var[side] = bn.state()[1]->value;
  };
  std::thread a(run, 0), b(run, 1);
  a.join();
  b.join();
  auto concat = [](const std::vector<float>& x, const std::vector<float>& y) {
    std::vector<float> out(x);
    out.insert(out.end(), y.begin(), y.end());
    return out;
  };
  EXPECT_LT(RelativeError(concat(dst_half[0], dst_half[1]), expected), kTolerance);
  EXPECT_LT(RelativeError(concat(diff_src_half[0], diff_src_half[1]), diff_src), kTolerance);
  // Each side keeps its local parameter-gradient sums; the gradient all-reduce adds them.
  std::vector<float> dg(16), db(16);
  for (size_t c = 0; c < 16; ++c) {
    dg[c] = dgamma[0][c] + dgamma[1][c];
    db[c] = dbeta[0][c] + dbeta[1][c];
  }
  EXPECT_LT(RelativeError(dg, diff_gamma), kTolerance);
  EXPECT_LT(RelativeError(db, diff_beta), kTolerance);
  // Running statistics come from the global batch, so both sides agree.
  EXPECT_EQ(running_var[0], running_var[1]);
  EXPECT_NEAR(running_var[0][0], 0.99 + 0.01 * variance[0] * 200.0 / 199.0, 1e-5);
}

}  // namespace
}  // namespace epochal::nn
