#include "server/huge_pages.h"

#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25  // Linux 6.1; glibc 2.36's headers predate it
#endif

namespace offerd {
namespace {

constexpr uintptr_t kHugePage = uintptr_t{2} << 20;

// A /proc/self/smaps entry: its header line, then VmFlags (the entry's last line).
struct Vma {
  uint64_t begin = 0, end = 0;
  bool private_anonymous_rw = false;
};

// "begin-end perms offset dev inode [path]": private, read-write, inode 0, and no path or
// "[heap]" (not [stack], [vvar], ...).
bool ParseHeader(absl::string_view line, Vma* vma) {
  const std::vector<absl::string_view> fields = absl::StrSplit(line, ' ', absl::SkipEmpty());
  if (fields.size() < 5) return false;
  const std::vector<absl::string_view> range = absl::StrSplit(fields[0], '-');
  if (range.size() != 2 || !absl::SimpleHexAtoi(range[0], &vma->begin) ||
      !absl::SimpleHexAtoi(range[1], &vma->end)) {
    return false;
  }
  const absl::string_view perms = fields[1];
  vma->private_anonymous_rw = perms.size() == 4 && perms[0] == 'r' && perms[1] == 'w' &&
                              perms[3] == 'p' && fields[4] == "0" &&
                              (fields.size() == 5 || fields[5] == "[heap]");
  return true;
}

bool ThpDisabledBySystem() {
  std::ifstream in("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string mode;
  // Missing file: no THP in this kernel (madvise fails below); "[never]": the administrator
  // said no, and MADV_COLLAPSE would not respect it.
  return !std::getline(in, mode) || absl::StrContains(mode, "[never]");
}

}  // namespace

HugePageStats AdviseHugePages(int64_t min_bytes) {
  const auto start = std::chrono::steady_clock::now();
  HugePageStats stats;
  if (ThpDisabledBySystem()) return stats;
  // Larger than RAM = an address-space reservation (a sanitizer's shadow), not data.
  const int64_t ram = static_cast<int64_t>(sysconf(_SC_PHYS_PAGES)) * sysconf(_SC_PAGESIZE);
  // Read the whole list first: madvise can split and merge the mappings being listed.
  std::vector<Vma> chosen;
  {
    std::ifstream smaps("/proc/self/smaps");
    std::string line;
    Vma vma;
    while (std::getline(smaps, line)) {
      if (!line.empty() && line.find(':') > line.find(' ')) {  // header: no "Key:" first
        if (!ParseHeader(line, &vma)) vma = Vma();
        continue;
      }
      if (!absl::StartsWith(line, "VmFlags:") || !vma.private_anonymous_rw) continue;
      // "nh": someone asked for no huge pages here (a sanitizer's shadow, a MAP_STACK thread
      // stack); MADV_HUGEPAGE would overrule that.
      const std::vector<absl::string_view> flags = absl::StrSplit(line, ' ', absl::SkipEmpty());
      bool no_huge = false;
      for (absl::string_view flag : flags) no_huge = no_huge || flag == "nh";
      const int64_t size = static_cast<int64_t>(vma.end - vma.begin);
      if (!no_huge && size >= min_bytes && size <= ram) chosen.push_back(vma);
      vma = Vma();
    }
  }
  for (const Vma& vma : chosen) {
    const uintptr_t first = (vma.begin + kHugePage - 1) & ~(kHugePage - 1);
    const uintptr_t last = vma.end & ~(kHugePage - 1);
    if (last <= first) continue;
    if (madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE) != 0) continue;
    ++stats.mappings;
    stats.bytes_advised += static_cast<int64_t>(last - first);
    // One 2 MiB page per call: each collapse holds the mmap lock only briefly, so request
    // threads' page faults and mmap/munmap calls interleave. A chunk that cannot be collapsed
    // now (untouched, partly unmapped, no memory, kernel < 6.1) is left to khugepaged.
    for (uintptr_t chunk = first; chunk < last; chunk += kHugePage) {
      if (madvise(reinterpret_cast<void*>(chunk), kHugePage, MADV_COLLAPSE) == 0) {
        stats.bytes_collapsed += static_cast<int64_t>(kHugePage);
      }
    }
  }
  stats.ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                 .count();
  return stats;
}

}  // namespace offerd
