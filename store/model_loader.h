#ifndef OFFERD_STORE_MODEL_LOADER_H_
#define OFFERD_STORE_MODEL_LOADER_H_

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/feature_schema.h"
#include "core/model.h"
#include "core/offer.h"

namespace offerd {

// The models of one bundle (MANIFEST.json "models", docs/models-format.md).
struct BundleModels {
  std::optional<UpliftModel> uplift;
  std::optional<UserTowerModel> user_tower;
};

// Parses the manifest's `models` object (given as JSON text; "" or "{}" = no models), reads
// and validates every weight file under `bundle_dir`, checks section widths against the
// heads, the user section against `schema`, and encodes the offer section of every catalog
// row. Errors name the model, the head or the file.
// `is_listed` tells whether a file is listed (checksummed) in the manifest: weight files that
// are not are rejected.
absl::StatusOr<BundleModels> LoadBundleModels(absl::string_view models_json,
                                              const std::string& bundle_dir,
                                              const std::function<bool(const std::string&)>& is_listed,
                                              const FeatureSchema& schema,
                                              const std::vector<Offer>& offers);

// Re-computes every golden case of `golden_json` (golden.json text) with `models` and checks
// |got - want| <= atol + rtol * |want| (the file's tolerances, at most rtol 1e-5). Errors name
// the model, the case and the output. `max_relative_error` receives the worst error seen.
absl::Status VerifyGoldenCases(const BundleModels& models, absl::string_view golden_json,
                               double* max_relative_error);

}  // namespace offerd

#endif  // OFFERD_STORE_MODEL_LOADER_H_
