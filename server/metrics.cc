#include "server/metrics.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <sstream>
#include <thread>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace offerd {
namespace {

constexpr absl::string_view kDroppedName = "offerd_metrics_label_sets_dropped_total";

// ---------------------------------------------------------------------------------------
// Text helpers.

// Appends `value` as Prometheus (Go's strconv.ParseFloat) parses it.
void AppendValue(std::string* out, double value) {
  if (std::isnan(value)) {
    out->append("NaN");
    return;
  }
  if (std::isinf(value)) {
    out->append(value > 0 ? "+Inf" : "-Inf");
    return;
  }
  // Integers print as integers: std::to_chars' shortest form would write 1e+06.
  if (value == std::trunc(value) && std::fabs(value) <= 9007199254740992.0) {
    absl::StrAppend(out, static_cast<int64_t>(value));
    return;
  }
  // Shortest round-trip digits. Plain decimals in [1e-4, 1e15), as Go's %g
  // writes them (bucket bounds become "le" label values that dashboards match
  // as strings: 0.0001, not 1e-04); scientific notation outside.
  char buffer[64];
  const double magnitude = std::fabs(value);
  const std::to_chars_result result =
      magnitude >= 1e-4 && magnitude < 1e15
          ? std::to_chars(buffer, buffer + sizeof(buffer), value, std::chars_format::fixed)
          : std::to_chars(buffer, buffer + sizeof(buffer), value);
  out->append(buffer, result.ptr);
}

void AppendEscaped(std::string* out, absl::string_view text, bool escape_quote) {
  for (char c : text) {
    switch (c) {
      case '\\':
        out->append("\\\\");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '"':
        out->append(escape_quote ? "\\\"" : "\"");
        break;
      default:
        out->push_back(c);
    }
  }
}

// Replaces every byte that does not start a valid UTF-8 sequence (RFC 3629: no
// overlong forms, no surrogates, nothing above U+10FFFF) with U+FFFD:
// Prometheus rejects a whole scrape over one invalid label value.
bool DecodeUtf8(absl::string_view s, size_t i, size_t* length) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = byte(i);
  if (c < 0x80) {
    *length = 1;
    return true;
  }
  size_t n;
  uint32_t code_point;
  uint32_t min_code_point;
  if (c >= 0xC0 && c <= 0xDF) {
    n = 2, code_point = c & 0x1F, min_code_point = 0x80;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3, code_point = c & 0x0F, min_code_point = 0x800;
  } else if (c >= 0xF0 && c <= 0xF7) {
    n = 4, code_point = c & 0x07, min_code_point = 0x10000;
  } else {
    return false;
  }
  if (i + n > s.size()) return false;
  for (size_t k = 1; k < n; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) return false;
    code_point = (code_point << 6) | (byte(i + k) & 0x3F);
  }
  if (code_point < min_code_point || code_point > 0x10FFFF ||
      (code_point >= 0xD800 && code_point <= 0xDFFF)) {
    return false;
  }
  *length = n;
  return true;
}

bool IsValidUtf8(absl::string_view s) {
  size_t length = 0;
  for (size_t i = 0; i < s.size(); i += length) {
    if (!DecodeUtf8(s, i, &length)) return false;
  }
  return true;
}

std::string SanitizeUtf8(absl::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t length = 0;
  for (size_t i = 0; i < s.size(); i += length) {
    if (DecodeUtf8(s, i, &length)) {
      out.append(s.data() + i, length);
    } else {
      out.append("\xEF\xBF\xBD");  // U+FFFD
      length = 1;
    }
  }
  return out;
}

// `a="x",b="y"` (no braces), escaped.
std::string LabelText(const std::vector<std::string>& names, absl::Span<const std::string> values) {
  std::string text;
  for (size_t i = 0; i < names.size() && i < values.size(); ++i) {
    if (i > 0) text.push_back(',');
    absl::StrAppend(&text, names[i], "=\"");
    AppendEscaped(&text, values[i], /*escape_quote=*/true);
    text.push_back('"');
  }
  return text;
}

