#include "server/huge_pages.h"

#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25  // Linux 6.1; glibc 2.36's headers predate it
#endif

namespace offerd {

HugePageStats AdviseHugePages(int64_t min_bytes) {
  const auto start = std::chrono::steady_clock::now();
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  HugePageStats stats;
  // Larger than RAM = an address-space reservation (a sanitizer's shadow memory), not data.
  const int64_t ram = static_cast<int64_t>(sysconf(_SC_PHYS_PAGES)) * sysconf(_SC_PAGESIZE);
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    // "begin-end perms offset dev inode [path]"; private anonymous = inode 0 and either no
    // path or "[heap]" (not [stack], [vvar], [vdso], ...).
    const std::vector<absl::string_view> fields =
        absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (fields.size() < 5 || fields[1].size() < 4) continue;
    const absl::string_view perms = fields[1];
    if (perms[0] != 'r' || perms[1] != 'w' || perms[3] != 'p' || fields[4] != "0") continue;
    if (fields.size() > 5 && fields[5] != "[heap]") continue;
    const std::vector<absl::string_view> range = absl::StrSplit(fields[0], '-');
    uint64_t begin = 0, end = 0;
    if (range.size() != 2 || !absl::SimpleHexAtoi(range[0], &begin) ||
        !absl::SimpleHexAtoi(range[1], &end)) {
      continue;
    }
    const uintptr_t first = (begin + kHuge - 1) & ~(kHuge - 1);
    const uintptr_t last = end & ~(kHuge - 1);
    if (last <= first || static_cast<int64_t>(last - first) < min_bytes) continue;
    if (static_cast<int64_t>(end - begin) > ram) continue;
    void* address = reinterpret_cast<void*>(first);
    const size_t length = last - first;
    if (madvise(address, length, MADV_HUGEPAGE) != 0) continue;  // no THP in this kernel
    ++stats.mappings;
    stats.bytes_advised += static_cast<int64_t>(length);
    // Fails (EINVAL on older kernels, EAGAIN/ENOMEM when some 2 MiB range could not be
    // collapsed, e.g. partly unmapped): khugepaged still collapses advised ranges later.
    if (madvise(address, length, MADV_COLLAPSE) == 0) {
      stats.bytes_collapsed += static_cast<int64_t>(length);
    }
  }
  stats.ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                 .count();
  return stats;
}

}  // namespace offerd
