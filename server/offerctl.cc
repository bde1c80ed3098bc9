// offerctl: operator/developer CLI for offerd. Prints JSON with the proto field names.
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <google/protobuf/util/json_util.h>

#include <stdlib.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "offerd/v1/admin_service.grpc.pb.h"
#include "offerd/v1/offer_service.grpc.pb.h"
#include "server/cli_help.h"
#include "store/file_util.h"
#include "store/users_sst.h"

ABSL_FLAG(std::string, addr, "127.0.0.1:50051", "Address of offerd's public port.");
ABSL_FLAG(std::string, admin_addr, "127.0.0.1:50052", "Address of offerd's admin port.");
ABSL_FLAG(int, timeout_ms, 5000, "Deadline of each call, milliseconds.");
ABSL_FLAG(std::string, user, "", "recommend/report: user id.");
ABSL_FLAG(int, n, 5, "recommend: number of offers (1..100).");
ABSL_FLAG(bool, explain, false, "recommend: include an explanation per offer.");
ABSL_FLAG(std::string, channel, "web", "recommend: context channel (web, app, email, push).");
ABSL_FLAG(std::string, device, "", "recommend: context device.");
ABSL_FLAG(std::string, page, "home", "recommend: context page.");
ABSL_FLAG(std::string, country, "", "recommend: context country (ISO 3166-1 alpha-2).");
ABSL_FLAG(std::string, request_id, "", "recommend: request id for logs.");
ABSL_FLAG(std::string, offer, "", "report: offer id.");
ABSL_FLAG(std::string, type, "",
          "report: event type: impression, click, redeem, dismiss or purchase.");
ABSL_FLAG(double, amount, 0.0, "report: purchase amount, currency units.");
ABSL_FLAG(std::string, decision, "", "report: decision_id of the response that showed the offer.");
ABSL_FLAG(int64_t, timestamp_ms, 0, "report: event time, Unix ms (0 = now).");
ABSL_FLAG(std::string, version, "", "load: bundle version to load.");
ABSL_FLAG(std::string, admin_token_file, "", "File with the admin bearer token, if offerd needs one.");
ABSL_FLAG(std::string, directory, "", "checkpoint: directory to write (absolute, must not exist).");
ABSL_FLAG(std::string, offer_id, "", "override: offer id.");
ABSL_FLAG(std::string, paused, "", "override: true to pause, false to resume.");
ABSL_FLAG(int64_t, budget, -2, "override: redemptions allowed; -1 clears the override.");
ABSL_FLAG(std::string, sst_dir, "",
          "ingest: directory for the SST files; offerd must be able to read it (same machine "
          "or a shared filesystem). Default: a fresh directory next to FILE, removed "
          "afterwards.");
ABSL_FLAG(bool, keep_sst, false, "ingest: keep the SST files after the call.");
ABSL_FLAG(bool, allow_schema_change, false,
          "ingest: accept a feature schema different from the stored features' and the "
          "serving bundle's (a full re-ingest before loading a bundle with the new schema).");
ABSL_FLAG(int64_t, max_sst_mb, 256, "ingest: start a new SST file after this many MiB.");
ABSL_FLAG(int, parse_threads, 0, "ingest: threads parsing FILE; 0 = one per core.");
ABSL_FLAG(double, canary, 0.0,
          "load: start the version as a canary serving this fraction of users (0 < f < 1).");

namespace {

constexpr char kUsage[] =
    "offerctl: talk to a running offerd.\n\n"
    "usage: offerctl [--addr=H:P] [--admin_addr=H:P] <command> [flags]\n\n"
    "commands:\n"
    "  recommend --user=U [--n=N] [--explain] [--channel=C] [--country=CC]\n"
    "  report --user=U --offer=O --type=impression|click|redeem|dismiss|purchase\n"
    "         [--amount=X] [--decision=ID] [--timestamp_ms=MS]\n"
    "  status                      bundle versions, rejections, store facts\n"
    "  load --version=V [--canary=F] load and publish bundle V (pins it), or canary it\n"
    "  promote                     make the running canary serve everyone\n"
    "  rollback                    drop the canary, or return to the previous bundle\n"
    "  unpin                       let the watcher advance to the newest valid bundle\n"
    "  override --offer_id=O [--paused=true|false] [--budget=N|-1]\n"
    "  forget --user=U              erase everything stored about a user\n"
    "  checkpoint --directory=D     consistent RocksDB checkpoint (backup)\n"
    "  ingest FILE [--sst_dir=D] [--keep_sst] [--allow_schema_change] [--parse_threads=N]\n"
    "                              bulk-load users.jsonl FILE into the running offerd: writes\n"
    "                              sorted SST files, offerd validates and ingests them";

int Fail(const std::string& message) {
  std::fprintf(stderr, "offerctl: %s\n", message.c_str());
  return 1;
}

int PrintJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string out;
  auto status = google::protobuf::util::MessageToJsonString(message, &out, options);
  if (!status.ok()) return Fail(absl::StrCat("cannot print response: ", status.ToString()));
  std::fputs(out.c_str(), stdout);
  return 0;
}

