// The two kinds of call the front serves, as gRPC callback reactors over the generic (raw bytes) service.
//
// InferCall: ModelInfer, the hot path, sent to the server as one CALL frame and answered from its REPLY.
// RelayCall: every other method (metadata, health, streams, repository control, SparsityService), relayed as raw
// bytes to the server's own gRPC server on its private Unix socket, with the caller's metadata, deadline and
// cancellation, so those keep exactly the in-process semantics. Neither ever parses a message.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include "fast_link.h"

namespace twofour {

class InferCall final : public grpc::ServerGenericBidiReactor, public PendingCall {
 public:
  explicit InferCall(FastLink* link);
  void OnReadDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override { Unref(); }
  void Answer(uint8_t status, std::string payload) override;
  void Unref() override;

 private:
  void FinishOnce(const grpc::Status& status, bool with_response);

  FastLink* link_;
  grpc::ByteBuffer request_, response_;
  uint32_t id_ = 0;
  std::atomic<int> refs_{1};  // gRPC's, until OnDone; plus the link's while registered
  std::atomic<bool> registered_{false}, cancelled_{false}, finished_{false};
};

class RelayCall final : public grpc::ServerGenericBidiReactor {
 public:
  RelayCall(grpc::GenericCallbackServerContext* context, grpc::GenericStub* stub);
  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnCancel() override { upstream_context_.TryCancel(); }
  void OnDone() override { Unref(); }

 private:
  // The client half: the same method on the server's private socket.
  class Upstream final : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
   public:
    explicit Upstream(RelayCall* relay) : relay_(relay) {}
    void OnReadDone(bool ok) override { relay_->UpstreamRead(ok); }
    void OnWriteDone(bool ok) override { relay_->UpstreamWritten(ok); }
    void OnDone(const grpc::Status& status) override { relay_->UpstreamDone(status); }

   private:
    RelayCall* relay_;
  };

  void UpstreamRead(bool ok);
  void UpstreamWritten(bool ok);
  void UpstreamDone(const grpc::Status& status);
  void EndWritesLocked();
  void Unref();

  grpc::ClientContext upstream_context_;
  Upstream upstream_{this};
  grpc::ByteBuffer from_client_, from_server_;
  std::recursive_mutex mu_;  // recursive: a reaction may run inline inside the Start* call that caused it
  bool writes_ended_ = false, upstream_done_ = false, writing_ = false;
  grpc::Status status_;  // the upstream's, kept when it arrives while a write to our client is in flight
  std::atomic<int> refs_{2};  // this reactor's OnDone and the upstream's
};

// Routes each call: ModelInfer to an InferCall, anything else to a RelayCall.
class FrontService final : public grpc::CallbackGenericService {
 public:
  FrontService(FastLink* link, std::shared_ptr<grpc::Channel> relay_channel)
      : link_(link), stub_(std::move(relay_channel)) {}
  grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext* context) override;

 private:
  FastLink* link_;
  grpc::GenericStub stub_;
};

}  // namespace twofour
