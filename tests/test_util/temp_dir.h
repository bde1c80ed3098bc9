#ifndef OFFERD_TESTS_TEST_UTIL_TEMP_DIR_H_
#define OFFERD_TESTS_TEST_UTIL_TEMP_DIR_H_

#include <cstdlib>
#include <filesystem>
#include <string>

namespace offerd::testing {

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it on destruction.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base ? base : "/tmp") + "/offerd-test-XXXXXX";
    path_ = ::mkdtemp(pattern.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string Join(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace offerd::testing

#endif  // OFFERD_TESTS_TEST_UTIL_TEMP_DIR_H_
