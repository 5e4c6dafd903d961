// HttpFront's thread: binding, accepting, reading and writing both sides of each connection, timers, shutdown.
// What happens to the bytes is http_exchange.cc's business.
#include "http_front.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>

namespace twofour {
namespace {

constexpr uint64_t kListenerTag = 0, kWakeTag = 2;  // a connection's tags are 2*id (client) and 2*id+1 (uvicorn)
constexpr size_t kBufferCap = 1 << 20;              // stop reading a side while this much waits to be written
constexpr auto kSweepEvery = std::chrono::milliseconds(100);

bool SplitHostPort(const std::string& address, std::string* host, std::string* port) {
  size_t colon = address.rfind(':');
  if (colon == std::string::npos) return false;
  *host = address.substr(0, colon);
  *port = address.substr(colon + 1);
  if (host->size() >= 2 && host->front() == '[' && host->back() == ']') *host = host->substr(1, host->size() - 2);
  return true;
}

int BindListener(const std::string& address, int* port, std::string* error) {
  std::string host, service;
  if (!SplitHostPort(address, &host, &service)) {
    *error = "invalid HTTP address " + address;
    return -1;
  }
  addrinfo hints{}, *found = nullptr;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  if (getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &found) != 0 || !found) {
    *error = "cannot resolve HTTP address " + address;
    return -1;
  }
  int fd = socket(found->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
  int on = 1;
  bool ok = fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) == 0 &&
            bind(fd, found->ai_addr, found->ai_addrlen) == 0 && listen(fd, 1024) == 0;
  freeaddrinfo(found);
  sockaddr_storage bound{};
  socklen_t size = sizeof(bound);
  if (!ok || getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &size) != 0) {
    *error = "cannot bind HTTP to " + address + ": " + std::strerror(errno);
    if (fd >= 0) close(fd);
    return -1;
  }
  *port = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                            : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  return fd;
}

void Control(int epoll, int op, int fd, uint64_t tag, uint32_t events) {
  epoll_event event{};
  event.events = events;
  event.data.u64 = tag;
  epoll_ctl(epoll, op, fd, &event);
}

}  // namespace

bool HttpFront::Start(int* port, std::string* error) {
  listener_ = BindListener(options_.address, port, error);
  if (listener_ < 0) return false;
  epoll_ = epoll_create1(EPOLL_CLOEXEC);
  wake_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  Control(epoll_, EPOLL_CTL_ADD, listener_, kListenerTag, EPOLLIN);
  Control(epoll_, EPOLL_CTL_ADD, wake_, kWakeTag, EPOLLIN);
  Sweep(Clock::now());  // the first Date value
  thread_ = std::thread(&HttpFront::Loop, this);
  thread_.detach();  // lives as long as the process, which ends with _Exit
  return true;
}

