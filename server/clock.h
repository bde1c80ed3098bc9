#ifndef OFFERD_SERVER_CLOCK_H_
#define OFFERD_SERVER_CLOCK_H_

#include <atomic>
#include <chrono>
#include <cstdint>

namespace offerd {

// Source of "now" for everything time-dependent in server/. Injected so tests control time.
class Clock {
 public:
  virtual ~Clock() = default;
  // Wall-clock Unix time in milliseconds.
  virtual int64_t NowMs() const = 0;
};

class SystemClock final : public Clock {
 public:
  int64_t NowMs() const override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
};

// A clock tests set by hand. Thread-safe.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(int64_t now_ms) : now_ms_(now_ms) {}
  int64_t NowMs() const override { return now_ms_.load(); }
  void SetMs(int64_t now_ms) { now_ms_.store(now_ms); }
  void AdvanceMs(int64_t delta_ms) { now_ms_.fetch_add(delta_ms); }

 private:
  std::atomic<int64_t> now_ms_;
};

}  // namespace offerd

#endif  // OFFERD_SERVER_CLOCK_H_
