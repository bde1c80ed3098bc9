#include "store/npy.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "store/file_util.h"

namespace offerd {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicLen = 6;

// Returns the value text of `key` in a numpy header dict, e.g. for 'descr' -> "'<f4'".
absl::StatusOr<absl::string_view> HeaderValue(absl::string_view header, absl::string_view key) {
  const std::string quoted = absl::StrCat("'", key, "'");
  size_t pos = header.find(quoted);
  if (pos == absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat("npy header has no ", quoted));
  }
  pos = header.find(':', pos + quoted.size());
  if (pos == absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat("npy header: no value for ", quoted));
  }
  absl::string_view rest = absl::StripLeadingAsciiWhitespace(header.substr(pos + 1));
  size_t end;
  if (!rest.empty() && rest[0] == '(') {
    end = rest.find(')');
    if (end == absl::string_view::npos) {
      return absl::InvalidArgumentError("npy header: unterminated shape tuple");
    }
    return rest.substr(0, end + 1);
  }
  end = rest.find_first_of(",}");
  if (end == absl::string_view::npos) end = rest.size();
  return absl::StripAsciiWhitespace(rest.substr(0, end));
}

struct NpyHeader {
  std::vector<int64_t> shape;
  int64_t count = 0;        // number of elements
  size_t data_offset = 0;  // bytes before the payload
};

// Parses the header at the start of `bytes` (which must hold at least the whole header).
absl::StatusOr<NpyHeader> ParseNpyHeader(absl::string_view bytes) {
  if (bytes.size() < kMagicLen + 4 ||
      bytes.substr(0, kMagicLen) != absl::string_view(kMagic, kMagicLen)) {
    return absl::InvalidArgumentError("not a .npy file (bad magic)");
  }
  const uint8_t major = static_cast<uint8_t>(bytes[6]);
  size_t header_len = 0;
  size_t offset = 0;
  if (major == 1) {
    header_len = static_cast<uint8_t>(bytes[8]) | (static_cast<uint8_t>(bytes[9]) << 8);
    offset = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) return absl::DataLossError("truncated .npy header");
    header_len = static_cast<uint32_t>(static_cast<uint8_t>(bytes[8])) |
                 (static_cast<uint32_t>(static_cast<uint8_t>(bytes[9])) << 8) |
                 (static_cast<uint32_t>(static_cast<uint8_t>(bytes[10])) << 16) |
                 (static_cast<uint32_t>(static_cast<uint8_t>(bytes[11])) << 24);
    offset = 12;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("unsupported .npy format version ", major));
  }
  if (bytes.size() < offset + header_len) return absl::DataLossError("truncated .npy header");
  const absl::string_view header = bytes.substr(offset, header_len);

  absl::StatusOr<absl::string_view> descr = HeaderValue(header, "descr");
  if (!descr.ok()) return descr.status();
  if (*descr != "'<f4'" && *descr != "\"<f4\"") {
    return absl::InvalidArgumentError(
        absl::StrCat("dtype must be float32 little-endian '<f4', got ", *descr));
  }
  absl::StatusOr<absl::string_view> fortran = HeaderValue(header, "fortran_order");
  if (!fortran.ok()) return fortran.status();
  if (*fortran != "False") {
    return absl::InvalidArgumentError("array must be C order (fortran_order: False)");
  }
  absl::StatusOr<absl::string_view> shape_text = HeaderValue(header, "shape");
  if (!shape_text.ok()) return shape_text.status();
  absl::string_view inner = *shape_text;
  inner = absl::StripPrefix(absl::StripSuffix(inner, ")"), "(");

  NpyHeader out;
  out.count = 1;
  for (absl::string_view part : absl::StrSplit(inner, ',', absl::SkipWhitespace())) {
    int64_t dim;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(part), &dim) || dim < 0) {
      return absl::InvalidArgumentError(absl::StrCat("bad shape ", *shape_text));
    }
    if (dim > 0 && out.count > (int64_t{1} << 40) / dim) {
      return absl::InvalidArgumentError(absl::StrCat("shape too large ", *shape_text));
    }
    out.shape.push_back(dim);
    out.count *= dim;
  }
  out.data_offset = offset + header_len;
  return out;
}

std::string ShapeText(const std::vector<int64_t>& shape) {
  std::string text = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    absl::StrAppend(&text, shape[i], shape.size() == 1 ? "," : (i + 1 < shape.size() ? ", " : ""));
  }
  return text + ")";
}

