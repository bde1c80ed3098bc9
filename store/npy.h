#ifndef OFFERD_STORE_NPY_H_
#define OFFERD_STORE_NPY_H_

#include <cstdint>
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

// Serialises a float32 C-order array as .npy format 1.0 (used by tests and tools).
std::string EncodeNpyFloat32(const std::vector<int64_t>& shape, const std::vector<float>& data);

}  // namespace offerd

#endif  // OFFERD_STORE_NPY_H_
