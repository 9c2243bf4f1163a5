// The WatchEvents queue: bounded, drop-oldest, never blocking the publisher.
#include "epochal/control/event_queue.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

namespace epochal::control {
namespace {

using std::chrono::milliseconds;

v1::Event Step(int64_t step) {
  v1::Event e;
  e.mutable_batch()->set_step(step);
  return e;
}

TEST(EventQueueTest, DeliversInOrderWithSequenceNumbers) {
  EventQueue q(8);
  for (int i = 1; i <= 3; ++i) q.Push(Step(i));
  for (uint64_t i = 1; i <= 3; ++i) {
    auto e = q.Pop(milliseconds(0));
    ASSERT_TRUE(e.has_value());
    EXPECT_EQ(e->batch().step(), static_cast<int64_t>(i));
    EXPECT_EQ(e->sequence(), i);
    EXPECT_EQ(e->dropped_before(), 0u);
  }
  EXPECT_FALSE(q.Pop(milliseconds(1)).has_value());
}

TEST(EventQueueTest, FullQueueDropsTheOldestAndSaysHowMany) {
  EventQueue q(4);
  for (int i = 1; i <= 10; ++i) q.Push(Step(i));  // Nobody reads: 6 are dropped.
  EXPECT_EQ(q.dropped(), 6u);
  auto first = q.Pop(milliseconds(0));
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->batch().step(), 7);  // The newest four survive.
  EXPECT_EQ(first->sequence(), 7u);
  EXPECT_EQ(first->dropped_before(), 6u);
  for (int i = 8; i <= 10; ++i) {
    auto e = q.Pop(milliseconds(0));
    ASSERT_TRUE(e.has_value());
    EXPECT_EQ(e->batch().step(), i);
    EXPECT_EQ(e->dropped_before(), 0u);
  }
}

TEST(EventQueueTest, PublisherNeverWaitsForAReader) {
  // A million pushes into a queue nobody drains finish at once (a blocking queue would
  // hang here, and CTest's timeout would fail the test).
  EventQueue q(16);
  for (int i = 0; i < 1000000; ++i) q.Push(Step(i));
  EXPECT_EQ(q.dropped(), 1000000u - 16u);
}

TEST(EventQueueTest, CloseWakesAWaitingReaderAfterDraining) {
  EventQueue q(4);
  q.Push(Step(1));
  std::thread closer([&] {
    std::this_thread::sleep_for(milliseconds(50));
    q.Close();
  });
  EXPECT_TRUE(q.Pop(milliseconds(0)).has_value());
  // Waits until Close (well before the 60 s bound), then reports the end.
  EXPECT_FALSE(q.Pop(milliseconds(60000)).has_value());
  EXPECT_TRUE(q.closed());
  closer.join();
  q.Push(Step(2));  // Ignored once closed.
  EXPECT_FALSE(q.Pop(milliseconds(0)).has_value());
}

}  // namespace
}  // namespace epochal::control
