#ifndef OFFERD_CORE_USER_H_
#define OFFERD_CORE_USER_H_

#include <cstdint>
#include <string>
#include <vector>

namespace offerd {

// Purchase history summary in days since 1970-01-01 UTC (the RFM inputs of BG/NBD).
// `repeat_days` is x: distinct purchase days after the first; `repeat_spend_sum` is the spend
// on those days in currency units.
struct PurchaseSummary {
  int32_t first_purchase_day = 0;
  int32_t last_purchase_day = 0;
  int32_t repeat_days = 0;
  double repeat_spend_sum = 0.0;
  bool has_purchases = false;
};

// The offline feature record of one user, as ingested from users.jsonl.
// `numeric[i]` / `categorical[i]` follow the order of the numeric / categorical features of
// the feature schema `feature_schema_id`; a missing numeric value is NaN, a missing
// categorical value is the empty string.
struct UserRecord {
  std::string feature_schema_id;
  std::vector<float> embedding;  // stored user embedding; empty when none
  std::vector<float> numeric;
  std::vector<std::string> categorical;
};

}  // namespace offerd

#endif  // OFFERD_CORE_USER_H_
