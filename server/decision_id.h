#ifndef OFFERD_SERVER_DECISION_ID_H_
#define OFFERD_SERVER_DECISION_ID_H_

#include <string>

namespace offerd {

// A new 128-bit random decision id as 32 lower-case hex digits. Drawn from a per-thread
// generator seeded from the operating system's entropy, so ids are unique across threads,
// restarts and replicas (collision probability ~2^-64 after 2^32 ids).
std::string NewDecisionId();

}  // namespace offerd

#endif  // OFFERD_SERVER_DECISION_ID_H_
