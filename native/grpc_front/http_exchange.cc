// One HTTP connection's exchanges: each request answered natively (an HTTP CALL frame), relayed to uvicorn, or
// tunnelled; and the answers the front writes itself.
//
// HTTP CALL payload (server/transport/http_frames.py reads it):
//   <u16 model length><u16 version length><u16 header-length length, 0xFFFF when absent>
//   model, version, the Inference-Header-Content-Length value as sent, then the body.
// HTTP REPLY payload: <u16 status><u8 flags: 1 close the connection, 2 binary body><u32 header length>, the body.
#include <cstring>

#include "http_front.h"
#include "json_text.h"

namespace twofour {
namespace {

constexpr uint8_t kReplyClose = 1, kReplyBinary = 2;
constexpr size_t kReplyPrefix = 7;

void PutU16(std::string* out, size_t value) {
  out->push_back(static_cast<char>(value & 0xff));
  out->push_back(static_cast<char>((value >> 8) & 0xff));
}

const char* Reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 499: return "Client Closed Request";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Unknown";
  }
}

// The link's registration of one call; its answer goes back to the connection thread.
class HttpPending final : public PendingCall {
 public:
  HttpPending(HttpFront* front, uint64_t connection, uint32_t call)
      : front_(front), connection_(connection), call_(call) {}
  void Answer(uint8_t status, std::string payload) override {
    front_->Post(connection_, call_, status, std::move(payload));
  }
  void Unref() override { delete this; }

 private:
  HttpFront* front_;
  uint64_t connection_;
  uint32_t call_;
};

}  // namespace

// Moves `c` along as far as its buffered bytes allow; false when the connection should close now.
bool HttpFront::Advance(Connection* c) {
  for (;;) {
    switch (c->state) {
      case State::kHead: {
        if (c->close_after_write || c->in.empty()) {
          if (c->client_eof && c->in.empty()) c->close_after_write = true;  // after what is still to be written
          return !(c->close_after_write && c->out.empty());
        }
        c->plan = PlanRequest(c->in.data(), c->in.size(), options_.max_head, options_.max_body);
        if (c->plan.route == Route::kNeedMore) {
          if (!c->client_eof) return true;
          StartTunnel(c);  // a partial head, then the end: uvicorn says what it says
        } else if (c->plan.route == Route::kNative) {
          c->state = State::kBody;
          c->since = Clock::now();
          c->in.reserve(c->plan.head_size + c->plan.body_size);
        } else if (c->plan.route == Route::kRelay && OpenUpstream(c)) {
          c->state = State::kRelayRequest;
          c->relay_left = c->plan.head_size + c->plan.body_size;
        } else {
          StartTunnel(c);
        }
        continue;
      }
      case State::kBody:
        if (c->in.size() >= c->plan.head_size + c->plan.body_size) {
          SendCall(c);
          continue;
        }
        return !c->client_eof;  // gone in the middle of its body: nothing to answer (as uvicorn)
      case State::kCall:
        return !c->client_eof;  // gone while its call is queued or running: Close cancels the call
      case State::kRelayRequest: {
        size_t n = static_cast<size_t>(std::min<uint64_t>(c->in.size(), c->relay_left));
        c->up_out.append(c->in, 0, n);
        c->in.erase(0, n);
        c->relay_left -= n;
        if (!c->up_in.empty() || c->upstream_eof || (c->relay_left > 0 && c->client_eof)) {
          StartTunnel(c);  // uvicorn answered early (413), or the client stopped: a pipe
          continue;
        }
        if (c->relay_left > 0) return true;
        c->state = State::kRelayResponse;
        c->answer_framed = false;
        continue;
      }
      case State::kRelayResponse: {
        if (!c->answer_framed) {
          ResponsePlan answer = PlanResponse(c->up_in.data(), c->up_in.size(), c->plan.head_method);
          if (answer.framing == Framing::kNeedMore && !c->upstream_eof) return true;
          if (answer.framing != Framing::kLength) {
            StartTunnel(c);
            continue;
          }
          c->answer_framed = true;
          c->answer_left = answer.head_size + answer.body_size;
        }
        size_t n = static_cast<size_t>(std::min<uint64_t>(c->up_in.size(), c->answer_left));
        c->out.append(c->up_in, 0, n);
        c->up_in.erase(0, n);
        c->answer_left -= n;
        if (c->answer_left == 0) {
          c->state = State::kHead;
          c->since = c->head_started = Clock::now();
          if (!c->plan.keep_alive) c->close_after_write = true;
          continue;
        }
        if (c->upstream_eof) {  // cut short: pass on what came and close
          c->close_after_write = true;
          c->state = State::kHead;
        }
        return true;
      }
      case State::kTunnel:
        c->up_out += c->in;
        c->in.clear();
        c->out += c->up_in;
        c->up_in.clear();
        return true;
    }
  }
}