void HttpFront::Shutdown(Clock::time_point deadline) {
  stopping_.store(true);
  uint64_t one = 1;
  [[maybe_unused]] ssize_t ignored = write(wake_, &one, sizeof(one));
  while (calls_in_flight_.load() > 0 && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

void HttpFront::Post(uint64_t connection, uint32_t call, uint8_t status, std::string payload) {
  {
    std::lock_guard<std::mutex> lock(posted_mu_);
    posted_.push_back({connection, call, status, std::move(payload)});
  }
  calls_in_flight_.fetch_sub(1);
  uint64_t one = 1;
  [[maybe_unused]] ssize_t ignored = write(wake_, &one, sizeof(one));
}

void HttpFront::Loop() {
  std::vector<epoll_event> events(256);
  Clock::time_point next_sweep = Clock::now() + kSweepEvery;
  bool accepting = true;
  for (;;) {
    int n = epoll_wait(epoll_, events.data(), static_cast<int>(events.size()), 50);
    for (int i = 0; i < n; ++i) {
      uint64_t tag = events[i].data.u64;
      if (tag == kListenerTag) {
        Accept();
      } else if (tag == kWakeTag) {
        uint64_t count;
        [[maybe_unused]] ssize_t ignored = read(wake_, &count, sizeof(count));
        TakePosted();
      } else {
        auto found = connections_.find(tag / 2);
        if (found == connections_.end()) continue;  // closed earlier in this round
        if (tag % 2 == 0) {
          OnClient(found->second.get(), events[i].events);
        } else {
          OnUpstream(found->second.get(), events[i].events);
        }
      }
    }
    if (accepting && stopping_.load()) {
      accepting = false;
      epoll_ctl(epoll_, EPOLL_CTL_DEL, listener_, nullptr);
      close(listener_);
    }
    Clock::time_point now = Clock::now();
    if (now >= next_sweep || !accepting) {
      next_sweep = now + kSweepEvery;
      Sweep(now);
    }
  }
}

void HttpFront::Accept() {
  for (;;) {
    int fd = accept4(listener_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;  // EAGAIN, or a client gone before we took it, or out of descriptors (retried next round)
    int on = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
    auto connection = std::make_unique<Connection>();
    connection->id = next_id_++;
    connection->fd = fd;
    connection->since = Clock::now();
    Connection* c = connection.get();
    connections_[c->id] = std::move(connection);
    Watch(c);
  }
}

// Reads whatever the socket has into `buffer`; false at end of stream or on an error.
static bool ReadInto(int fd, std::string* buffer) {
  char chunk[65536];
  for (;;) {
    ssize_t got = read(fd, chunk, sizeof(chunk));
    if (got > 0) {
      buffer->append(chunk, static_cast<size_t>(got));
      continue;
    }
    if (got < 0 && errno == EINTR) continue;
    return got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
  }
}

void HttpFront::OnClient(Connection* c, uint32_t events) {
  if ((events & (EPOLLHUP | EPOLLERR)) && c->client_eof) return Close(c);  // fully gone: nothing left to answer
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
    bool was_empty = c->in.empty();
    if (!ReadInto(c->fd, &c->in)) c->client_eof = true;
    if (was_empty && !c->in.empty() && c->state == State::kHead) c->head_started = Clock::now();
  }
  Pump(c);
}

void HttpFront::OnUpstream(Connection* c, uint32_t events) {
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
    if (!ReadInto(c->upstream, &c->up_in)) c->upstream_eof = true;
  }
  Pump(c);
}

void HttpFront::TakePosted() {
  std::vector<Posted> posted;
  {
    std::lock_guard<std::mutex> lock(posted_mu_);
    posted.swap(posted_);
  }
  for (Posted& reply : posted) {
    auto found = connections_.find(reply.connection);
    if (found == connections_.end()) continue;  // the client went away meanwhile
    Connection* c = found->second.get();
    if (c->state != State::kCall || c->call != reply.call) continue;
    c->pending = nullptr;  // the link has let go of it
    Answer(c, reply.status, reply.payload);
    Pump(c);
  }
}

void HttpFront::Sweep(Clock::time_point now) {
  char date[64];
  std::time_t wall = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&wall, &utc);
  date_.assign(date, std::strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &utc));
  std::vector<Connection*> all;
  for (auto& [id, connection] : connections_) all.push_back(connection.get());
  const auto seconds = [](double s) { return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s)); };
  for (Connection* c : all) {
    bool idle = c->state == State::kHead && c->in.empty() && c->out.empty();
    if (idle && (stopping_.load() || now - c->since > seconds(options_.keep_alive_s))) {
      Close(c);
    } else if (c->state == State::kHead && !c->in.empty() && now - c->head_started > std::chrono::seconds(1)) {
      // a head still incomplete after a second: uvicorn applies its own rules to it, as it always did
      if (StartTunnel(c)) Pump(c);
    } else if (c->state == State::kBody && now - c->since > seconds(options_.body_timeout_s)) {
      char message[128];
      std::snprintf(message, sizeof(message),
                    "request body did not arrive within %g s; send the whole body without pausing",
                    options_.body_timeout_s);
      c->in.clear();
      c->state = State::kHead;
      RespondError(c, 408, message, true);
      Pump(c);
    }
  }
}