void AppendSample(std::string* out, absl::string_view name, absl::string_view suffix,
                  absl::string_view labels, absl::string_view extra_label, double value) {
  absl::StrAppend(out, name, suffix);
  if (!labels.empty() || !extra_label.empty()) {
    out->push_back('{');
    out->append(labels.data(), labels.size());
    if (!labels.empty() && !extra_label.empty()) out->push_back(',');
    out->append(extra_label.data(), extra_label.size());
    out->push_back('}');
  }
  out->push_back(' ');
  AppendValue(out, value);
  out->push_back('\n');
}

absl::string_view TypeName(MetricType type) {
  switch (type) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
  }
  return "untyped";
}

void AppendHeader(std::string* out, const MetricInfo& info, MetricType type) {
  absl::StrAppend(out, "# HELP ", info.name, " ");
  AppendEscaped(out, info.help, /*escape_quote=*/false);
  absl::StrAppend(out, "\n# TYPE ", info.name, " ", TypeName(type), "\n");
}

bool HasSuffix(absl::string_view name, absl::string_view suffix) {
  return name.size() > suffix.size() && name.substr(name.size() - suffix.size()) == suffix;
}

absl::Status ValidateInfo(const MetricInfo& info, MetricType type) {
  if (absl::Status status = ValidateMetricName(info.name); !status.ok()) return status;
  const auto error = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("metric '", info.name, "': ", why));
  };
  if (info.help.empty()) return error("help text is empty");
  if (!IsValidUtf8(info.help)) return error("help text is not valid UTF-8");
  const bool total = HasSuffix(info.name, "_total");
  if (type == MetricType::kCounter && !total) return error("a counter's name must end in _total");
  if (type != MetricType::kCounter && total) {
    return error("only counters' names end in _total");
  }
  for (absl::string_view reserved : {"_bucket", "_sum", "_count"}) {
    if (HasSuffix(info.name, reserved)) {
      return error(absl::StrCat("the suffix ", reserved, " is reserved for histograms' samples"));
    }
  }
  std::set<absl::string_view> seen;
  for (const std::string& label : info.label_names) {
    if (absl::Status status = ValidateLabelName(label); !status.ok()) {
      return error(status.message());
    }
    if (type == MetricType::kHistogram && label == "le") {
      return error("the label 'le' is reserved for histogram buckets");
    }
    if (!seen.insert(label).second) return error(absl::StrCat("duplicate label '", label, "'"));
  }
  return absl::OkStatus();
}

[[noreturn]] void DieOnRegistrationError(const MetricInfo& info, const absl::Status& status) {
  std::fprintf(stderr, "metrics: cannot register '%s': %s\n", info.name.c_str(),
               std::string(status.message()).c_str());
  std::fflush(stderr);
  std::abort();
}

template <typename T>
T ValueOrDie(const MetricInfo& info, absl::StatusOr<T> result) {
  if (!result.ok()) DieOnRegistrationError(info, result.status());
  return *std::move(result);
}

// ---------------------------------------------------------------------------------------
// /proc readers for the process metrics. Each returns false when the file
// cannot be read (then the metric exposes no sample rather than a wrong one).

bool ReadFile(const char* path, std::string* content) {
  std::ifstream in(path);
  if (!in) return false;
  std::ostringstream buffer;
  buffer << in.rdbuf();
  *content = buffer.str();
  return true;
}

// Fields of /proc/self/stat after the command name, which may contain spaces
// and ')': fields[0] is field 3 (state) of proc(5).
bool ReadStatFields(std::vector<std::string>* fields) {
  std::string content;
  if (!ReadFile("/proc/self/stat", &content)) return false;
  const size_t end_of_comm = content.rfind(')');
  if (end_of_comm == std::string::npos) return false;
  *fields = absl::StrSplit(absl::string_view(content).substr(end_of_comm + 1), ' ',
                           absl::SkipWhitespace());
  return fields->size() >= 22;
}

