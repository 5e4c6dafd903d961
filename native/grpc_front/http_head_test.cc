// Tests of PlanRequest / PlanResponse (http_head.h), run by native/build.sh after every build: a front that would
// answer the wrong requests natively, or misjudge where a message ends, must not be built.
#include <cstdio>
#include <string>

#include "http_head.h"

namespace {

int failures = 0;

void Check(bool ok, const char* what, const std::string& input) {
  if (!ok) {
    ++failures;
    std::fprintf(stderr, "FAIL %s: %s\n", what, input.substr(0, 120).c_str());
  }
}

twofour::RequestPlan Plan(const std::string& text, size_t max_head = 8192, uint64_t max_body = 1 << 20) {
  return twofour::PlanRequest(text.data(), text.size(), max_head, max_body);
}

const std::string kInfer = "POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody";

void NativeRequests() {
  auto plan = Plan(kInfer);
  Check(plan.route == twofour::Route::kNative && plan.model == "mlp" && plan.version.empty() &&
        plan.body_size == 4 && plan.head_size == kInfer.size() - 4 && plan.keep_alive && !plan.has_header_length,
        "plain infer", kInfer);
  plan = Plan("POST /v2/models/m/versions/3/infer HTTP/1.1\r\nContent-Length: 0\r\n"
              "Inference-Header-Content-Length:  12 \r\nConnection: close\r\n\r\n");
  Check(plan.route == twofour::Route::kNative && plan.model == "m" && plan.version == "3" && !plan.keep_alive &&
        plan.has_header_length && plan.header_length == "12", "versioned, header length, close", "versioned");
  plan = Plan("POST /v2/models/versions/infer HTTP/1.1\r\ncontent-length: 1\r\nContent-Encoding: identity\r\n\r\n");
  Check(plan.route == twofour::Route::kNative && plan.model == "versions", "a model named versions", "versions");
}

void RelayedRequests() {
  for (const std::string& text : {
           std::string("GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n"),
           std::string("POST /v2/models/mlp/infer HTTP/1.0\r\nContent-Length: 4\r\n\r\n"),
           std::string("POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\n\r\n"),  // no Content-Length
           std::string("POST /v2/models/m%20x/infer HTTP/1.1\r\nContent-Length: 4\r\n\r\n"),
           std::string("POST /v2/models/mlp/infer?x=1 HTTP/1.1\r\nContent-Length: 4\r\n\r\n"),
           std::string("POST /v2/models/mlp/infer HTTP/1.1\r\nContent-Length: 4\r\nContent-Encoding: gzip\r\n\r\n"),
           std::string("POST /v2/models/mlp/infer HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n"),  // over max_body
           std::string("POST /v2/models//infer HTTP/1.1\r\nContent-Length: 4\r\n\r\n"),
           std::string("POST /v2/models/a/b/infer HTTP/1.1\r\nContent-Length: 4\r\n\r\n"),
           std::string("POST /v2/models/a/infer HTTP/1.1\r\nContent-Length: 4\r\n"
                       "Inference-Header-Content-Length: 1\r\nInference-Header-Content-Length: 2\r\n\r\n"),
       }) {
    Check(Plan(text).route == twofour::Route::kRelay, "relayed", text);
  }
  for (const std::string& text : {  // names longer than the frame's u16 sizes
           "POST /v2/models/" + std::string(70000, 'm') + "/infer HTTP/1.1\r\nContent-Length: 4\r\n\r\n",
           "POST /v2/models/m/infer HTTP/1.1\r\nContent-Length: 4\r\nInference-Header-Content-Length: " +
               std::string(70000, '1') + "\r\n\r\n",
       }) {
    Check(Plan(text, 1 << 20).route == twofour::Route::kRelay, "relayed (long)", text.substr(0, 40));
  }
}

void TunnelledRequests() {
  for (const std::string& text : {
           std::string("\x00\x01garbage\r\n\r\n", 13),
           std::string("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
           std::string("POST /v2/models/mlp/infer HTTP/1.1\r\nContent-Length: -5\r\n\r\n"),
           std::string("POST /v2/models/mlp/infer HTTP/1.1\r\nContent-Length: \xb2\r\n\r\n"),
           std::string("POST /v2/models/mlp/infer HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n"),
           std::string("POST /v2/models/mlp/infer HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"),
           std::string("POST /v2/models/mlp/infer HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
           std::string("POST /v2/models/mlp/infer HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"),
           std::string("GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"),
           std::string("GET /v2/health/live HTTP/9.9\r\n\r\n"),
           std::string("GET /v2/health/live HTTP/1.1\r\nX-a : b\r\n\r\n"),   // space before the colon
           std::string("GET /v2/health/live HTTP/1.1\r\nX-a: b\r\n c\r\n\r\n"),  // obs-fold
           std::string("GET /v2/health/live HTTP/1.1\r\nX-a: b\nX-b: c\r\n\r\n"),  // bare LF
           std::string("GET /a b HTTP/1.1\r\n\r\n"),
           std::string("GET /v2/health/live HTTP/1.1\r\nX-Pad: ") + std::string(9000, 'a') + "\r\n\r\n",
           std::string("GET /") + std::string(9000, 'a'),  // no end in sight within max_head
       }) {
    Check(Plan(text).route == twofour::Route::kTunnel, "tunnelled", text);
  }
}

void IncompleteRequests() {
  for (const std::string& text : {std::string(""), std::string("POS"), std::string("POST "),
                                  std::string("POST /v2/models/mlp/infer HTTP/1.1\r\nContent-Le")}) {
    Check(Plan(text).route == twofour::Route::kNeedMore, "needs more", text);
  }
  Check(Plan("post /x HTTP/1.1").route == twofour::Route::kTunnel, "lower-case method", "post");
}

void Responses() {
  const std::string ok = "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-type: application/json\r\n\r\n{}x";
  auto plan = twofour::PlanResponse(ok.data(), ok.size(), false);
  Check(plan.framing == twofour::Framing::kLength && plan.body_size == 3 && plan.head_size == ok.size() - 3,
        "content-length answer", ok);
  plan = twofour::PlanResponse(ok.data(), ok.size(), true);
  Check(plan.framing == twofour::Framing::kLength && plan.body_size == 0, "answer to HEAD", ok);
  const std::string empty = "HTTP/1.1 204 No Content\r\n\r\n";
  plan = twofour::PlanResponse(empty.data(), empty.size(), false);
  Check(plan.framing == twofour::Framing::kLength && plan.body_size == 0, "204", empty);
  for (const std::string& text : {
           std::string("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"),
           std::string("HTTP/1.1 200 OK\r\n\r\n"),  // close-delimited
           std::string("HTTP/1.1 413 Content Too Large\r\ncontent-length: 2\r\nconnection: close\r\n\r\n"),
           std::string("HTTP/1.1 100 Continue\r\n\r\n"),
           std::string("HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n"),
       }) {
    Check(twofour::PlanResponse(text.data(), text.size(), false).framing == twofour::Framing::kTunnel, "tunnel answer",
          text);
  }
  const std::string partial = "HTTP/1.1 200 OK\r\ncontent-le";
  Check(twofour::PlanResponse(partial.data(), partial.size(), false).framing == twofour::Framing::kNeedMore,
        "partial answer", partial);
}

}  // namespace

int main() {
  NativeRequests();
  RelayedRequests();
  TunnelledRequests();
  IncompleteRequests();
  Responses();
  if (failures > 0) return 1;
  std::printf("http_head_test: all passed\n");
  return 0;
}
