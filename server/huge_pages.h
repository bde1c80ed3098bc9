#ifndef OFFERD_SERVER_HUGE_PAGES_H_
#define OFFERD_SERVER_HUGE_PAGES_H_

#include <cstdint>

namespace offerd {

// What AdviseHugePages() did.
struct HugePageStats {
  int mappings = 0;             // mappings advised
  int64_t bytes_advised = 0;    // 2 MiB-aligned bytes marked MADV_HUGEPAGE
  int64_t bytes_collapsed = 0;  // of those, in 2 MiB pages MADV_COLLAPSE collapsed at once
  double ms = 0;
};

// Asks the kernel to back the process's large private anonymous mappings (the heap, where a
// bundle's catalog, p1 shares and IVF lists live) with transparent huge pages: MADV_HUGEPAGE,
// then MADV_COLLAPSE (Linux 6.1+) to do it now rather than when khugepaged gets there.
// Why: a 1M-offer bundle is ~1 GB that requests read sparsely. In 4 KiB pages that is 260k
// TLB entries' worth of random access, and memory that kernel scanners walk page by page (on
// the benchmark VM, DAMON's proactive reclaim; its passes lifted the 1M p99 from ~3 ms to
// 6-10 ms). Does nothing when the kernel has no THP or its mode is "never". Mappings smaller
// than `min_bytes`, larger than RAM (reservations) or marked no-huge-pages ("nh": sanitizer
// shadows, thread stacks) are left alone. Cost: a partly used 2 MiB range becomes a whole
// page, so RSS can grow a little (1M bundle: 1,062 MB either way). Safe while other threads
// run; collapses one 2 MiB page per call so that they are not held up.
HugePageStats AdviseHugePages(int64_t min_bytes = int64_t{16} << 20);

}  // namespace offerd

#endif  // OFFERD_SERVER_HUGE_PAGES_H_
