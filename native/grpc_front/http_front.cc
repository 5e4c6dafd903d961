// HttpFront's thread: binding, accepting, reading and writing both sides of each connection, timers, shutdown.
// What happens to the bytes is http_exchange.cc's business.
#include "http_front.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <ctime>

#include "sockets.h"

namespace twofour {
namespace {

constexpr uint64_t kListenerTag = 0, kWakeTag = 2;  // a connection's tags are 2*id (client) and 2*id+1 (uvicorn)
constexpr size_t kBufferCap = 1 << 20;              // stop reading a side while this much waits to be written
constexpr auto kSweepEvery = std::chrono::milliseconds(100);
// stopping: how long open connections get to deliver a request (answered 503 + close) before an idle one is closed;
// inside the 1 s --grace-secs default, so the front closes them itself rather than leaving them to _Exit. See Sweep.
constexpr auto kIdleConnectionGrace = std::chrono::milliseconds(750);

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
  while ((calls_in_flight_.load() > 0 || open_connections_.load() > 0) && Clock::now() < deadline) {
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
      stopped_at_ = Clock::now();
      // Take what the kernel has queued first: closing a listener resets the connections in its backlog, whose
      // clients have sent their request already. Nothing runs between the last accept and the close.
      Accept();
      if (!accept_paused_) epoll_ctl(epoll_, EPOLL_CTL_DEL, listener_, nullptr);
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
    if (fd < 0 && (errno == EMFILE || errno == ENFILE)) {  // out of descriptors: stop watching the listener until
      epoll_ctl(epoll_, EPOLL_CTL_DEL, listener_, nullptr);  // the next sweep, or it would wake us in a busy loop
      accept_paused_ = true;
      return;
    }
    if (fd < 0) return;  // EAGAIN, or a client gone before we took it
    int on = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
    auto connection = std::make_unique<Connection>();
    connection->id = next_id_++;
    connection->fd = fd;
    connection->since = Clock::now();
    Connection* c = connection.get();
    connections_[c->id] = std::move(connection);
    open_connections_.fetch_add(1);
    Watch(c);
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
  if (c->upstream < 0) return;  // dropped earlier in this round of events
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
  if (accept_paused_ && !stopping_.load()) {
    accept_paused_ = false;
    Control(epoll_, EPOLL_CTL_ADD, listener_, kListenerTag, EPOLLIN);
  }
  std::vector<Connection*> all;
  for (auto& [id, connection] : connections_) all.push_back(connection.get());
  const auto seconds = [](double s) {
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
  };
  for (Connection* c : all) {
    bool idle = c->state == State::kHead && c->in.empty() && c->out.empty();
    // Stopping: an idle connection closes once its client has had time to deliver a request (it is then answered,
    // 503 + close, as the server has drained); closing it earlier resets a request being sent. 100 ms was too short
    // for a starved client on a busy machine (7 resets in 1 of 10 drain runs): every connection a client still uses
    // ends by itself well within the grace, and only one idle for all of it is closed under its client.
    bool stop_idle = stopping_.load() && now - stopped_at_ >= kIdleConnectionGrace;
    if (idle && (stop_idle || now - c->since > seconds(options_.keep_alive_s))) {
      Close(c);
    } else if (c->state == State::kHead && !c->in.empty() && now - c->head_started > std::chrono::seconds(1)) {
      // a head still incomplete after a second: uvicorn applies its own rules to it, as it always did
      StartTunnel(c);
      Pump(c);
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
  if (!SendSome(c->fd, &c->out)) return Close(c);  // the client is gone; its call, if any, is cancelled in Close
  if (c->upstream >= 0 && !SendSome(c->upstream, &c->up_out)) c->upstream_eof = true;
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
  c->upstream = ConnectUnix(options_.relay_socket);
  return c->upstream >= 0;
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
  open_connections_.fetch_sub(1);
}

}  // namespace twofour