absl::Status CheckPayloadSize(const NpyHeader& header, uint64_t payload) {
  const uint64_t want = static_cast<uint64_t>(header.count) * sizeof(float);
  if (payload < want) {
    return absl::DataLossError(absl::StrCat("truncated: shape ", ShapeText(header.shape),
                                            " needs ", want, " data bytes, file has ", payload));
  }
  if (payload > want) {
    return absl::DataLossError(absl::StrCat("trailing bytes: shape ", ShapeText(header.shape),
                                            " needs ", want, " data bytes, file has ", payload));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<NpyFloatArray> ParseNpyFloat32(absl::string_view bytes) {
  absl::StatusOr<NpyHeader> header = ParseNpyHeader(bytes);
  if (!header.ok()) return header.status();
  if (absl::Status s = CheckPayloadSize(*header, bytes.size() - header->data_offset); !s.ok()) {
    return s;
  }
  NpyFloatArray array;
  array.shape = header->shape;
  array.data.resize(static_cast<size_t>(header->count));
  if (header->count > 0) {
    std::memcpy(array.data.data(), bytes.data() + header->data_offset,
                array.data.size() * sizeof(float));
  }
  return array;
}

absl::StatusOr<std::unique_ptr<NpyFloat32Reader>> NpyFloat32Reader::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  }
  const auto fail = [&](const absl::Status& s) {
    ::close(fd);
    return absl::Status(s.code(), absl::StrCat(path, ": ", s.message()));
  };
  struct stat st;
  if (::fstat(fd, &st) != 0) return fail(absl::InternalError(std::strerror(errno)));
  // The header is at most 64 KiB in format 1.0 and in practice tiny in 2.0/3.0.
  std::string head(static_cast<size_t>(std::min<int64_t>(st.st_size, 1 << 16)), '\0');
  const ssize_t n = ::pread(fd, head.data(), head.size(), 0);
  if (n < 0) return fail(absl::InternalError(std::strerror(errno)));
  head.resize(static_cast<size_t>(n));
  absl::StatusOr<NpyHeader> header = ParseNpyHeader(head);
  if (!header.ok()) return fail(header.status());
  if (absl::Status s = CheckPayloadSize(*header, static_cast<uint64_t>(st.st_size) -
                                                     header->data_offset);
      !s.ok()) {
    return fail(s);
  }
  return std::unique_ptr<NpyFloat32Reader>(new NpyFloat32Reader(
      path, fd, std::move(header->shape), static_cast<int64_t>(header->data_offset)));
}

NpyFloat32Reader::~NpyFloat32Reader() { ::close(fd_); }

absl::Status NpyFloat32Reader::ReadRows(int64_t first_row, int64_t count, float* out) const {
  if (first_row < 0 || count < 0 || first_row + count > rows()) {
    return absl::OutOfRangeError(absl::StrCat(path_, ": rows [", first_row, ", ",
                                              first_row + count, ") outside 0..", rows()));
  }
  const size_t row_bytes = static_cast<size_t>(cols()) * sizeof(float);
  size_t remaining = static_cast<size_t>(count) * row_bytes;
  char* dst = reinterpret_cast<char*>(out);
  off_t offset = static_cast<off_t>(data_offset_ + first_row * static_cast<int64_t>(row_bytes));
  while (remaining > 0) {
    const ssize_t n = ::pread(fd_, dst, remaining, offset);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      return absl::DataLossError(absl::StrCat(path_, ": short read at byte ", offset));
    }
    dst += n;
    offset += n;
    remaining -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::StatusOr<NpyFloatArray> ReadNpyFloat32(const std::string& path) {
  absl::StatusOr<std::string> bytes = ReadFileToString(path);
  if (!bytes.ok()) return bytes.status();
  absl::StatusOr<NpyFloatArray> array = ParseNpyFloat32(*bytes);
  if (!array.ok()) {
    return absl::Status(array.status().code(),
                        absl::StrCat(path, ": ", array.status().message()));
  }
  return array;
}

std::string EncodeNpyFloat32(const std::vector<int64_t>& shape, const std::vector<float>& data) {
  std::string header = absl::StrCat("{'descr': '<f4', 'fortran_order': False, 'shape': ",
                                    ShapeText(shape), ", }");
  // Pad so that magic + 4 + header is a multiple of 64, ending in '\n'.
  while ((kMagicLen + 4 + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::string out(kMagic, kMagicLen);
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>((header.size() >> 8) & 0xff);
  out += header;
  out.append(reinterpret_cast<const char*>(data.data()), data.size() * sizeof(float));
  return out;
}

}  // namespace offerd
