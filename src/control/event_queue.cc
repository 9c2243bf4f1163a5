#include "epochal/control/event_queue.h"

#include <utility>

#include "epochal/core/error.h"

namespace epochal::control {

EventQueue::EventQueue(size_t capacity) : capacity_(capacity) {
  EPOCHAL_CHECK(capacity >= 1, "an event queue needs room for one event");
}

void EventQueue::Push(const v1::Event& event) {
  {
    std::lock_guard lock(mu_);
    if (closed_) return;
    if (events_.size() == capacity_) {
      events_.pop_front();
      ++dropped_;
    }
    events_.emplace_back(++pushed_, event);
  }
  ready_.notify_one();
}

void EventQueue::Close() {
  {
    std::lock_guard lock(mu_);
    closed_ = true;
  }
  ready_.notify_all();
}

std::optional<v1::Event> EventQueue::Pop(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  ready_.wait_for(lock, timeout, [this] { return !events_.empty() || closed_; });
  if (events_.empty()) return std::nullopt;
  auto [sequence, event] = std::move(events_.front());
  events_.pop_front();
  event.set_sequence(sequence);
  event.set_dropped_before(sequence - last_popped_ - 1);
  last_popped_ = sequence;
  return std::move(event);
}

uint64_t EventQueue::dropped() const {
  std::lock_guard lock(mu_);
  return dropped_;
}

bool EventQueue::closed() const {
  std::lock_guard lock(mu_);
  return closed_;
}

}  // namespace epochal::control