void HttpFront::Pump(Connection* c) {
  if (!Advance(c)) return Close(c);
  if (!Flush(c->fd, &c->out)) return Close(c);  // the client is gone; its call, if any, is cancelled in Close
  if (c->upstream >= 0 && !Flush(c->upstream, &c->up_out)) c->upstream_eof = true;
  if (c->out.empty() && c->close_after_write) return Close(c);
  bool relaying = c->state == State::kRelayRequest || c->state == State::kRelayResponse;
  if (c->upstream_eof && !relaying && c->state != State::kTunnel) DropUpstream(c);  // an idle one uvicorn closed
  if (c->state == State::kTunnel) {
    if (c->client_eof && c->up_out.empty() && !c->upstream_shut && c->upstream >= 0) {
      shutdown(c->upstream, SHUT_WR);  // the client half-closed: so does the pipe, and uvicorn answers or closes
      c->upstream_shut = true;
    }
    if (c->upstream_eof && c->up_in.empty() && c->out.empty()) return Close(c);
  }
  Watch(c);
}

bool HttpFront::Flush(int fd, std::string* data) {
  size_t written = 0;
  while (written < data->size()) {
    ssize_t sent = send(fd, data->data() + written, data->size() - written, MSG_NOSIGNAL);
    if (sent > 0) {
      written += static_cast<size_t>(sent);
    } else if (sent < 0 && errno == EINTR) {
      continue;
    } else if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      break;
    } else {
      data->clear();
      return false;
    }
  }
  data->erase(0, written);
  return true;
}

void HttpFront::Watch(Connection* c) {
  bool read_client = !c->client_eof && (c->state == State::kBody || c->in.size() < kBufferCap) &&
                     c->up_out.size() < kBufferCap;
  uint32_t client = (read_client ? EPOLLIN | EPOLLRDHUP : 0u) | (c->out.empty() ? 0u : EPOLLOUT);
  if (!c->client_watched || client != c->client_events) {
    Control(epoll_, c->client_watched ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, c->id * 2, client);
    c->client_watched = true;
    c->client_events = client;
  }
  if (c->upstream < 0) return;
  bool read_upstream = !c->upstream_eof && c->out.size() < kBufferCap;
  uint32_t upstream = (read_upstream ? EPOLLIN | EPOLLRDHUP : 0u) | (c->up_out.empty() ? 0u : EPOLLOUT);
  if (!c->upstream_watched || upstream != c->upstream_events) {
    Control(epoll_, c->upstream_watched ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->upstream, c->id * 2 + 1, upstream);
    c->upstream_watched = true;
    c->upstream_events = upstream;
  }
}

bool HttpFront::OpenUpstream(Connection* c) {
  if (c->upstream >= 0 && !c->upstream_eof) return true;
  DropUpstream(c);  // uvicorn closed the last one while it was idle: start afresh
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (options_.relay_socket.size() >= sizeof(address.sun_path)) return false;
  std::memcpy(address.sun_path, options_.relay_socket.c_str(), options_.relay_socket.size() + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    if (fd >= 0) close(fd);
    return false;
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  c->upstream = fd;
  return true;
}

void HttpFront::DropUpstream(Connection* c) {
  if (c->upstream >= 0) {
    epoll_ctl(epoll_, EPOLL_CTL_DEL, c->upstream, nullptr);
    close(c->upstream);
  }
  c->upstream = -1;
  c->upstream_watched = false;
  c->upstream_events = 0;
  c->upstream_eof = c->upstream_shut = false;
  c->up_in.clear();
  c->up_out.clear();
}

void HttpFront::Close(Connection* c) {
  if (c->state == State::kCall && c->pending != nullptr && link_->Cancel(c->link_id)) {
    delete c->pending;  // cancelled before its reply: the link will never touch it again
    calls_in_flight_.fetch_sub(1);
  }
  epoll_ctl(epoll_, EPOLL_CTL_DEL, c->fd, nullptr);
  close(c->fd);
  DropUpstream(c);
  connections_.erase(c->id);
}

}  // namespace twofour
