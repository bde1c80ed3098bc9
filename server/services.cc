#include "server/services.h"

#include <algorithm>

#include "core/request_limits.h"
#include "server/grpc_status.h"
#include "server/log.h"

namespace offerd {
namespace {

void FillBundleStatus(const SnapshotManager::BundleInfo& info, v1::BundleStatus* out) {
  out->set_version(info.version);
  out->set_loaded_at_ms(info.loaded_at_ms);
  out->set_load_ms(info.load_ms);
  out->set_num_offers(info.num_offers);
  out->set_embedding_dim(info.embedding_dim);
  out->set_index_type(info.index_type);
  out->set_feature_schema_id(info.feature_schema_id);
  out->set_warmup_ms(info.warmup_ms);
  out->set_memory_bytes(info.memory_bytes);
}

// A request whose deadline has already passed is not worked on.
bool DeadlinePassed(std::chrono::system_clock::time_point deadline) {
  return deadline < std::chrono::system_clock::now();
}

}  // namespace

bool OfferServiceImpl::Admit(Call* call, Rpc rpc, std::chrono::steady_clock::time_point start) {
  if (DeadlinePassed(call->deadline())) {
    if (metrics_ != nullptr) metrics_->shed_deadline().Increment();
    Finish(rpc, call, absl::DeadlineExceededError("deadline already passed"), start, false);
    return false;
  }
  if (in_flight_.fetch_add(1, std::memory_order_relaxed) >= max_in_flight_) {
    in_flight_.fetch_sub(1, std::memory_order_relaxed);
    if (metrics_ != nullptr) metrics_->shed_overload().Increment();
    Finish(rpc, call,
           absl::ResourceExhaustedError(absl::StrCat(
               "overloaded: more than ", max_in_flight_, " calls in flight; retry with backoff")),
           start, false);
    return false;
  }
  if (metrics_ != nullptr) metrics_->in_flight().Increment();
  return true;
}

void OfferServiceImpl::Finish(Rpc rpc, Call* call, const absl::Status& status,
                              std::chrono::steady_clock::time_point start, bool admitted) {
  if (admitted) {
    in_flight_.fetch_sub(1, std::memory_order_relaxed);
    if (metrics_ != nullptr) metrics_->in_flight().Decrement();
  }
  if (metrics_ != nullptr) {
    metrics_->request_duration(rpc, static_cast<int>(status.code()))
        .Observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  call->Reply(ToGrpcStatus(status));
}

void OfferServiceImpl::Dispatch(Call* call, Rpc rpc, std::chrono::steady_clock::time_point start,
                                std::function<absl::Status(OnWriteStall)> work) {
  if (pool_ == nullptr) {
    Finish(rpc, call, work(OnWriteStall::kWait), start, true);
    return;
  }
  // The fast path (see the class comment): a call alone in flight with nothing queued, still
  // alone once the events waiting for this thread have been taken.
  // Admitted calls stay counted until they finish. (Running calls inline whenever nothing was
  // queued, however many were admitted, cost 10% of the throughput at full load.)
  const auto alone = [this] {
    return in_flight_.load(std::memory_order_acquire) <= max_inline_ &&
           queued_.load(std::memory_order_acquire) == 0;
  };
  if (alone() && (call->BeforeInline(), alone())) {
    absl::Status status = work(OnWriteStall::kFail);
    if (!IsWriteStalled(status)) {
      if (metrics_ != nullptr) metrics_->dispatched_inline().Increment();
      Finish(rpc, call, status, start, true);
      return;
    }
    // Nothing was recorded: run it again on the pool, where it may wait for RocksDB.
    if (metrics_ != nullptr) metrics_->dispatched_inline_stalled().Increment();
  } else if (metrics_ != nullptr) {
    metrics_->dispatched_worker().Increment();
  }
  // The call, its request and its response stay valid until it is replied to.
  const auto queued_at = std::chrono::steady_clock::now();
  auto task = [this, call, rpc, start, queued_at, work = std::move(work)] {
    queued_.fetch_sub(1, std::memory_order_relaxed);
    const auto waited = std::chrono::steady_clock::now() - queued_at;
    if (metrics_ != nullptr) {
      metrics_->queue_wait().Observe(std::chrono::duration<double>(waited).count());
    }
    if (waited > max_queue_wait_) {
      if (metrics_ != nullptr) metrics_->shed_queue_timeout().Increment();
      Finish(rpc, call,
             absl::ResourceExhaustedError(absl::StrCat(
                 "overloaded: waited ",
                 std::chrono::duration_cast<std::chrono::milliseconds>(waited).count(),
                 " ms for a worker (limit ",
                 std::chrono::duration_cast<std::chrono::milliseconds>(max_queue_wait_).count(),
                 " ms); retry with backoff")),
             start, true);
      return;
    }
    if (DeadlinePassed(call->deadline())) {
      if (metrics_ != nullptr) metrics_->shed_deadline().Increment();
      Finish(rpc, call, absl::DeadlineExceededError("deadline passed while queued"), start,
             true);
      return;
    }
    if (call->cancelled()) {  // a hedged request answered elsewhere, a client that gave up
      if (metrics_ != nullptr) metrics_->shed_cancelled().Increment();
      Finish(rpc, call, absl::CancelledError("cancelled by the client while queued"), start, true);
      return;
    }
    Finish(rpc, call, work(OnWriteStall::kWait), start, true);
  };
  queued_.fetch_add(1, std::memory_order_relaxed);
  if (!pool_->Submit(std::move(task))) {
    queued_.fetch_sub(1, std::memory_order_relaxed);
    Finish(rpc, call, absl::UnavailableError("shutting down"), start, true);
  }
}

void OfferServiceImpl::Recommend(Call* call, const v1::RecommendRequest* request,
                                 v1::RecommendResponse* response) {
  const auto start = std::chrono::steady_clock::now();
  if (!Admit(call, Rpc::kRecommend, start)) return;
  Dispatch(call, Rpc::kRecommend, start,
           [this, call, request, response](OnWriteStall on_stall) {
             return recommender_->Recommend(*request, response,
                                            absl::FromChrono(call->deadline()), on_stall);
           });
}

void OfferServiceImpl::ReportEvents(Call* call, const v1::ReportEventsRequest* request,
                                    v1::ReportEventsResponse* response) {
  const auto start = std::chrono::steady_clock::now();
  if (!Admit(call, Rpc::kReportEvents, start)) return;
  Dispatch(call, Rpc::kReportEvents, start,
           [this, request, response](OnWriteStall on_stall) {
             return events_->Apply(*request, response, on_stall);
           });
}

grpc::Status AdminServiceImpl::Authorize(const grpc::ServerContext* context) const {
  if (admin_token_.empty()) return grpc::Status::OK;
  const auto& metadata = context->client_metadata();
  auto it = metadata.find("authorization");
  const std::string expected = "Bearer " + admin_token_;
  if (it != metadata.end()) {
    const grpc::string_ref got = it->second;
    // Constant-time: look at every byte whatever the first difference.
    unsigned char diff = got.size() == expected.size() ? 0 : 1;
    for (size_t i = 0; i < expected.size(); ++i) {
      diff |= static_cast<unsigned char>(expected[i] ^ (i < got.size() ? got.data()[i] : 0));
    }
    if (diff == 0) return grpc::Status::OK;
  }
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                      "admin calls need the header \"authorization: Bearer <token>\"");
}

#define OFFERD_AUTHORIZE(context)                           \
  if (grpc::Status auth = Authorize(context); !auth.ok()) { \
    return auth;                                            \
  }

grpc::Status AdminServiceImpl::LoadSnapshot(grpc::ServerContext* context,
                                            const v1::LoadSnapshotRequest* request,
                                            v1::LoadSnapshotResponse* response) {
  OFFERD_AUTHORIZE(context);
  absl::StatusOr<SnapshotManager::BundleInfo> info =
      snapshots_->LoadVersion(request->version(), request->canary_fraction());
  if (info.ok()) {
    response->set_version(info->version);
    response->set_load_ms(info->load_ms);
    response->set_warmup_ms(info->warmup_ms);
    response->set_canary(request->canary_fraction() > 0);
  }
  return ToGrpcStatus(info.status());
}

grpc::Status AdminServiceImpl::Rollback(grpc::ServerContext* context,
                                        const v1::RollbackRequest* /*request*/,
                                        v1::RollbackResponse* response) {
  OFFERD_AUTHORIZE(context);
  const SnapshotManager::StatusSnapshot before = snapshots_->Status();
  absl::StatusOr<SnapshotManager::BundleInfo> info = snapshots_->Rollback();
  if (info.ok()) {
    response->set_version(info->version);
    if (before.current) response->set_previous_version(before.current->version);
  }
  return ToGrpcStatus(info.status());
}

grpc::Status AdminServiceImpl::Promote(grpc::ServerContext* context,
                                       const v1::PromoteRequest* /*request*/,
                                       v1::PromoteResponse* response) {
  OFFERD_AUTHORIZE(context);
  absl::StatusOr<SnapshotManager::BundleInfo> info = snapshots_->Promote();
  if (info.ok()) response->set_version(info->version);
  return ToGrpcStatus(info.status());
}

grpc::Status AdminServiceImpl::Unpin(grpc::ServerContext* context,
                                     const v1::UnpinRequest* /*request*/,
                                     v1::UnpinResponse* /*response*/) {
  OFFERD_AUTHORIZE(context);
  return ToGrpcStatus(snapshots_->Unpin());
}

grpc::Status AdminServiceImpl::SetOfferOverride(grpc::ServerContext* context,
                                                const v1::SetOfferOverrideRequest* request,
                                                v1::SetOfferOverrideResponse* response) {
  OFFERD_AUTHORIZE(context);
  absl::Status status = CheckLength("offer_id", request->offer_id(), 1, kMaxOfferIdBytes);
  if (status.ok() && !request->has_paused() && !request->has_budget()) {
    status = absl::InvalidArgumentError("set paused and/or budget");
  }
  if (status.ok()) {
    absl::StatusOr<OfferRuntime> runtime = store_->SetOfferOverride(
        request->offer_id(),
        request->has_paused() ? std::optional<bool>(request->paused()) : std::nullopt,
        request->has_budget() ? std::optional<int64_t>(request->budget()) : std::nullopt);
    status = runtime.status();
    if (runtime.ok()) {
      response->set_offer_id(request->offer_id());
      response->set_paused(runtime->paused);
      if (runtime->budget_override) response->set_budget(*runtime->budget_override);
      response->set_redemptions(runtime->redemptions);
      log::Info("offer_override", {{"offer_id", request->offer_id()},
                                   {"paused", runtime->paused},
                                   {"budget", runtime->budget_override.value_or(-1)}});
    }
  }
  return ToGrpcStatus(status);
}

grpc::Status AdminServiceImpl::ForgetUser(grpc::ServerContext* context,
                                          const v1::ForgetUserRequest* request,
                                          v1::ForgetUserResponse* /*response*/) {
  OFFERD_AUTHORIZE(context);
  absl::Status status = CheckLength("user_id", request->user_id(), 1, kMaxUserIdBytes);
  if (status.ok()) status = store_->ForgetUser(request->user_id());
  if (status.ok()) log::Info("user_forgotten");
  return ToGrpcStatus(status);
}

grpc::Status AdminServiceImpl::Checkpoint(grpc::ServerContext* context,
                                          const v1::CheckpointRequest* request,
                                          v1::CheckpointResponse* response) {
  OFFERD_AUTHORIZE(context);
  const auto start = std::chrono::steady_clock::now();
  absl::Status status = store_->Checkpoint(request->directory());
  if (status.ok()) {
    response->set_directory(request->directory());
    response->set_checkpoint_ms(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
            .count());
    log::Info("checkpoint_written", {{"directory", request->directory()}});
  }
  return ToGrpcStatus(status);
}

grpc::Status AdminServiceImpl::GetUserState(grpc::ServerContext* context,
                                            const v1::GetUserStateRequest* request,
                                            v1::GetUserStateResponse* response) {
  OFFERD_AUTHORIZE(context);
  absl::Status status = CheckLength("user_id", request->user_id(), 1, kMaxUserIdBytes);
  if (status.ok()) {
    absl::StatusOr<std::optional<UserRecord>> user = store_->GetUser(request->user_id());
    absl::StatusOr<std::optional<PurchaseSummary>> purchases =
        store_->GetPurchases(request->user_id());
    absl::StatusOr<UserFatigueRecord> fatigue = store_->GetUserFatigue(request->user_id());
    if (!user.ok()) status = user.status();
    else if (!purchases.ok()) status = purchases.status();
    else if (!fatigue.ok()) status = fatigue.status();
    if (status.ok()) {
      response->set_has_features(user->has_value());
      if (purchases->has_value()) {
        response->set_has_purchases(true);
        response->set_first_purchase_day((*purchases)->first_purchase_day);
        response->set_last_purchase_day((*purchases)->last_purchase_day);
        response->set_repeat_days((*purchases)->repeat_days);
        response->set_repeat_spend_sum((*purchases)->repeat_spend_sum);
      }
      for (const OfferFatigueEntry& e : fatigue->offers) {
        v1::OfferState* o = response->add_offers();
        o->set_offer_id(e.offer_id);
        int64_t impressions = 0;
        for (const ImpressionBucket& b : e.impressions) impressions += b.count;
        o->set_impressions(impressions);
        o->set_last_dismiss_ms(e.last_dismiss_ms);
        o->set_last_redeem_ms(e.last_redeem_ms);
      }
      response->set_shown_today(DayStateOf(*fatigue, clock_->NowMs()).offers_served_today);
    }
  }
  return ToGrpcStatus(status);
}

namespace {

constexpr int kMaxIngestFiles = 1000;
constexpr size_t kMaxFeatureSchemaIdBytes = 128;

// The serving and canary bundles encode user features with their own schema: features
// ingested under another one would make every ingested user look unknown to them.
absl::Status CheckSchemaAgainstBundles(const SnapshotManager::StatusSnapshot& status,
                                       const std::string& feature_schema_id) {
  for (const std::optional<SnapshotManager::BundleInfo>* bundle :
       {&status.current, &status.canary}) {
    if (bundle->has_value() && (*bundle)->feature_schema_id != feature_schema_id) {
      return absl::FailedPreconditionError(absl::StrCat(
          "bundle ", (*bundle)->version, " uses feature schema \"", (*bundle)->feature_schema_id,
          "\", these files \"", feature_schema_id,
          "\"; set allow_schema_change for a full re-ingest before loading a bundle trained "
          "with the new schema"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

grpc::Status AdminServiceImpl::IngestFeatures(grpc::ServerContext* context,
                                              const v1::IngestFeaturesRequest* request,
                                              v1::IngestFeaturesResponse* response) {
  OFFERD_AUTHORIZE(context);
  absl::Status status =
      CheckLength("feature_schema_id", request->feature_schema_id(), 1, kMaxFeatureSchemaIdBytes);
  if (status.ok() && (request->paths_size() < 1 || request->paths_size() > kMaxIngestFiles)) {
    status = absl::InvalidArgumentError(
        absl::StrCat("paths: 1..", kMaxIngestFiles, " files, got ", request->paths_size()));
  }
  if (status.ok() && !request->allow_schema_change()) {
    status = CheckSchemaAgainstBundles(snapshots_->Status(), request->feature_schema_id());
  }
  if (status.ok()) {
    RocksDbStore::SstIngestRequest ingest;
    ingest.paths.assign(request->paths().begin(), request->paths().end());
    ingest.feature_schema_id = request->feature_schema_id();
    ingest.allow_schema_change = request->allow_schema_change();
    absl::StatusOr<RocksDbStore::SstIngestStats> stats = store_->IngestSst(ingest);
    status = stats.status();
    if (stats.ok()) {
      response->set_users(stats->users);
      response->set_purchase_records(stats->purchase_records);
      response->set_files(stats->files);
      response->set_bytes(stats->bytes);
      response->set_validate_ms(stats->validate_seconds * 1e3);
      response->set_ingest_ms(stats->ingest_seconds * 1e3);
      response->set_feature_schema_id(request->feature_schema_id());
      response->set_previous_feature_schema_id(stats->previous_feature_schema_id);
      log::Info("features_ingested", {{"users", stats->users},
                                      {"purchase_records", stats->purchase_records},
                                      {"files", stats->files},
                                      {"bytes", stats->bytes},
                                      {"validate_seconds", stats->validate_seconds},
                                      {"ingest_seconds", stats->ingest_seconds},
                                      {"feature_schema_id", request->feature_schema_id()}});
    } else {
      log::Warning("features_ingest_failed", {{"error", std::string(status.message())}});
    }
  }
  return ToGrpcStatus(status);
}

grpc::Status AdminServiceImpl::GetStatus(grpc::ServerContext* context,
                                         const v1::GetStatusRequest* /*request*/,
                                         v1::GetStatusResponse* response) {
  OFFERD_AUTHORIZE(context);
  const SnapshotManager::StatusSnapshot status = snapshots_->Status();
  if (status.current) FillBundleStatus(*status.current, response->mutable_current());
  if (status.previous) FillBundleStatus(*status.previous, response->mutable_previous());
  if (status.canary) FillBundleStatus(*status.canary, response->mutable_canary());
  response->set_canary_fraction(status.canary_fraction);
  response->set_pinned_version(status.pinned_version);
  response->set_loads_ok(status.loads_ok);
  response->set_loads_failed(status.loads_failed);
  for (const auto& [version, rejection] : status.rejected) {
    v1::RejectedVersion* r = response->add_rejected();
    r->set_version(version);
    r->set_error(rejection.error);
    r->set_at_ms(rejection.at_ms);
  }
  response->set_users_estimate(store_->ApproximateUserCount());
  response->set_store_feature_schema_id(store_->feature_schema_id());
  response->set_started_at_ms(started_at_ms_);
  response->set_server_version(OFFERD_VERSION);
  return grpc::Status::OK;
}

}  // namespace offerd
