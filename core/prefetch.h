#ifndef OFFERD_CORE_PREFETCH_H_
#define OFFERD_CORE_PREFETCH_H_

#include <cstddef>
#include <cstdint>

namespace offerd {

// Asks the CPU to fetch every 64-byte cache line of [data, data + bytes); no effect on results.
inline void PrefetchBytes(const void* data, size_t bytes) {
  const uintptr_t begin = reinterpret_cast<uintptr_t>(data);
  for (uintptr_t line = begin & ~uintptr_t{63}; line < begin + bytes; line += 64) {
    __builtin_prefetch(reinterpret_cast<const void*>(line));
  }
}

}  // namespace offerd

#endif  // OFFERD_CORE_PREFETCH_H_