bool StatField(size_t proc5_field, double* value) {
  std::vector<std::string> fields;
  if (!ReadStatFields(&fields)) return false;
  return absl::SimpleAtod(fields[proc5_field - 3], value);
}

bool ReadCpuSeconds(double* seconds) {
  std::vector<std::string> fields;
  if (!ReadStatFields(&fields)) return false;
  double utime, stime;
  if (!absl::SimpleAtod(fields[14 - 3], &utime) || !absl::SimpleAtod(fields[15 - 3], &stime)) {
    return false;
  }
  *seconds = (utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
  return true;
}

bool ReadResidentBytes(double* bytes) {
  double pages;
  if (!StatField(24, &pages)) return false;
  *bytes = pages * static_cast<double>(sysconf(_SC_PAGESIZE));
  return true;
}

bool ReadStartTimeSeconds(double* seconds) {
  double start_ticks;
  if (!StatField(22, &start_ticks)) return false;
  std::string content;
  if (!ReadFile("/proc/stat", &content)) return false;
  for (absl::string_view line : absl::StrSplit(content, '\n')) {
    if (absl::ConsumePrefix(&line, "btime ")) {
      double boot_time;
      if (!absl::SimpleAtod(line, &boot_time)) return false;
      *seconds = boot_time + start_ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
      return true;
    }
  }
  return false;
}

bool ReadThreads(double* threads) {
  std::string content;
  if (!ReadFile("/proc/self/status", &content)) return false;
  for (absl::string_view line : absl::StrSplit(content, '\n')) {
    if (absl::ConsumePrefix(&line, "Threads:")) {
      return absl::SimpleAtod(absl::StripAsciiWhitespace(line), threads);
    }
  }
  return false;
}

bool CountOpenFds(double* count) {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return false;
  int entries = 0;
  while (const dirent* entry = readdir(dir)) {
    if (entry->d_name[0] != '.') ++entries;
  }
  closedir(dir);
  *count = entries - 1;  // not the descriptor opendir used
  return true;
}

bool ReadMaxFds(double* count) {
  rlimit limit;
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return false;
  *count = limit.rlim_cur == RLIM_INFINITY ? std::numeric_limits<double>::infinity()
                                           : static_cast<double>(limit.rlim_cur);
  return true;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Public helpers.

std::string FormatMetricValue(double value) {
  std::string out;
  AppendValue(&out, value);
  return out;
}

std::string EscapeLabelValue(absl::string_view value) {
  std::string out;
  AppendEscaped(&out, value, /*escape_quote=*/true);
  return out;
}

absl::Status ValidateMetricName(absl::string_view name) {
  const auto error = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("metric name '", name, "' ", why));
  };
  if (name.empty()) return error("is empty");
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    if (c == ':') return error("contains ':', reserved for recording rules");
    const bool ok = absl::ascii_isalpha(c) || c == '_' || (i > 0 && absl::ascii_isdigit(c));
    if (!ok) return error("does not match [a-zA-Z_][a-zA-Z0-9_]*");
  }
  return absl::OkStatus();
}

absl::Status ValidateLabelName(absl::string_view name) {
  const auto error = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("label name '", name, "' ", why));
  };
  if (name.empty()) return error("is empty");
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool ok = absl::ascii_isalpha(c) || c == '_' || (i > 0 && absl::ascii_isdigit(c));
    if (!ok) return error("does not match [a-zA-Z_][a-zA-Z0-9_]*");
  }
  if (absl::StartsWith(name, "__")) return error("starts with '__', reserved for Prometheus");
  return absl::OkStatus();
}

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  std::vector<double> bounds;
  if (!(start > 0) || !(factor > 1) || count < 1) return bounds;
  bounds.reserve(count);
  double bound = start;
  for (int i = 0; i < count; ++i, bound *= factor) bounds.push_back(bound);
  return bounds;
}

