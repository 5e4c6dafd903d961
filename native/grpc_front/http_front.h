// The native HTTP front: the server's public HTTP/1.1 port, when the native front runs (`--http-address`).
//
// Why: over HTTP the server spent its time on the event loop (uvicorn's parser, the ASGI cycle, a task per request)
// while gRPC calls, arriving as frames from the C++ gRPC front, never touch it; at concurrency 32 HTTP served about
// 0.7 of gRPC's rate. Here one epoll thread owns every HTTP connection:
//   - a well-formed infer request (http_head.h says which) goes to the server as one HTTP CALL frame over the same
//     FastLink as gRPC's calls; the server's thread-native path decodes, batches and encodes it, and its HTTP REPLY
//     frame carries the status, the body and how to label it;
//   - every other request is relayed byte for byte to uvicorn on the server's private Unix socket, and its answer
//     read back (Content-Length framing); anything irregular turns the connection into a byte tunnel to uvicorn,
//     so the server's own HTTP stack keeps answering odd, malformed and hostile input exactly as before.
// The front also keeps the timing rules uvicorn kept for the requests it answers: a body that stalls gets 408 and the
// connection closes; an idle keep-alive connection closes after --http-keep-alive-secs; a client that goes away
// cancels its call (CANCEL frame), so its request leaves the queue uncomputed.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "fast_link.h"
#include "http_head.h"

namespace twofour {

struct HttpOptions {
  std::string address;       // host:port to bind (port 0: any)
  std::string relay_socket;  // uvicorn's Unix socket
  size_t max_head = 64 * 1024;
  uint64_t max_body = 64ull << 20;
  double body_timeout_s = 30;
  double keep_alive_s = 5;
};

class HttpFront {
 public:
  HttpFront(FastLink* link, HttpOptions options) : link_(link), options_(std::move(options)) {}
  HttpFront(const HttpFront&) = delete;
  HttpFront& operator=(const HttpFront&) = delete;

  // Binds the port (false and `error` if it cannot) and starts the connection thread.
  bool Start(int* port, std::string* error);
  // Stops accepting (the backlog is served first) and closes idle connections once a just-accepted client has had
  // time to deliver its request; returns when no connection is left open, or at `deadline`.
  void Shutdown(std::chrono::steady_clock::time_point deadline);

  // From the link's reader thread: the server's answer to call `call` of connection `connection`.
  void Post(uint64_t connection, uint32_t call, uint8_t status, std::string payload);

 private:
  using Clock = std::chrono::steady_clock;
  enum class State { kHead, kBody, kCall, kRelayRequest, kRelayResponse, kTunnel };

  struct Connection {
    uint64_t id = 0;
    int fd = -1, upstream = -1;
    State state = State::kHead;
    std::string in, out, up_in, up_out;  // client bytes unread / unwritten; uvicorn's, likewise
    RequestPlan plan;
    uint64_t relay_left = 0, answer_left = 0;  // request bytes still to relay; answer bytes still to pass back
    bool answer_framed = false;  // kRelayResponse: the answer's head has been read
    bool client_eof = false, upstream_eof = false, upstream_shut = false, close_after_write = false;
    uint32_t call = 0, link_id = 0;  // this connection's call in flight: the front's number, the link's id
    PendingCall* pending = nullptr;   // its registration with the link, ours to free if a cancel wins
    Clock::time_point since;  // entering kHead (idle) or kBody (body timeout)
    Clock::time_point head_started;  // the first byte of a head not yet complete
    uint32_t client_events = 0, upstream_events = 0;  // what epoll watches for on each side
    bool client_watched = false, upstream_watched = false;
  };

  struct Posted {
    uint64_t connection;
    uint32_t call;
    uint8_t status;
    std::string payload;
  };

  // http_front.cc: the thread, sockets, interest and timers.
  void Loop();
  void Accept();
  void OnClient(Connection* c, uint32_t events);
  void OnUpstream(Connection* c, uint32_t events);
  void TakePosted();
  void Sweep(Clock::time_point now);
  void Pump(Connection* c);
  void Watch(Connection* c);
  bool OpenUpstream(Connection* c);
  void DropUpstream(Connection* c);
  void Close(Connection* c);

  // http_exchange.cc: one connection's requests, what becomes of each, and the answers the front writes itself.
  bool Advance(Connection* c);
  void StartTunnel(Connection* c);
  void SendCall(Connection* c);
  void Answer(Connection* c, uint8_t status, const std::string& payload);
  void Respond(Connection* c, int status, const std::string& content_type, const std::string& extra_headers,
               const char* body, size_t body_size, bool close);
  void RespondError(Connection* c, int status, const std::string& message, bool close);

  FastLink* link_;
  const HttpOptions options_;
  int listener_ = -1, epoll_ = -1, wake_ = -1;
  std::unordered_map<uint64_t, std::unique_ptr<Connection>> connections_;
  uint64_t next_id_ = 16;  // ids below are the listener's and the wake-up's
  uint32_t next_call_ = 0;
  bool accept_paused_ = false;  // out of descriptors: the listener is unwatched until the next sweep
  std::atomic<bool> stopping_{false};
  std::atomic<int> calls_in_flight_{0};
  std::atomic<int> open_connections_{0};  // Shutdown waits for them to be answered and closed
  Clock::time_point stopped_at_;          // when the loop saw stopping_ (the loop thread's own)
  std::string date_;  // the Date header's value, renewed by each sweep (RFC 9110 asks an origin server for one)
  std::mutex posted_mu_;
  std::vector<Posted> posted_;
  std::thread thread_;
};

}  // namespace twofour
