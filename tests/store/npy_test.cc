#include "store/npy.h"

#include <fstream>

#include <gtest/gtest.h>

#include "tests/test_util/temp_dir.h"

namespace offerd {
namespace {

TEST(NpyTest, RoundTripsFloat32) {
  const std::vector<float> data = {1, 2, 3, 4, 5, 6};
  const std::string bytes = EncodeNpyFloat32({2, 3}, data);
  absl::StatusOr<NpyFloatArray> array = ParseNpyFloat32(bytes);
  ASSERT_TRUE(array.ok()) << array.status();
  EXPECT_EQ(array->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(array->data, data);
  EXPECT_EQ(array->rows(), 2);
  EXPECT_EQ(array->cols(), 3);
}

TEST(NpyTest, OneDimensional) {
  absl::StatusOr<NpyFloatArray> array = ParseNpyFloat32(EncodeNpyFloat32({3}, {1, 2, 3}));
  ASSERT_TRUE(array.ok()) << array.status();
  EXPECT_EQ(array->shape, (std::vector<int64_t>{3}));
}

TEST(NpyTest, TruncatedPayloadIsDataLoss) {
  std::string bytes = EncodeNpyFloat32({2, 3}, {1, 2, 3, 4, 5, 6});
  bytes.resize(bytes.size() - 5);
  absl::StatusOr<NpyFloatArray> array = ParseNpyFloat32(bytes);
  ASSERT_FALSE(array.ok());
  EXPECT_EQ(array.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(array.status().message().find("truncated"), absl::string_view::npos);
}

TEST(NpyTest, RejectsOtherDtypesAndGarbage) {
  std::string bytes = EncodeNpyFloat32({1}, {1});
  const size_t pos = bytes.find("<f4");
  bytes.replace(pos, 3, "<f8");
  EXPECT_NE(ParseNpyFloat32(bytes).status().message().find("float32"), absl::string_view::npos);
  EXPECT_FALSE(ParseNpyFloat32("hello world").ok());
  EXPECT_FALSE(ParseNpyFloat32("").ok());
}

TEST(NpyTest, RejectsFortranOrder) {
  std::string bytes = EncodeNpyFloat32({1, 1}, {1});
  const size_t pos = bytes.find("False");
  bytes.replace(pos, 5, "True ");
  EXPECT_FALSE(ParseNpyFloat32(bytes).ok());
}

TEST(NpyTest, ReaderStreamsRowRanges) {
  testing::TempDir tmp;
  std::vector<float> data(12);
  for (int i = 0; i < 12; ++i) data[i] = static_cast<float>(i);
  std::ofstream(tmp.Join("a.npy"), std::ios::binary) << EncodeNpyFloat32({4, 3}, data);
  absl::StatusOr<std::unique_ptr<NpyFloat32Reader>> reader = NpyFloat32Reader::Open(tmp.Join("a.npy"));
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->rows(), 4);
  EXPECT_EQ((*reader)->cols(), 3);
  std::vector<float> rows(6);
  ASSERT_TRUE((*reader)->ReadRows(1, 2, rows.data()).ok());
  EXPECT_EQ(rows, (std::vector<float>{3, 4, 5, 6, 7, 8}));
  EXPECT_EQ((*reader)->ReadRows(3, 2, rows.data()).code(), absl::StatusCode::kOutOfRange);

  std::string bytes = EncodeNpyFloat32({4, 3}, data);
  bytes.resize(bytes.size() - 4);
  std::ofstream(tmp.Join("short.npy"), std::ios::binary) << bytes;
  absl::StatusOr<std::unique_ptr<NpyFloat32Reader>> truncated =
      NpyFloat32Reader::Open(tmp.Join("short.npy"));
  ASSERT_FALSE(truncated.ok());
  EXPECT_NE(truncated.status().message().find("short.npy: truncated"), absl::string_view::npos)
      << truncated.status();
  EXPECT_EQ(NpyFloat32Reader::Open(tmp.Join("missing.npy")).status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace offerd
