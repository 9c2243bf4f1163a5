// EventQueue: one WatchEvents subscriber's bounded, drop-oldest queue.
//
// The training thread publishes into every subscriber's queue and must never wait for a
// subscriber: Push() only takes the queue's mutex (held for a deque operation, never
// across I/O) and, when the queue is full, drops the oldest event and counts it. The
// subscriber's gRPC thread pops with a timeout and writes to the network outside the
// lock, so a slow or dead client only loses its own events.
//
// Thread safety: every member may be called from any thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>

#include "epochal/v1/control.pb.h"

namespace epochal::control {

class EventQueue {
 public:
  // `capacity` >= 1: events held before the oldest is dropped.
  explicit EventQueue(size_t capacity);
  EventQueue(const EventQueue&) = delete;
  EventQueue& operator=(const EventQueue&) = delete;

  // Appends `event` (its sequence and dropped_before are set on Pop); drops the oldest
  // event when full. Never blocks beyond the mutex. Ignored once closed.
  void Push(const v1::Event& event);
  // Marks the end of the stream: Pop returns what is left, then nullopt without waiting.
  void Close();

  // The next event, waiting up to `timeout`; nullopt on timeout or once closed and
  // drained. The event's sequence counts every event pushed (dropped ones included), and
  // dropped_before says how many were dropped since the previous event popped.
  std::optional<v1::Event> Pop(std::chrono::milliseconds timeout);

  // Events dropped so far.
  uint64_t dropped() const;
  bool closed() const;

 private:
  const size_t capacity_;
  mutable std::mutex mu_;  // Guards everything below.
  std::condition_variable ready_;
  // Each event with its sequence number (1-based, in push order).
  std::deque<std::pair<uint64_t, v1::Event>> events_;
  uint64_t pushed_ = 0;
  uint64_t dropped_ = 0;
  uint64_t last_popped_ = 0;  // Sequence of the last event popped.
  bool closed_ = false;
};

}  // namespace epochal::control
