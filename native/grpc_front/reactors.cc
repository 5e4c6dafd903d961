// InferCall, RelayCall and the routing between them (see reactors.h).
#include "reactors.h"

#include <string_view>

namespace twofour {
namespace {

constexpr std::string_view kFastMethod = "/inference.GRPCInferenceService/ModelInfer";

// Headers the relay channel sets itself, or that belong to the transport rather than the caller.
bool Dropped(std::string_view key) {
  return key.empty() || key[0] == ':' || key.substr(0, 5) == "grpc-" || key == "user-agent" ||
         key == "content-type" || key == "te" || key == "host";
}

}  // namespace

// ---------------------------------------------------------------- InferCall

InferCall::InferCall(FastLink* link) : link_(link) { StartRead(&request_); }

void InferCall::OnReadDone(bool ok) {
  if (!ok) {  // the client half-closed without a request (or is gone: OnCancel finishes it then)
    FinishOnce(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "ModelInfer needs one request message"), false);
    return;
  }
  refs_.fetch_add(1);  // the link's, taken before the reply can arrive
  std::string error;
  uint32_t id = 0;
  if (!link_->Send(this, request_, &id, &error)) {
    refs_.fetch_sub(1);
    FinishOnce(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the server process is not reachable: " + error), false);
    return;
  }
  id_ = id;
  registered_.store(true);
  if (cancelled_.load() && link_->Cancel(id_)) Unref();  // cancelled while it was being sent
}

void InferCall::OnCancel() {
  // The client cancelled or its deadline passed: the server drops the request from its queue (CANCEL frame).
  cancelled_.store(true);
  if (registered_.load() && link_->Cancel(id_)) Unref();
  FinishOnce(grpc::Status::CANCELLED, false);
}

void InferCall::Answer(uint8_t status, std::string payload) {
  if (status == 0) {
    grpc::Slice slice(payload);
    response_ = grpc::ByteBuffer(&slice, 1);
    FinishOnce(grpc::Status::OK, true);
  } else {  // the status and message the server's one error table chose
    FinishOnce(grpc::Status(static_cast<grpc::StatusCode>(status), payload), false);
  }
}

void InferCall::FinishOnce(const grpc::Status& status, bool with_response) {
  if (finished_.exchange(true)) return;
  if (with_response) {
    StartWriteAndFinish(&response_, grpc::WriteOptions(), status);
  } else {
    Finish(status);
  }
}

void InferCall::Unref() {
  if (refs_.fetch_sub(1) == 1) delete this;
}

// ---------------------------------------------------------------- RelayCall

RelayCall::RelayCall(grpc::GenericCallbackServerContext* context, grpc::GenericStub* stub) {
  for (const auto& [key, value] : context->client_metadata()) {  // the bearer token of repository control
    std::string_view name(key.data(), key.size());
    if (!Dropped(name)) upstream_context_.AddMetadata(std::string(name), std::string(value.data(), value.size()));
  }
  upstream_context_.set_deadline(context->raw_deadline());
  stub->PrepareBidiStreamingCall(&upstream_context_, context->method(), grpc::StubOptions(), &upstream_);
  std::lock_guard<std::recursive_mutex> lock(mu_);
  upstream_.AddHold();  // the upstream's writes start from this reactor's reactions: held until they end
  upstream_.StartRead(&from_server_);
  upstream_.StartCall();
  StartRead(&from_client_);
}

void RelayCall::OnReadDone(bool ok) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  if (!ok) {  // the client half-closed (or is gone)
    EndWritesLocked();
  } else if (!writes_ended_) {
    upstream_.StartWrite(&from_client_);
  }
}

void RelayCall::UpstreamWritten(bool ok) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  if (ok && !writes_ended_) {
    StartRead(&from_client_);
  } else {
    EndWritesLocked();  // the upstream call is over: its status will come through UpstreamDone
  }
}

void RelayCall::EndWritesLocked() {
  if (writes_ended_) return;
  writes_ended_ = true;
  if (!upstream_done_) upstream_.StartWritesDone();
  upstream_.RemoveHold();
}

void RelayCall::UpstreamRead(bool ok) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  if (ok) {
    writing_ = true;
    // Held until OnWriteDone has started the next read: that reaction is our client's, not the upstream's, and
    // gRPC lets an operation start outside the stream's own reactions only under a hold. Without it the upstream
    // could complete (its call object freed) between this read and that StartRead: the front aborted with "pure
    // virtual method called" on a client's first relayed call in CI (issue 19).
    upstream_.AddHold();
    StartWrite(&from_server_);
  } else {
    EndWritesLocked();  // the upstream sent its status: let it finish even if our client never half-closes
  }
}

void RelayCall::OnWriteDone(bool ok) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  writing_ = false;
  if (upstream_done_) {  // unreachable while UpstreamRead's hold stands; kept so a status is never lost
    Finish(status_);
    return;
  }
  if (ok) {
    upstream_.StartRead(&from_server_);
  } else {
    upstream_context_.TryCancel();  // our client is gone
  }
  upstream_.RemoveHold();  // UpstreamRead's: the upstream may finish now (UpstreamDone takes it from here)
}

void RelayCall::UpstreamDone(const grpc::Status& status) {
  {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    upstream_done_ = true;
    status_ = status;
    if (!writing_) Finish(status_);
  }
  Unref();
}

void RelayCall::Unref() {
  if (refs_.fetch_sub(1) == 1) delete this;
}

// ---------------------------------------------------------------- routing

grpc::ServerGenericBidiReactor* FrontService::CreateReactor(grpc::GenericCallbackServerContext* context) {
  if (context->method() == kFastMethod) return new InferCall(link_);
  return new RelayCall(context, &stub_);  // unknown methods too: the server answers UNIMPLEMENTED itself
}

}  // namespace twofour
