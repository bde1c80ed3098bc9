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

TEST(HugePagesTest, AdvisesLargeAnonymousMappingsAndLeavesSmallOnesAlone) {
  constexpr size_t kLarge = size_t{32} << 20;
  constexpr size_t kSmall = size_t{1} << 20;
  void* large = mmap(nullptr, kLarge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  void* small = mmap(nullptr, kSmall, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(large, MAP_FAILED);
  ASSERT_NE(small, MAP_FAILED);
  std::memset(large, 7, kLarge);
  std::memset(small, 7, kSmall);
  ASSERT_EQ(VmFlagsOf(large).find(" hg"), std::string::npos) << VmFlagsOf(large);

  const HugePageStats stats = AdviseHugePages(int64_t{8} << 20);
  EXPECT_GE(stats.mappings, 1);
  // The 2 MiB-aligned interior of the 32 MiB mapping at least.
  EXPECT_GE(stats.bytes_advised, int64_t{30} << 20);
  EXPECT_LE(stats.bytes_collapsed, stats.bytes_advised);
  // "hg" = MADV_HUGEPAGE. The interior of the large mapping is advised; the small one is not.
  const char* middle = static_cast<const char*>(large) + kLarge / 2;
  EXPECT_NE(VmFlagsOf(middle).find(" hg"), std::string::npos) << VmFlagsOf(middle);
  EXPECT_EQ(VmFlagsOf(small).find(" hg"), std::string::npos) << VmFlagsOf(small);
  // Contents are untouched.
  for (size_t i = 0; i < kLarge; i += 4096) ASSERT_EQ(static_cast<const char*>(large)[i], 7);

  munmap(large, kLarge);
  munmap(small, kSmall);
}

}  // namespace
}  // namespace offerd
