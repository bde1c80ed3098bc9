#ifndef OFFERD_STORE_FEATURE_STORE_H_
#define OFFERD_STORE_FEATURE_STORE_H_

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/user.h"

namespace offerd {

// Per-user state the request path reads. The seam between the ranking pipeline and a storage
// backend (RocksDbStore today; a shared backend for scale-out is an added implementation).
//
// Thread safety: implementations are safe for concurrent use.
class FeatureStore {
 public:
  virtual ~FeatureStore() = default;

  // The user's offline feature record; std::nullopt for an unknown user (an ordinary answer,
  // not an error). Errors only for storage failures or corrupt values.
  virtual absl::StatusOr<std::optional<UserRecord>> GetUser(absl::string_view user_id) const = 0;

  // The user's purchase summary (offline base merged with online deltas); std::nullopt when
  // nothing is known.
  virtual absl::StatusOr<std::optional<PurchaseSummary>> GetPurchases(
      absl::string_view user_id) const = 0;
};

}  // namespace offerd

#endif  // OFFERD_STORE_FEATURE_STORE_H_