// From now on the connection is a byte pipe to uvicorn, starting with whatever the client sent that is unanswered
// (or, if uvicorn cannot be reached, a 503 and the end of the connection).
void HttpFront::StartTunnel(Connection* c) {
  if (c->state != State::kRelayRequest && c->state != State::kRelayResponse && !OpenUpstream(c)) {
    RespondError(c, 503, "the server's HTTP handler is not reachable", true);
    c->in.clear();
    c->state = State::kHead;
    return;
  }
  c->state = State::kTunnel;
}

void HttpFront::SendCall(Connection* c) {
  const RequestPlan& plan = c->plan;
  std::string prefix;
  PutU16(&prefix, plan.model.size());
  PutU16(&prefix, plan.version.size());
  PutU16(&prefix, plan.has_header_length ? plan.header_length.size() : 0xffff);
  prefix += plan.model + plan.version + (plan.has_header_length ? plan.header_length : "");
  std::vector<iovec> parts{{prefix.data(), prefix.size()},
                           {c->in.data() + plan.head_size, static_cast<size_t>(plan.body_size)}};
  c->call = ++next_call_;
  auto* pending = new HttpPending(this, c->id, c->call);
  calls_in_flight_.fetch_add(1);
  std::string error;
  uint32_t id = 0;
  bool sent = link_->SendParts(pending, kHttpCall, std::move(parts), &id, &error);
  c->in.erase(0, plan.head_size + plan.body_size);
  if (!sent) {
    delete pending;
    calls_in_flight_.fetch_sub(1);
    c->state = State::kHead;
    c->since = Clock::now();
    RespondError(c, 503, "the server process is not reachable: " + error, false);
    return;
  }
  c->state = State::kCall;
  c->link_id = id;
  c->pending = pending;
}

// The server's HTTP REPLY (status 0), or the link's own failure (a gRPC status and a message).
void HttpFront::Answer(Connection* c, uint8_t status, const std::string& payload) {
  c->state = State::kHead;
  c->since = c->head_started = Clock::now();
  if (status != 0 || payload.size() < kReplyPrefix) {
    RespondError(c, 503, status != 0 ? payload : "malformed reply from the server", false);
    return;
  }
  const auto* bytes = reinterpret_cast<const uint8_t*>(payload.data());
  int http_status = bytes[0] | bytes[1] << 8;
  uint8_t flags = bytes[2];
  uint32_t header_length = bytes[3] | bytes[4] << 8 | bytes[5] << 16 | static_cast<uint32_t>(bytes[6]) << 24;
  std::string extra;
  if (flags & kReplyBinary) extra = "inference-header-content-length: " + std::to_string(header_length) + "\r\n";
  Respond(c, http_status, (flags & kReplyBinary) ? "application/octet-stream" : "application/json", extra,
          payload.data() + kReplyPrefix, payload.size() - kReplyPrefix, (flags & kReplyClose) || !c->plan.keep_alive);
}

void HttpFront::Respond(Connection* c, int status, const std::string& content_type, const std::string& extra_headers,
                        const char* body, size_t body_size, bool close) {
  c->out += "HTTP/1.1 " + std::to_string(status) + " " + Reason(status) + "\r\ndate: " + date_ +
            "\r\ncontent-type: " + content_type +
            "\r\ncontent-length: " + std::to_string(body_size) + "\r\n" + extra_headers +
            (close ? "connection: close\r\n\r\n" : "\r\n");
  c->out.append(body, body_size);
  if (close) c->close_after_write = true;
}

void HttpFront::RespondError(Connection* c, int status, const std::string& message, bool close) {
  std::string body = "{\"error\":" + JsonString(message) + "}";
  Respond(c, status, "application/json", "", body.data(), body.size(), close);
}

}  // namespace twofour
