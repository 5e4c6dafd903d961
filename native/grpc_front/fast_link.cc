// FastLink: CALL/CANCEL out, REPLY in, over the server's framed Unix socket (see fast_link.h).
#include "fast_link.h"

#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>
#include <vector>

namespace twofour {
namespace {

constexpr size_t kHeaderSize = 10;  // <u32 payload length><u32 call id><u8 kind><u8 status>, little-endian
constexpr uint8_t kUnavailable = 14;

void PutU32(uint8_t* out, uint32_t value) {
  for (int i = 0; i < 4; ++i) out[i] = static_cast<uint8_t>(value >> (8 * i));
}

uint32_t GetU32(const uint8_t* in) {
  return uint32_t{in[0]} | uint32_t{in[1]} << 8 | uint32_t{in[2]} << 16 | uint32_t{in[3]} << 24;
}

// Reads whole frames off a socket with few syscalls: a burst of replies arrives in one read.
class FrameReader {
 public:
  explicit FrameReader(int fd) : fd_(fd), buffer_(1 << 16) {}

  bool ReadExact(uint8_t* out, size_t n) {
    while (n > 0) {
      if (start_ == end_) {
        if (n >= buffer_.size()) return ReadDirect(out, n);  // a large payload skips the buffer
        ssize_t got = read(fd_, buffer_.data(), buffer_.size());
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) return false;
        start_ = 0;
        end_ = static_cast<size_t>(got);
      }
      size_t take = std::min(n, end_ - start_);
      std::memcpy(out, buffer_.data() + start_, take);
      start_ += take;
      out += take;
      n -= take;
    }
    return true;
  }

 private:
  bool ReadDirect(uint8_t* out, size_t n) {
    while (n > 0) {
      ssize_t got = read(fd_, out, n);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) return false;
      out += got;
      n -= static_cast<size_t>(got);
    }
    return true;
  }

  int fd_;
  std::vector<uint8_t> buffer_;
  size_t start_ = 0, end_ = 0;
};

bool WriteAll(int fd, std::vector<iovec> parts) {
  size_t first = 0;
  while (first < parts.size()) {
    msghdr message{};
    message.msg_iov = parts.data() + first;
    message.msg_iovlen = parts.size() - first;
    ssize_t sent = sendmsg(fd, &message, MSG_NOSIGNAL);
    if (sent < 0 && errno == EINTR) continue;
    if (sent < 0) return false;
    size_t left = static_cast<size_t>(sent);
    while (first < parts.size() && left >= parts[first].iov_len) left -= parts[first++].iov_len;
    if (first < parts.size()) {
      parts[first].iov_base = static_cast<char*>(parts[first].iov_base) + left;
      parts[first].iov_len -= left;
    }
  }
  return true;
}

}  // namespace

bool FastLink::ConnectLocked(std::string* error) {
  if (fd_ >= 0) return true;
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path_.size() >= sizeof(address.sun_path)) {
    *error = "socket path too long";
    return false;
  }
  std::memcpy(address.sun_path, path_.c_str(), path_.size() + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    *error = std::strerror(errno);
    if (fd >= 0) close(fd);
    return false;
  }
  fd_ = fd;
  std::thread(&FastLink::Receive, this, fd).detach();  // the link lives as long as the process
  return true;
}

bool FastLink::WriteLocked(uint8_t kind, uint32_t id, std::vector<iovec> payload) {
  size_t length = 0;
  for (const iovec& part : payload) length += part.iov_len;
  uint8_t header[kHeaderSize];
  PutU32(header, static_cast<uint32_t>(length));
  PutU32(header + 4, id);
  header[8] = kind;
  header[9] = 0;
  payload.insert(payload.begin(), iovec{header, kHeaderSize});
  return WriteAll(fd_, std::move(payload));
}

bool FastLink::Send(PendingCall* call, const grpc::ByteBuffer& request, uint32_t* id, std::string* error) {
  std::vector<grpc::Slice> slices;
  if (!request.Dump(&slices).ok()) {
    *error = "cannot read the request's bytes";
    return false;
  }
  std::vector<iovec> parts;
  for (const grpc::Slice& slice : slices) {
    parts.push_back({const_cast<uint8_t*>(slice.begin()), slice.size()});
  }
  std::lock_guard<std::mutex> lock(mu_);
  return SendLocked(call, kCall, std::move(parts), id, error);
}

bool FastLink::SendParts(PendingCall* call, uint8_t kind, std::vector<iovec> parts, uint32_t* id,
                         std::string* error) {
  std::lock_guard<std::mutex> lock(mu_);
  return SendLocked(call, kind, std::move(parts), id, error);
}

bool FastLink::SendLocked(PendingCall* call, uint8_t kind, std::vector<iovec> payload, uint32_t* id,
                          std::string* error) {
  if (!ConnectLocked(error)) return false;
  *id = ++next_id_;
  calls_[*id] = call;
  if (!WriteLocked(kind, *id, std::move(payload))) {
    const int failure = errno;  // before anything else can overwrite it
    calls_.erase(*id);
    *error = std::string("write failed: ") + std::strerror(failure);
    return false;  // the reader sees the broken socket too and fails whatever else was waiting on it
  }
  return true;
}

bool FastLink::Cancel(uint32_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  if (calls_.erase(id) == 0) return false;
  if (fd_ >= 0) WriteLocked(kCancel, id, {});
  return true;
}

void FastLink::Receive(int fd) {
  FrameReader reader(fd);
  uint8_t header[kHeaderSize];
  std::string payload;
  while (reader.ReadExact(header, kHeaderSize)) {
    uint32_t length = GetU32(header), id = GetU32(header + 4);
    // a broken peer: drop the connection, fail what waits on it (an HTTP answer has no message limit, as uvicorn's)
    if (length > limit_ && header[8] != kHttpReply) break;
    payload.resize(length);
    if (length > 0 && !reader.ReadExact(reinterpret_cast<uint8_t*>(payload.data()), length)) break;
    if (header[8] != kReply && header[8] != kHttpReply) continue;
    PendingCall* call = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto found = calls_.find(id);
      if (found == calls_.end()) continue;  // cancelled meanwhile
      call = found->second;
      calls_.erase(found);
    }
    call->Answer(header[9], std::move(payload));
    call->Unref();
    payload = std::string();
  }
  Broken(fd);
}

void FastLink::Broken(int fd) {
  std::unordered_map<uint32_t, PendingCall*> orphaned;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (fd_ == fd) fd_ = -1;  // the next call connects again
    orphaned.swap(calls_);
  }
  close(fd);
  for (auto& [id, call] : orphaned) {  // fail now rather than at each call's deadline
    call->Answer(kUnavailable, "the server process is gone");
    call->Unref();
  }
}

}  // namespace twofour