std::vector<double> LinearBuckets(double start, double width, int count) {
  std::vector<double> bounds;
  if (!(width > 0) || count < 1) return bounds;
  bounds.reserve(count);
  // start + i * width rather than repeated additions, which accumulate rounding
  // error.
  for (int i = 0; i < count; ++i) bounds.push_back(start + i * width);
  return bounds;
}

std::vector<double> LatencyBucketsSeconds() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
          0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,    10};
}

namespace metrics_internal {

// ---------------------------------------------------------------------------------------
// ShardedCells.

size_t ShardedCells::NumShards() {
  static const size_t shards = [] {
    const size_t cores = std::max(1u, std::thread::hardware_concurrency());
    size_t n = 4;  // at least 4: threads outnumber cores, and collide less on 4 shards
    while (n < cores && n < 16) n *= 2;
    return n;
  }();
  return shards;
}

size_t ShardedCells::NextThreadShard() {
  static std::atomic<size_t> next{0};
  return next.fetch_add(1, std::memory_order_relaxed) & (NumShards() - 1);
}

ShardedCells::ShardedCells(size_t cells_per_shard)
    : lines_per_shard_((cells_per_shard + kCellsPerLine - 1) / kCellsPerLine),
      lines_(new Line[NumShards() * lines_per_shard_]) {
  for (size_t line = 0; line < NumShards() * lines_per_shard_; ++line) {
    for (std::atomic<uint64_t>& cell : lines_[line].cells) {
      cell.store(0, std::memory_order_relaxed);
    }
  }
}

uint64_t ShardedCells::SumInteger(size_t cell) const {
  uint64_t sum = 0;
  for (size_t shard = 0; shard < NumShards(); ++shard) {
    sum += lines_[shard * lines_per_shard_ + cell / kCellsPerLine].cells[cell % kCellsPerLine].load(
        std::memory_order_relaxed);
  }
  return sum;
}

double ShardedCells::SumDouble(size_t cell) const {
  double sum = 0;
  for (size_t shard = 0; shard < NumShards(); ++shard) {
    sum += absl::bit_cast<double>(
        lines_[shard * lines_per_shard_ + cell / kCellsPerLine].cells[cell % kCellsPerLine].load(
            std::memory_order_relaxed));
  }
  return sum;
}

}  // namespace metrics_internal

// ---------------------------------------------------------------------------------------
// Histogram.

Histogram::Histogram(const std::vector<double>* upper_bounds)
    : upper_bounds_(upper_bounds),
      sum_cell_(upper_bounds->size() + 1),
      cells_(upper_bounds->size() + 2) {}

Histogram::Snapshot Histogram::Collect() const {
  Snapshot snapshot;
  snapshot.upper_bounds = *upper_bounds_;
  snapshot.cumulative_counts.resize(upper_bounds_->size() + 1);
  uint64_t cumulative = 0;
  for (size_t bucket = 0; bucket <= upper_bounds_->size(); ++bucket) {
    cumulative += cells_.SumInteger(bucket);
    snapshot.cumulative_counts[bucket] = cumulative;
  }
  snapshot.count = cumulative;
  snapshot.sum = cells_.SumDouble(sum_cell_);
  return snapshot;
}

namespace metrics_internal {

// ---------------------------------------------------------------------------------------
// FamilyBase.

struct FamilyBase::Series {
  std::string label_text;  // escaped, without braces
  std::unique_ptr<Counter> counter;
  std::unique_ptr<Gauge> gauge;
  std::unique_ptr<Histogram> histogram;

