// The front's end of the framed ModelInfer socket (server/transport/grpc_frames.py defines the frames).
//
// Why a link object: one Unix-socket connection carries every ModelInfer call in flight, each under its own id,
// so the front never waits on one call to send the next. A reader thread matches each REPLY to its call; the
// writes happen on the gRPC callback thread that has the request, under one mutex (a frame is one writev).
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include <grpcpp/grpcpp.h>

namespace twofour {

// kCall/kReply: a gRPC ModelInfer call; kHttpCall/kHttpReply: an HTTP infer request (http_front.h); kCancel: either.
enum FrameKind : uint8_t { kCall = 1, kCancel = 2, kReply = 3, kHttpCall = 4, kHttpReply = 5 };

// A call waiting for its REPLY. The link holds one reference from Send until it hands the reply over (or the
// connection breaks); the pending call's owner decides what a reference means.
class PendingCall {
 public:
  virtual ~PendingCall() = default;
  virtual void Answer(uint8_t status, std::string payload) = 0;
  virtual void Unref() = 0;
};

class FastLink {
 public:
  FastLink(std::string path, uint32_t frame_limit) : path_(std::move(path)), limit_(frame_limit) {}
  FastLink(const FastLink&) = delete;
  FastLink& operator=(const FastLink&) = delete;

  // Registers `call` under a new id and sends its CALL frame. On failure (the server is unreachable) nothing is
  // registered and `error` says why.
  bool Send(PendingCall* call, const grpc::ByteBuffer& request, uint32_t* id, std::string* error);

  // The same for a frame of `kind` whose payload is `parts`, in order (the HTTP front's calls).
  bool SendParts(PendingCall* call, uint8_t kind, std::vector<iovec> parts, uint32_t* id, std::string* error);

  // The client went away: if `id` is still waiting, forget it (true) and tell the server to drop it from its queue.
  bool Cancel(uint32_t id);

 private:
  bool ConnectLocked(std::string* error);
  bool WriteLocked(uint8_t kind, uint32_t id, std::vector<iovec> payload);
  bool SendLocked(PendingCall* call, uint8_t kind, std::vector<iovec> payload, uint32_t* id, std::string* error);
  void Receive(int fd);
  void Broken(int fd);

  const std::string path_;
  const uint32_t limit_;
  std::mutex mu_;  // guards everything below, and the socket's write side
  int fd_ = -1;
  uint32_t next_id_ = 0;
  std::unordered_map<uint32_t, PendingCall*> calls_;
};

}  // namespace twofour
