#ifndef OFFERD_STORE_NPY_H_
#define OFFERD_STORE_NPY_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace offerd {

// A float32 array read from a NumPy .npy file: row-major (C order) data of `shape`.
struct NpyFloatArray {
  std::vector<int64_t> shape;
  std::vector<float> data;

  int64_t rows() const { return shape.empty() ? 0 : shape[0]; }
  int64_t cols() const { return shape.size() < 2 ? 1 : shape[1]; }
};

// Parses an in-memory .npy file (format 1.0, 2.0 or 3.0) holding little-endian float32
// ('<f4') in C order. Errors (InvalidArgument/DataLoss) say what is wrong: bad magic, header,
// dtype, Fortran order, or a payload shorter or longer than the shape needs.
absl::StatusOr<NpyFloatArray> ParseNpyFloat32(absl::string_view bytes);

// Reads and parses `path`; errors are prefixed with the path.
absl::StatusOr<NpyFloatArray> ReadNpyFloat32(const std::string& path);

// Streams rows of a 2-D float32 .npy file without loading it whole: the header is parsed and
// the file size checked against the shape at Open(); ReadRows() then reads any row range.
//
// Thread safety: ReadRows() uses pread() and is safe to call concurrently.
class NpyFloat32Reader {
 public:
  // Errors name the path: bad header, dtype, order, or a payload shorter/longer than the shape.
  static absl::StatusOr<std::unique_ptr<NpyFloat32Reader>> Open(const std::string& path);
  ~NpyFloat32Reader();

  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t rows() const { return shape_.empty() ? 0 : shape_[0]; }
  int64_t cols() const { return shape_.size() < 2 ? 1 : shape_[1]; }

  // Reads rows [first_row, first_row + count) into `out` (count * cols() floats).
  absl::Status ReadRows(int64_t first_row, int64_t count, float* out) const;

 private:
  NpyFloat32Reader(std::string path, int fd, std::vector<int64_t> shape, int64_t data_offset)
      : path_(std::move(path)), fd_(fd), shape_(std::move(shape)), data_offset_(data_offset) {}

  std::string path_;
  int fd_;
  std::vector<int64_t> shape_;
  int64_t data_offset_;
};

// Serialises a float32 C-order array as .npy format 1.0 (used by tests and tools).
std::string EncodeNpyFloat32(const std::vector<int64_t>& shape, const std::vector<float>& data);

}  // namespace offerd

#endif  // OFFERD_STORE_NPY_H_