  void* metric() const {
    if (counter) return counter.get();
    if (gauge) return gauge.get();
    return histogram.get();
  }
};

FamilyBase::FamilyBase(MetricType type, MetricInfo info, std::vector<double> upper_bounds,
                       size_t max_series)
    : type_(type),
      info_(std::move(info)),
      upper_bounds_(std::move(upper_bounds)),
      max_series_(max_series) {
  if (info_.label_names.empty()) {
    absl::MutexLock lock(&mu_);
    InsertLocked({});
  }
}

FamilyBase::~FamilyBase() = default;

size_t FamilyBase::num_series() const {
  absl::ReaderMutexLock lock(&mu_);
  return series_.size();
}

FamilyBase::Series* FamilyBase::FindLocked(absl::Span<const absl::string_view> label_values) const {
  auto it = series_.find(label_values);
  return it == series_.end() ? nullptr : it->second.get();
}

FamilyBase::Series* FamilyBase::InsertLocked(std::vector<std::string> label_values) {
  auto series = std::make_unique<Series>();
  series->label_text = LabelText(info_.label_names, label_values);
  switch (type_) {
    case MetricType::kCounter:
      series->counter.reset(new Counter());
      break;
    case MetricType::kGauge:
      series->gauge.reset(new Gauge());
      break;
    case MetricType::kHistogram:
      series->histogram.reset(new Histogram(&upper_bounds_));
      break;
  }
  Series* raw = series.get();
  series_.emplace(std::move(label_values), std::move(series));
  return raw;
}

void* FamilyBase::GetOrCreate(absl::Span<const absl::string_view> label_values) {
  const bool arity_ok = label_values.size() == info_.label_names.size();
  if (arity_ok) {
    absl::ReaderMutexLock lock(&mu_);
    if (Series* series = FindLocked(label_values)) return series->metric();
  }
  std::vector<std::string> key;
  key.reserve(label_values.size());
  for (absl::string_view value : label_values) key.push_back(SanitizeUtf8(value));
  const std::vector<absl::string_view> key_view(key.begin(), key.end());

  absl::MutexLock lock(&mu_);
  if (arity_ok) {
    if (Series* series = FindLocked(key_view)) return series->metric();
    const std::vector<absl::string_view> overflow_key(info_.label_names.size(),
                                                      kOverflowLabelValue);
    const size_t regular = series_.size() - (FindLocked(overflow_key) != nullptr ? 1 : 0);
    if (regular < max_series_) return InsertLocked(std::move(key))->metric();
  }
  dropped_.fetch_add(1, std::memory_order_relaxed);
  const std::vector<absl::string_view> overflow_key(info_.label_names.size(), kOverflowLabelValue);
  if (Series* series = FindLocked(overflow_key)) return series->metric();
  return InsertLocked(
             std::vector<std::string>(info_.label_names.size(), std::string(kOverflowLabelValue)))
      ->metric();
}

void FamilyBase::AppendText(std::string* out) const {
  absl::ReaderMutexLock lock(&mu_);
  if (series_.empty()) return;
  AppendHeader(out, info_, type_);
  std::string le;
  for (const auto& [values, series] : series_) {
    switch (type_) {
      case MetricType::kCounter:
        AppendSample(out, info_.name, "", series->label_text, "", series->counter->Value());
        break;
      case MetricType::kGauge:
        AppendSample(out, info_.name, "", series->label_text, "", series->gauge->Value());
        break;
      case MetricType::kHistogram: {
        const Histogram::Snapshot snapshot = series->histogram->Collect();
        for (size_t bucket = 0; bucket < snapshot.cumulative_counts.size(); ++bucket) {
          le = "le=\"";
          AppendValue(&le, bucket < snapshot.upper_bounds.size()
                               ? snapshot.upper_bounds[bucket]
                               : std::numeric_limits<double>::infinity());
          le.push_back('"');
          AppendSample(out, info_.name, "_bucket", series->label_text, le,
                       static_cast<double>(snapshot.cumulative_counts[bucket]));
        }
        AppendSample(out, info_.name, "_sum", series->label_text, "", snapshot.sum);
        AppendSample(out, info_.name, "_count", series->label_text, "",
                     static_cast<double>(snapshot.count));
        break;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------
// CallbackFamily.

class CallbackFamily final : public Exposable {
 public:
  CallbackFamily(MetricType type, MetricInfo info, size_t max_series, CollectCallback collect)
      : type_(type),
        info_(std::move(info)),
        max_series_(max_series),
        collect_(std::move(collect)) {}

  void AppendText(std::string* out) const override ABSL_LOCKS_EXCLUDED(mu_) {
    std::string samples;
    SampleWriter writer(this, &samples);
    {
      absl::MutexLock lock(&mu_);
      if (!collect_) return;
      collect_(writer);
    }
    dropped_.fetch_add(writer.dropped_, std::memory_order_relaxed);
    if (writer.written_ == 0) return;
    AppendHeader(out, info_, type_);
    out->append(samples);
  }
  const MetricInfo& info() const override { return info_; }
  uint64_t dropped_label_sets() const override { return dropped_.load(std::memory_order_relaxed); }
  void Unregister() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    collect_ = nullptr;
  }
  size_t max_series() const { return max_series_; }

 private:
  const MetricType type_;
  const MetricInfo info_;
  const size_t max_series_;
  mutable std::atomic<uint64_t> dropped_{0};
  // Held while the callback runs, so Unregister() waits for a running scrape.
  mutable absl::Mutex mu_;
  CollectCallback collect_ ABSL_GUARDED_BY(mu_);
};

}  // namespace metrics_internal

// ---------------------------------------------------------------------------------------
// SampleWriter and CallbackHandle.

void SampleWriter::Add(std::initializer_list<absl::string_view> label_values, double value) {
  Add(absl::MakeConstSpan(label_values.begin(), label_values.size()), value);
}

void SampleWriter::Add(absl::Span<const absl::string_view> label_values, double value) {
  const MetricInfo& info = family_->info();
  if (label_values.size() != info.label_names.size() || written_ >= family_->max_series()) {
    ++dropped_;
    return;
  }
  std::vector<std::string> values;
  values.reserve(label_values.size());
  for (absl::string_view v : label_values) values.push_back(SanitizeUtf8(v));
  AppendSample(out_, info.name, "", LabelText(info.label_names, values), "", value);
  ++written_;
}

CallbackHandle::CallbackHandle(CallbackHandle&& other) noexcept
    : family_(std::exchange(other.family_, nullptr)) {}

CallbackHandle& CallbackHandle::operator=(CallbackHandle&& other) noexcept {
  if (this != &other) {
    Reset();
    family_ = std::exchange(other.family_, nullptr);
  }
  return *this;
}

void CallbackHandle::Reset() {
  if (family_ != nullptr) std::exchange(family_, nullptr)->Unregister();
}

// ---------------------------------------------------------------------------------------
// MetricsRegistry.

MetricsRegistry::MetricsRegistry(const Options& options) : options_(options) {
  absl::MutexLock lock(&mu_);
  reserved_names_.insert(std::string(kDroppedName));
}

MetricsRegistry::~MetricsRegistry() {
  // Process-metric callbacks before the families they point into.
  absl::MutexLock lock(&mu_);
  process_metrics_.clear();
}

absl::Status MetricsRegistry::ReserveNamesLocked(const MetricInfo& info, MetricType type) {
  if (absl::Status status = ValidateInfo(info, type); !status.ok()) return status;
  std::vector<std::string> names = {info.name};
  if (type == MetricType::kHistogram) {
    for (absl::string_view suffix : {"_bucket", "_sum", "_count"}) {
      names.push_back(absl::StrCat(info.name, suffix));
    }
  }
  for (const std::string& name : names) {
    if (reserved_names_.count(name) > 0) {
      return absl::AlreadyExistsError(absl::StrCat("metric '", info.name, "': the sample name '",
                                                   name, "' is already registered"));
    }
  }
  reserved_names_.insert(names.begin(), names.end());
  return absl::OkStatus();
}

absl::StatusOr<CounterFamily*> MetricsRegistry::TryAddCounter(const MetricInfo& info) {
  absl::MutexLock lock(&mu_);
  if (absl::Status status = ReserveNamesLocked(info, MetricType::kCounter); !status.ok()) {
    return status;
  }
  auto* family = new CounterFamily(MetricType::kCounter, info, {}, options_.max_series_per_family);
  families_.emplace(info.name, std::unique_ptr<metrics_internal::Exposable>(family));
  return family;
}

absl::StatusOr<GaugeFamily*> MetricsRegistry::TryAddGauge(const MetricInfo& info) {
  absl::MutexLock lock(&mu_);
  if (absl::Status status = ReserveNamesLocked(info, MetricType::kGauge); !status.ok()) {
    return status;
  }
  auto* family = new GaugeFamily(MetricType::kGauge, info, {}, options_.max_series_per_family);
  families_.emplace(info.name, std::unique_ptr<metrics_internal::Exposable>(family));
  return family;
}

absl::StatusOr<HistogramFamily*> MetricsRegistry::TryAddHistogram(
    const MetricInfo& info, std::vector<double> upper_bounds) {
  if (!upper_bounds.empty() && std::isinf(upper_bounds.back()) && upper_bounds.back() > 0) {
    upper_bounds.pop_back();  // +Inf is implied
  }
  for (size_t i = 0; i < upper_bounds.size(); ++i) {
    if (!std::isfinite(upper_bounds[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("metric '", info.name, "': bucket bound ", i, " is not finite"));
    }
    if (i > 0 && !(upper_bounds[i] > upper_bounds[i - 1])) {
      return absl::InvalidArgumentError(
          absl::StrCat("metric '", info.name, "': bucket bounds must increase strictly (",
                       upper_bounds[i - 1], " then ", upper_bounds[i], ")"));
    }
  }
  absl::MutexLock lock(&mu_);
  if (absl::Status status = ReserveNamesLocked(info, MetricType::kHistogram); !status.ok()) {
    return status;
  }
  auto* family = new HistogramFamily(MetricType::kHistogram, info, std::move(upper_bounds),
                                     options_.max_series_per_family);
  families_.emplace(info.name, std::unique_ptr<metrics_internal::Exposable>(family));
  return family;
}

absl::StatusOr<CallbackHandle> MetricsRegistry::TryAddCallback(const MetricInfo& info,
                                                               MetricType type,
                                                               CollectCallback collect) {
  if (type == MetricType::kHistogram) {
    return absl::InvalidArgumentError(
        absl::StrCat("metric '", info.name, "': callback metrics are counters or gauges"));
  }
  if (!collect) {
    return absl::InvalidArgumentError(absl::StrCat("metric '", info.name, "': no callback"));
  }
  absl::MutexLock lock(&mu_);
  if (absl::Status status = ReserveNamesLocked(info, type); !status.ok()) return status;
  auto* family = new metrics_internal::CallbackFamily(
      type, info, std::max<size_t>(1, options_.max_series_per_family), std::move(collect));
  families_.emplace(info.name, std::unique_ptr<metrics_internal::Exposable>(family));
  return CallbackHandle(family);
}

CounterFamily& MetricsRegistry::AddCounter(const MetricInfo& info) {
  return *ValueOrDie(info, TryAddCounter(info));
}

GaugeFamily& MetricsRegistry::AddGauge(const MetricInfo& info) {
  return *ValueOrDie(info, TryAddGauge(info));
}

HistogramFamily& MetricsRegistry::AddHistogram(const MetricInfo& info,
                                               std::vector<double> upper_bounds) {
  return *ValueOrDie(info, TryAddHistogram(info, std::move(upper_bounds)));
}

CallbackHandle MetricsRegistry::AddCallback(const MetricInfo& info, MetricType type,
                                            CollectCallback collect) {
  return ValueOrDie(info, TryAddCallback(info, type, std::move(collect)));
}

CallbackHandle MetricsRegistry::AddCallbackGauge(const MetricInfo& info,
                                                 std::function<double()> value) {
  if (!info.label_names.empty() || !value) {
    DieOnRegistrationError(
        info, absl::InvalidArgumentError("AddCallbackGauge takes no labels and a value"));
  }
  return AddCallback(info, MetricType::kGauge,
                     [value = std::move(value)](SampleWriter& out) { out.Add(value()); });
}

CallbackHandle MetricsRegistry::AddCallbackCounter(const MetricInfo& info,
                                                   std::function<double()> value) {
  if (!info.label_names.empty() || !value) {
    DieOnRegistrationError(
        info, absl::InvalidArgumentError("AddCallbackCounter takes no labels and a value"));
  }
  return AddCallback(info, MetricType::kCounter,
                     [value = std::move(value)](SampleWriter& out) { out.Add(value()); });
}

void MetricsRegistry::AddProcessMetrics() {
  using Reader = bool (*)(double*);
  struct ProcessMetric {
    const char* name;
    const char* help;
    MetricType type;
    Reader read;
  };
  static constexpr ProcessMetric kProcessMetrics[] = {
      {"process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
       MetricType::kCounter, ReadCpuSeconds},
      {"process_resident_memory_bytes", "Resident memory size in bytes.", MetricType::kGauge,
       ReadResidentBytes},
      {"process_virtual_memory_bytes", "Virtual memory size in bytes.", MetricType::kGauge,
       [](double* bytes) { return StatField(23, bytes); }},
      {"process_open_fds", "Number of open file descriptors.", MetricType::kGauge, CountOpenFds},
      {"process_max_fds", "Maximum number of open file descriptors.", MetricType::kGauge,
       ReadMaxFds},
      {"process_threads", "Number of OS threads in the process.", MetricType::kGauge, ReadThreads},
  };
  std::vector<CallbackHandle> handles;
  for (const ProcessMetric& metric : kProcessMetrics) {
    handles.push_back(AddCallback({metric.name, metric.help, {}}, metric.type,
                                  [read = metric.read](SampleWriter& out) {
                                    double value;
                                    if (read(&value)) out.Add(value);
                                  }));
  }
  // The start time does not change: read it once.
  double start_time = 0;
  const bool have_start_time = ReadStartTimeSeconds(&start_time);
  handles.push_back(AddCallback(
      {"process_start_time_seconds", "Start time of the process since unix epoch in seconds.", {}},
      MetricType::kGauge, [have_start_time, start_time](SampleWriter& out) {
        if (have_start_time) out.Add(start_time);
      }));
  absl::MutexLock lock(&mu_);
  for (CallbackHandle& handle : handles) process_metrics_.push_back(std::move(handle));
}

std::string MetricsRegistry::TextExposition() const {
  std::vector<const metrics_internal::Exposable*> families;
  {
    absl::ReaderMutexLock lock(&mu_);
    families.reserve(families_.size());
    for (const auto& [name, family] : families_) families.push_back(family.get());
  }
  std::string out;
  for (const metrics_internal::Exposable* family : families) family->AppendText(&out);
  // After the scrape, so refusals of callback samples in this scrape are
  // counted.
  bool header = false;
  for (const metrics_internal::Exposable* family : families) {
    if (family->info().label_names.empty()) continue;
    if (!header) {
      AppendHeader(&out,
                   {std::string(kDroppedName),
                    "Label sets refused because a metric family reached its "
                    "series limit "
                    "(their observations went to the __overflow__ series).",
                    {}},
                   MetricType::kCounter);
      header = true;
    }
    const std::string labels = LabelText({"family"}, {family->info().name});
    AppendSample(&out, kDroppedName, "", labels, "",
                 static_cast<double>(family->dropped_label_sets()));
  }
  return out;
}

}  // namespace offerd
