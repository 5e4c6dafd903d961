// PlanRequest and PlanResponse (see http_head.h).
#include "http_head.h"

#include <cstring>
#include <string_view>
#include <vector>

namespace twofour {
namespace {

constexpr std::string_view kInferPrefix = "/v2/models/";
constexpr size_t kMaxText = 0xffff;  // the HTTP CALL frame gives model, version and header length a u16 size each

bool IsTokenChar(unsigned char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c != 0 && std::strchr("!#$%&'*+-.^_`|~", c) != nullptr);
}

std::string Lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

std::string_view Trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

// Plain ASCII digits only, at most 18 of them (no sign, no spaces inside, nothing a lenient parser might read).
bool ParseDigits(std::string_view text, uint64_t* value) {
  if (text.empty() || text.size() > 18) return false;
  uint64_t out = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    out = out * 10 + static_cast<uint64_t>(c - '0');
  }
  *value = out;
  return true;
}

size_t FindHeadEnd(const char* data, size_t size) {
  std::string_view text(data, size);
  size_t at = text.find("\r\n\r\n");
  return at == std::string_view::npos ? std::string_view::npos : at + 4;
}

// Could these bytes still begin a request line we might serve? Garbage is tunnelled at once, so uvicorn answers it
// as soon as it would have, instead of the front waiting for a blank line that may never come.
bool PlausiblePrefix(const char* data, size_t size) {
  size_t i = 0;
  while (i < size && i < 20 && data[i] >= 'A' && data[i] <= 'Z') ++i;
  if (i == size) return true;
  if (i == 0 || data[i] != ' ') return false;
  return i + 1 == size || data[i + 1] == '/';
}

// The head's lines after the first, split on CRLF; false if any byte or line is not plain HTTP/1.1.
bool SplitLines(std::string_view head, std::vector<std::string_view>* lines) {
  while (!head.empty()) {
    size_t end = head.find("\r\n");
    if (end == std::string_view::npos) return false;
    std::string_view line = head.substr(0, end);
    for (unsigned char c : line) {
      if ((c < 0x20 && c != '\t') || c == 0x7f) return false;
    }
    lines->push_back(line);
    head.remove_prefix(end + 2);
  }
  return true;
}

struct Header {
  std::string name;  // lower case
  std::string_view value;  // trimmed
};

bool ParseHeader(std::string_view line, Header* header) {
  size_t colon = line.find(':');
  if (colon == 0 || colon == std::string_view::npos) return false;
  for (unsigned char c : line.substr(0, colon)) {
    if (!IsTokenChar(c)) return false;  // also refuses "Name :" and obs-fold continuation lines
  }
  header->name = Lower(line.substr(0, colon));
  header->value = Trim(line.substr(colon + 1));
  return true;
}

// A Content-Length header: false when it repeats or is not plain digits (the message's framing is then in doubt).
bool TakeLength(const Header& header, bool* seen, uint64_t* size) {
  if (*seen || !ParseDigits(header.value, size)) return false;
  *seen = true;
  return true;
}

// "/v2/models/{m}/infer" or "/v2/models/{m}/versions/{v}/infer", as the server's own route reads its path.
bool InferTarget(std::string_view target, std::string* model, std::string* version) {
  if (target.substr(0, kInferPrefix.size()) != kInferPrefix) return false;
  if (target.find_first_of("?#%") != std::string_view::npos) return false;  // uvicorn decodes or splits these
  std::vector<std::string_view> parts;
  std::string_view rest = target.substr(kInferPrefix.size());
  for (size_t slash; (slash = rest.find('/')) != std::string_view::npos; rest.remove_prefix(slash + 1)) {
    parts.push_back(rest.substr(0, slash));
  }
  parts.push_back(rest);
  for (std::string_view part : parts) {
    if (part.empty()) return false;
  }
  if (parts.size() == 2 && parts[1] == "infer") {
    *model = std::string(parts[0]);
    return true;
  }
  if (parts.size() == 4 && parts[1] == "versions" && parts[3] == "infer") {
    *model = std::string(parts[0]);
    *version = std::string(parts[2]);
    return true;
  }
  return false;
}

}  // namespace

