#ifndef OFFERD_SERVER_GRPC_STATUS_H_
#define OFFERD_SERVER_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include <string>

#include "absl/status/status.h"

namespace offerd {

// absl::Status -> grpc::Status at the edge of the service (same code numbering).
inline grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

}  // namespace offerd

#endif  // OFFERD_SERVER_GRPC_STATUS_H_
