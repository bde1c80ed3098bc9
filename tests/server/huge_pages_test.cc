#include "server/huge_pages.h"

#include <gtest/gtest.h>
#include <sys/mman.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"

namespace offerd {
namespace {

// The VmFlags line of the /proc/self/smaps entry that contains `address`.
std::string VmFlagsOf(const void* address) {
  const auto target = reinterpret_cast<uint64_t>(address);
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool inside = false;
  while (std::getline(smaps, line)) {
    const std::vector<std::string> fields = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (!fields.empty() && fields[0].find('-') != std::string::npos &&
        fields[0].find(':') == std::string::npos) {
      const std::vector<std::string> range = absl::StrSplit(fields[0], '-');
      uint64_t begin = 0, end = 0;
      inside = range.size() == 2 && absl::SimpleHexAtoi(range[0], &begin) &&
               absl::SimpleHexAtoi(range[1], &end) && begin <= target && target < end;
    } else if (inside && line.rfind("VmFlags:", 0) == 0) {
      return line;
    }
  }
  return "";
}

// A read-write anonymous mapping of `bytes` between two PROT_NONE pages, so that the kernel
// cannot merge it with a neighbour.
char* IsolatedMapping(size_t bytes) {
  constexpr size_t kGuard = 4096;
  void* all = mmap(nullptr, bytes + 2 * kGuard, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (all == MAP_FAILED) return nullptr;
  char* inner = static_cast<char*>(all) + kGuard;
  if (mprotect(inner, bytes, PROT_READ | PROT_WRITE) != 0) return nullptr;
  std::memset(inner, 7, bytes);
  return inner;
}

bool AdvisedHuge(const void* address) {
  return VmFlagsOf(address).find(" hg") != std::string::npos;
}

TEST(HugePagesTest, AdvisesLargeAnonymousMappingsOnly) {
  constexpr size_t kLarge = size_t{40} << 20;
  constexpr size_t kSmall = size_t{6} << 20;
  char* large = IsolatedMapping(kLarge);
  char* small = IsolatedMapping(kSmall);
  char* refused = IsolatedMapping(kLarge);  // marked "no huge pages" by its owner
  ASSERT_NE(large, nullptr);
  ASSERT_NE(small, nullptr);
  ASSERT_NE(refused, nullptr);
  ASSERT_EQ(madvise(refused, kLarge, MADV_NOHUGEPAGE), 0);
  ASSERT_FALSE(AdvisedHuge(large)) << VmFlagsOf(large);

  const HugePageStats stats = AdviseHugePages(int64_t{16} << 20);
  EXPECT_GE(stats.mappings, 1);
  // The 2 MiB-aligned interior of the 40 MiB mapping at least.
  EXPECT_GE(stats.bytes_advised, int64_t{36} << 20);
  EXPECT_LE(stats.bytes_collapsed, stats.bytes_advised);
  EXPECT_TRUE(AdvisedHuge(large + kLarge / 2)) << VmFlagsOf(large + kLarge / 2);
  EXPECT_FALSE(AdvisedHuge(small + kSmall / 2)) << VmFlagsOf(small + kSmall / 2);
  EXPECT_FALSE(AdvisedHuge(refused + kLarge / 2)) << VmFlagsOf(refused + kLarge / 2);
  // Contents are untouched.
  for (size_t i = 0; i < kLarge; i += 4096) ASSERT_EQ(large[i], 7);

  for (char* mapping : {large, refused}) munmap(mapping - 4096, kLarge + 8192);
  munmap(small - 4096, kSmall + 8192);
}

}  // namespace
}  // namespace offerd