RequestPlan PlanRequest(const char* data, size_t size, size_t max_head, uint64_t max_body) {
  RequestPlan plan;
  size_t head_end = FindHeadEnd(data, size);
  if (head_end == std::string_view::npos || head_end > max_head) {
    bool undecided = head_end == std::string_view::npos && size <= max_head && PlausiblePrefix(data, size);
    plan.route = undecided ? Route::kNeedMore : Route::kTunnel;
    return plan;
  }
  plan.route = Route::kTunnel;
  plan.head_size = head_end;
  std::vector<std::string_view> lines;
  if (!SplitLines(std::string_view(data, head_end - 2), &lines) || lines.empty()) return plan;

  std::string_view request_line = lines[0];
  size_t first = request_line.find(' '), last = request_line.rfind(' ');
  if (first == std::string_view::npos || first == last) return plan;
  std::string_view method = request_line.substr(0, first);
  std::string_view target = request_line.substr(first + 1, last - first - 1);
  std::string_view http = request_line.substr(last + 1);
  if (!PlausiblePrefix(request_line.data(), first + 2) || (http != "HTTP/1.1" && http != "HTTP/1.0")) return plan;
  for (unsigned char c : target) {
    if (c <= 0x20 || c >= 0x7f) return plan;
  }

  bool has_length = false, identity = true, header_length_twice = false;
  plan.keep_alive = http == "HTTP/1.1";
  for (size_t i = 1; i < lines.size(); ++i) {
    Header header;
    if (!ParseHeader(lines[i], &header)) return plan;
    if (header.name == "content-length") {
      if (!TakeLength(header, &has_length, &plan.body_size)) return plan;
    } else if (header.name == "transfer-encoding" || header.name == "expect" || header.name == "upgrade") {
      return plan;  // chunked bodies, 100-continue and protocol switches are uvicorn's to handle
    } else if (header.name == "connection") {
      std::string tokens = Lower(header.value);
      if (tokens.find("upgrade") != std::string::npos) return plan;
      if (tokens.find("close") != std::string::npos) plan.keep_alive = false;
      if (tokens.find("keep-alive") != std::string::npos && http == "HTTP/1.0") plan.keep_alive = true;
    } else if (header.name == "content-encoding") {
      identity = identity && Lower(header.value) == "identity";
    } else if (header.name == "inference-header-content-length") {
      header_length_twice = plan.has_header_length;
      plan.has_header_length = true;
      plan.header_length = std::string(header.value);
    }
  }
  plan.head_method = method == "HEAD";
  // the whole request within max_body, so its frame stays within the link's limit (larger ones: uvicorn decides)
  bool native = method == "POST" && http == "HTTP/1.1" && has_length && head_end + plan.body_size <= max_body &&
                identity && !header_length_twice && InferTarget(target, &plan.model, &plan.version) &&
                plan.model.size() < kMaxText && plan.version.size() < kMaxText && plan.header_length.size() < kMaxText;
  plan.route = native ? Route::kNative : Route::kRelay;
  return plan;
}

ResponsePlan PlanResponse(const char* data, size_t size, bool head_method) {
  ResponsePlan plan;
  size_t head_end = FindHeadEnd(data, size);
  if (head_end == std::string_view::npos) return plan;
  plan.framing = Framing::kTunnel;
  plan.head_size = head_end;
  std::vector<std::string_view> lines;
  if (!SplitLines(std::string_view(data, head_end - 2), &lines) || lines.empty()) return plan;
  std::string_view status_line = lines[0];
  uint64_t status = 0;
  if (status_line.substr(0, 9) != "HTTP/1.1 " || !ParseDigits(status_line.substr(9, 3), &status) || status < 200) {
    return plan;
  }
  bool has_length = false;
  for (size_t i = 1; i < lines.size(); ++i) {
    Header header;
    if (!ParseHeader(lines[i], &header)) return plan;
    if (header.name == "content-length") {
      if (!TakeLength(header, &has_length, &plan.body_size)) return plan;
    } else if (header.name == "transfer-encoding") {
      return plan;
    } else if (header.name == "connection" && Lower(header.value).find("close") != std::string::npos) {
      return plan;
    }
  }
  if (head_method || status == 204 || status == 304) {
    plan.body_size = 0;
  } else if (!has_length) {
    return plan;
  }
  plan.framing = Framing::kLength;
  return plan;
}

}  // namespace twofour