int CallFailed(const std::string& what, const grpc::Status& status, const std::string& addr) {
  static const char* kCodes[] = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT",
                                 "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
                                 "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
                                 "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
                                 "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
                                 "UNAUTHENTICATED"};
  const int code = static_cast<int>(status.error_code());
  const char* name = code >= 0 && code <= 16 ? kCodes[code] : "UNKNOWN";
  return Fail(absl::StrCat(what, " failed (", addr, "): ", name, ": ", status.error_message()));
}

void SetDeadline(grpc::ClientContext* context) {
  context->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::milliseconds(absl::GetFlag(FLAGS_timeout_ms)));
}

// The admin bearer token from --admin_token_file; "" when none is configured.
absl::StatusOr<std::string> ReadAdminToken() {
  const std::string token_file = absl::GetFlag(FLAGS_admin_token_file);
  if (token_file.empty()) return std::string();
  absl::StatusOr<std::string> token = offerd::ReadFileToString(token_file);
  if (!token.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--admin_token_file: ", token.status().message()));
  }
  return std::string(absl::StripAsciiWhitespace(*token));
}

void AddAdminToken(const std::string& token, grpc::ClientContext* context) {
  if (!token.empty()) context->AddMetadata("authorization", absl::StrCat("Bearer ", token));
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// `offerctl ingest FILE`: users.jsonl -> SST files (here) -> AdminService.IngestFeatures
// (offerd validates and ingests them into its database, which only it can open).
int Ingest(const std::string& users_file, const std::string& admin_addr) {
  namespace fs = std::filesystem;
  const auto start = std::chrono::steady_clock::now();
  std::error_code ec;
  const fs::path users_path = fs::absolute(users_file, ec);
  if (ec || !fs::is_regular_file(users_path, ec)) {
    return Fail(absl::StrCat("ingest: ", users_file, ": no such file"));
  }
  // Read before the long part, so that a bad token file fails fast.
  absl::StatusOr<std::string> token = ReadAdminToken();
  if (!token.ok()) return Fail(std::string(token.status().message()));
  std::string sst_dir = absl::GetFlag(FLAGS_sst_dir);
  const bool own_dir = sst_dir.empty();
  if (own_dir) {
    // Next to the users file: usually where there is room for a copy of the data.
    std::string pattern = (users_path.parent_path() / ".offerctl-ingest-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) {
      return Fail(absl::StrCat("ingest: cannot create a directory next to ", users_file, ": ",
                               std::strerror(errno)));
    }
    sst_dir = pattern;
  }
  offerd::WriteUsersSstOptions options;
  options.directory = sst_dir;
  options.max_file_bytes = absl::GetFlag(FLAGS_max_sst_mb) << 20;
  options.parse_threads = absl::GetFlag(FLAGS_parse_threads);
  absl::StatusOr<offerd::WriteUsersSstResult> written =
      offerd::WriteUsersSst(users_path.string(), options);
  // Whatever happens next, leave no SST files behind unless asked to.
  struct Cleanup {
    bool keep, own_dir;
    std::string dir;
    const std::vector<std::string>* paths;
    ~Cleanup() {
      std::error_code ignored;
      if (keep) return;
      if (paths != nullptr) {
        for (const std::string& p : *paths) fs::remove(p, ignored);
      }
      if (own_dir) fs::remove_all(dir, ignored);
    }
  } cleanup{absl::GetFlag(FLAGS_keep_sst), own_dir, sst_dir,
            written.ok() ? &written->paths : nullptr};
  if (!written.ok()) return Fail(absl::StrCat("ingest: ", written.status().message()));
  std::fprintf(stderr,
               "offerctl: wrote %lld users into %zu SST files (%.1f MB) in %s: parse %.2f s, "
               "sort+write %.2f s\n",
               static_cast<long long>(written->users), written->paths.size(),
               static_cast<double>(written->bytes) / 1e6, sst_dir.c_str(), written->parse_seconds,
               written->write_seconds);

  offerd::v1::IngestFeaturesRequest request;
  for (const std::string& path : written->paths) request.add_paths(path);
  request.set_feature_schema_id(written->feature_schema_id);
  request.set_allow_schema_change(absl::GetFlag(FLAGS_allow_schema_change));
  auto admin = offerd::v1::AdminService::NewStub(
      grpc::CreateChannel(admin_addr, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  // Validation reads every file: allow minutes, whatever --timeout_ms says for quick calls.
  context.set_deadline(
      std::chrono::system_clock::now() +
      std::chrono::milliseconds(std::max(absl::GetFlag(FLAGS_timeout_ms), 600000)));
  AddAdminToken(*token, &context);
  offerd::v1::IngestFeaturesResponse response;
  grpc::Status status = admin->IngestFeatures(&context, request, &response);
  if (!status.ok()) return CallFailed("ingest", status, admin_addr);
  const double total_seconds = SecondsSince(start);
  std::fprintf(stderr,
               "offerctl: ingested %lld users in %.2f s (%.0f users/s): validate %.2f s, "
               "ingest %.2f s\n",
               static_cast<long long>(response.users()), total_seconds,
               static_cast<double>(response.users()) / total_seconds, response.validate_ms() / 1e3,
               response.ingest_ms() / 1e3);
  return PrintJson(response);
}

bool ParseEventType(std::string text, offerd::v1::EventType* type) {
  text = absl::AsciiStrToUpper(text);
  return offerd::v1::EventType_Parse(text, type) && *type != offerd::v1::EVENT_TYPE_UNSPECIFIED;
}

}  // namespace

int main(int argc, char** argv) {
  if (offerd::MaybePrintHelp(argc, argv, kUsage, "server/offerctl.cc")) return 0;
  absl::SetProgramUsageMessage(kUsage);
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() >= 2 && std::string(args[1]) == "ingest") {
    if (args.size() != 3) {
      return Fail(absl::StrCat("ingest: expected one users.jsonl FILE\n\n", kUsage));
    }
    return Ingest(args[2], absl::GetFlag(FLAGS_admin_addr));
  }
  if (args.size() != 2) return Fail(absl::StrCat("expected one command\n\n", kUsage));
  const std::string command = args[1];
  const std::string addr = absl::GetFlag(FLAGS_addr);
  const std::string admin_addr = absl::GetFlag(FLAGS_admin_addr);

  if (command == "recommend") {
    if (absl::GetFlag(FLAGS_user).empty()) return Fail("recommend: --user is required");
    auto stub = offerd::v1::OfferService::NewStub(
        grpc::CreateChannel(addr, grpc::InsecureChannelCredentials()));
    offerd::v1::RecommendRequest request;
    request.set_user_id(absl::GetFlag(FLAGS_user));
    request.set_num_offers(absl::GetFlag(FLAGS_n));
    request.set_explain(absl::GetFlag(FLAGS_explain));
    request.set_request_id(absl::GetFlag(FLAGS_request_id));
    request.mutable_context()->set_channel(absl::GetFlag(FLAGS_channel));
    request.mutable_context()->set_device(absl::GetFlag(FLAGS_device));
    request.mutable_context()->set_page(absl::GetFlag(FLAGS_page));
    request.mutable_context()->set_country(absl::GetFlag(FLAGS_country));
    offerd::v1::RecommendResponse response;
    grpc::ClientContext context;
    SetDeadline(&context);
    grpc::Status status = stub->Recommend(&context, request, &response);
    if (!status.ok()) return CallFailed("recommend", status, addr);
    return PrintJson(response);
  }
  if (command == "report") {
    offerd::v1::EventType type;
    if (!ParseEventType(absl::GetFlag(FLAGS_type), &type)) {
      return Fail("report: --type must be impression, click, redeem, dismiss or purchase");
    }
    auto stub = offerd::v1::OfferService::NewStub(
        grpc::CreateChannel(addr, grpc::InsecureChannelCredentials()));
    offerd::v1::ReportEventsRequest request;
    offerd::v1::Event* event = request.add_events();
    event->set_user_id(absl::GetFlag(FLAGS_user));
    event->set_offer_id(absl::GetFlag(FLAGS_offer));
    event->set_type(type);
    event->set_amount(absl::GetFlag(FLAGS_amount));
    event->set_decision_id(absl::GetFlag(FLAGS_decision));
    event->set_timestamp_ms(absl::GetFlag(FLAGS_timestamp_ms));
    offerd::v1::ReportEventsResponse response;
    grpc::ClientContext context;
    SetDeadline(&context);
    grpc::Status status = stub->ReportEvents(&context, request, &response);
    if (!status.ok()) return CallFailed("report", status, addr);
    const int rc = PrintJson(response);
    if (rc != 0) return rc;
    if (response.rejected_size() > 0) {
      return Fail(absl::StrCat("report: event rejected: ", response.rejected(0).reason()));
    }
    return 0;
  }
  auto admin = offerd::v1::AdminService::NewStub(
      grpc::CreateChannel(admin_addr, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  SetDeadline(&context);
  absl::StatusOr<std::string> token = ReadAdminToken();
  if (!token.ok()) return Fail(std::string(token.status().message()));
  AddAdminToken(*token, &context);
  if (command == "override") {
    offerd::v1::SetOfferOverrideRequest request;
    request.set_offer_id(absl::GetFlag(FLAGS_offer_id));
    const std::string paused = absl::GetFlag(FLAGS_paused);
    if (paused == "true" || paused == "false") {
      request.set_paused(paused == "true");
    } else if (!paused.empty()) {
      return Fail("override: --paused must be true or false");
    }
    if (absl::GetFlag(FLAGS_budget) != -2) request.set_budget(absl::GetFlag(FLAGS_budget));
    offerd::v1::SetOfferOverrideResponse response;
    grpc::Status status = admin->SetOfferOverride(&context, request, &response);
    if (!status.ok()) return CallFailed("override", status, admin_addr);
    return PrintJson(response);
  }
  if (command == "forget") {
    offerd::v1::ForgetUserRequest request;
    request.set_user_id(absl::GetFlag(FLAGS_user));
    offerd::v1::ForgetUserResponse response;
    grpc::Status status = admin->ForgetUser(&context, request, &response);
    if (!status.ok()) return CallFailed("forget", status, admin_addr);
    return PrintJson(response);
  }
  if (command == "checkpoint") {
    offerd::v1::CheckpointRequest request;
    request.set_directory(absl::GetFlag(FLAGS_directory));
    offerd::v1::CheckpointResponse response;
    grpc::Status status = admin->Checkpoint(&context, request, &response);
    if (!status.ok()) return CallFailed("checkpoint", status, admin_addr);
    return PrintJson(response);
  }
  if (command == "status") {
    offerd::v1::GetStatusResponse response;
    grpc::Status status = admin->GetStatus(&context, offerd::v1::GetStatusRequest(), &response);
    if (!status.ok()) return CallFailed("status", status, admin_addr);
    return PrintJson(response);
  }
  if (command == "load") {
    if (absl::GetFlag(FLAGS_version).empty()) return Fail("load: --version is required");
    offerd::v1::LoadSnapshotRequest request;
    request.set_version(absl::GetFlag(FLAGS_version));
    request.set_canary_fraction(absl::GetFlag(FLAGS_canary));
    offerd::v1::LoadSnapshotResponse response;
    grpc::Status status = admin->LoadSnapshot(&context, request, &response);
    if (!status.ok()) return CallFailed("load", status, admin_addr);
    return PrintJson(response);
  }
  if (command == "rollback") {
    offerd::v1::RollbackResponse response;
    grpc::Status status = admin->Rollback(&context, offerd::v1::RollbackRequest(), &response);
    if (!status.ok()) return CallFailed("rollback", status, admin_addr);
    return PrintJson(response);
  }
  if (command == "promote") {
    offerd::v1::PromoteResponse response;
    grpc::Status status = admin->Promote(&context, offerd::v1::PromoteRequest(), &response);
    if (!status.ok()) return CallFailed("promote", status, admin_addr);
    return PrintJson(response);
  }
  if (command == "unpin") {
    offerd::v1::UnpinResponse response;
    grpc::Status status = admin->Unpin(&context, offerd::v1::UnpinRequest(), &response);
    if (!status.ok()) return CallFailed("unpin", status, admin_addr);
    return PrintJson(response);
  }
  return Fail(absl::StrCat("unknown command \"", command, "\"\n\n", kUsage));
}
