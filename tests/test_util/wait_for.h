#ifndef OFFERD_TESTS_TEST_UTIL_WAIT_FOR_H_
#define OFFERD_TESTS_TEST_UTIL_WAIT_FOR_H_

#include <chrono>
#include <thread>

namespace offerd::testing {

// Waits for `predicate` with a deadline instead of sleeping and hoping: true as soon as it
// holds, false if it still does not after `limit`.
template <typename Predicate>
bool WaitFor(Predicate predicate, std::chrono::seconds limit = std::chrono::seconds(10)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!predicate()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

}  // namespace offerd::testing

#endif  // OFFERD_TESTS_TEST_UTIL_WAIT_FOR_H_
