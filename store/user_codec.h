#ifndef OFFERD_STORE_USER_CODEC_H_
#define OFFERD_STORE_USER_CODEC_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/user.h"
#include "core/user_fatigue.h"

namespace offerd {

// Binary encodings of the values stored in RocksDB. Little-endian, versioned by a leading
// byte so the layout can evolve; decoders reject unknown versions and truncated input.

std::string EncodeUserRecord(const UserRecord& record);
absl::StatusOr<UserRecord> DecodeUserRecord(absl::string_view bytes);

std::string EncodePurchaseSummary(const PurchaseSummary& summary);
absl::StatusOr<PurchaseSummary> DecodePurchaseSummary(absl::string_view bytes);

std::string EncodeUserFatigue(const UserFatigueRecord& record);
absl::StatusOr<UserFatigueRecord> DecodeUserFatigue(absl::string_view bytes);

}  // namespace offerd

#endif  // OFFERD_STORE_USER_CODEC_H_
