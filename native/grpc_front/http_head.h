// Reading HTTP/1.1 heads for the native HTTP front: which requests it answers itself, and where messages end.
//
// Why so strict: the front answers only the one request shape that matters for speed (a well-formed
// `POST /v2/models/{m}[/versions/{v}]/infer` with a Content-Length) and relays everything else, byte for byte, to
// the server's own HTTP server (uvicorn), whose answers to odd, malformed or hostile input the test suite pins.
// Any doubt here means "relay" or "tunnel", never a guess: a wrong "native" could split a message differently
// from the server behind it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace twofour {

enum class Route {
  kNeedMore,  // no complete head yet, and nothing wrong with the bytes so far
  kNative,    // an infer request the front sends to the server as one frame
  kRelay,     // a well-framed request (Content-Length or no body) for uvicorn; its answer is read back
  kTunnel,    // anything else: the connection becomes a byte pipe to uvicorn for the rest of its life
};

struct RequestPlan {
  Route route = Route::kNeedMore;
  size_t head_size = 0;    // the request line and headers, with the blank line
  uint64_t body_size = 0;  // Content-Length, 0 without one
  bool keep_alive = true;  // false after `Connection: close`
  bool head_method = false;  // HEAD: its answer has no body whatever its headers say
  std::string model, version;  // kNative: from the path
  bool has_header_length = false;  // kNative: Inference-Header-Content-Length, passed on unparsed
  std::string header_length;
};

// `data[0, size)` holds the start of a request. Heads over `max_head` bytes tunnel (uvicorn answers 431); native
// requests need head and body within `max_body` bytes (larger ones relay: uvicorn answers 413 and drains them).
RequestPlan PlanRequest(const char* data, size_t size, size_t max_head, uint64_t max_body);

enum class Framing {
  kNeedMore,  // no complete head yet
  kLength,    // a final answer of `head_size + body_size` bytes; the connection stays open
  kTunnel,    // chunked, close-delimited, 1xx, or `Connection: close`: pipe until uvicorn closes
};

struct ResponsePlan {
  Framing framing = Framing::kNeedMore;
  size_t head_size = 0;
  uint64_t body_size = 0;
};

// `data[0, size)` holds the start of uvicorn's answer to a request (a HEAD request if `head_method`).
ResponsePlan PlanResponse(const char* data, size_t size, bool head_method);

}  // namespace twofour
