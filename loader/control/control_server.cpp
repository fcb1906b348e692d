#include "control/control_server.h"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "common/log.h"

namespace uplinkd::control {
namespace {

constexpr uint64_t kListenTag = 0;  // epoll data of the listening socket
constexpr uint64_t kTimerTag = 1;   // and of the deadline timer; clients count from 2
constexpr int kEventsPerServe = 64;
constexpr int kAcceptsPerServe = 64;
constexpr size_t kReadChunk = 16384;
constexpr int64_t kNsPerMs = 1000000;

int64_t monotonic_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

std::string errno_text() { return strerror(errno); }

sockaddr_un address_of(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) throw std::runtime_error("control socket path too long: " + path);
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

bool someone_listens(const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un addr = address_of(path);
  bool alive = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  close(fd);
  return alive;
}

void set_timeouts(int fd, int ms) {
  timeval tv{ms / 1000, static_cast<suseconds_t>(ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

bool write_all(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

// One line to a client about to be closed: whatever the socket takes now, never waiting.
void send_best_effort(int fd, const std::string& text) {
  [[maybe_unused]] ssize_t n = send(fd, text.data(), text.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
}

std::string error_line(const std::string& message) {
  return nlohmann::json{{"error", message}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) +
         "\n";
}

// uid and gid from SO_PEERCRED: the peer's credentials when it connected.
Peer credentials_of(int fd, pid_t* pid) {
  Peer peer;
  ucred cred{};
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
    peer.uid = cred.uid;
    peer.gid = cred.gid;
    *pid = cred.pid;
  }
  return peer;
}

// The peer's supplementary groups: SO_PEERGROUPS (Linux 4.13, the groups when it connected), else
// the "Groups:" line of /proc/<pid>/status.
std::vector<gid_t> supplementary_groups_of(int fd, pid_t pid) {
  std::vector<gid_t> groups(64);
  for (int attempt = 0; attempt < 4; ++attempt) {
    auto len = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &len) == 0) {
      groups.resize(len / sizeof(gid_t));
      return groups;
    }
    if (errno != ERANGE) break;
    groups.resize(len / sizeof(gid_t) + 1);  // the kernel says how much it needs
  }
  if (pid <= 0) return {};
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::stringstream text;
  text << in.rdbuf();
  return groups_from_proc_status(text.str());
}

}  // namespace

ControlServer::ControlServer(std::string path, Handler handler)
    : ControlServer(std::move(path), std::move(handler), Access{}) {}

ControlServer::ControlServer(std::string path, Handler handler, Access access)
    : path_(std::move(path)), handler_(std::move(handler)), access_(std::move(access)) {
  sockaddr_un addr = address_of(path_);
  if (someone_listens(path_)) {
    throw std::runtime_error("another uplinkd answers on " + path_ +
                             ": stop it first, or use --socket and --instance");
  }
  unlink(path_.c_str());
  auto fail = [this](const std::string& what) {
    for (int* fd : {&listen_fd_, &epoll_fd_, &timer_fd_}) {
      if (*fd >= 0) close(*fd);
      *fd = -1;
    }
    throw std::runtime_error(what);
  };
  listen_fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) fail("control socket: " + errno_text());
  // Created without access for anyone but the owner; apply_file_access() opens it to the group.
  mode_t old = umask(077);
  int rc = bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  int bind_errno = errno;
  umask(old);
  if (rc != 0 || listen(listen_fd_, 64) != 0) {
    fail("binding control socket " + path_ + ": " + strerror(bind_errno) +
         " (does its directory exist and is it writable?)");
  }
  const std::string file_error = apply_file_access();
  if (!file_error.empty()) {
    unlink(path_.c_str());
    fail("control socket " + path_ + ": " + file_error);
  }
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  timer_fd_ = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  epoll_event listen_event{EPOLLIN, {.u64 = kListenTag}};
  epoll_event timer_event{EPOLLIN, {.u64 = kTimerTag}};
  if (epoll_fd_ < 0 || timer_fd_ < 0 || epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, listen_fd_, &listen_event) != 0 ||
      epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, timer_fd_, &timer_event) != 0) {
    const std::string why = errno_text();
    unlink(path_.c_str());
    fail("control socket " + path_ + ": epoll/timerfd: " + why);
  }
}

ControlServer::~ControlServer() {
  for (auto& [id, c] : clients_) close(c.fd);
  clients_.clear();
  if (timer_fd_ >= 0) close(timer_fd_);
  if (epoll_fd_ >= 0) close(epoll_fd_);
  if (listen_fd_ >= 0) {
    close(listen_fd_);
    unlink(path_.c_str());
  }
}

void ControlServer::set_access(Access access) {
  access_ = std::move(access);
  const std::string error = apply_file_access();
  if (!error.empty()) {
    log::warn("control socket " + path_ + ": " + error +
              " (requests are checked against the new access anyway)");
  }
}

// Mode 0660 and the group, or 0600 and our own group. Narrowing, the mode goes first; widening, the
// group goes first: the file never admits more than the old or the new access would.
std::string ControlServer::apply_file_access() const {
  const char* path = path_.c_str();
  if (access_.group) {
    if (lchown(path, static_cast<uid_t>(-1), *access_.group) != 0) {
      return "cannot give it group " + access_.group_name + ": " + errno_text();
    }
    if (chmod(path, 0660) != 0) return "cannot set its mode 0660: " + errno_text();
    return {};
  }
  if (chmod(path, 0600) != 0) return "cannot set its mode 0600: " + errno_text();
  if (lchown(path, static_cast<uid_t>(-1), getegid()) != 0) {
    return "cannot give it back its owner's group: " + errno_text();
  }
  return {};
}

void ControlServer::serve() {
  epoll_event events[kEventsPerServe];
  const int n = epoll_wait(epoll_fd_, events, kEventsPerServe, 0);
  answers_left_ = kAnswersPerServe;
  for (int i = 0; i < n; ++i) {
    const uint64_t tag = events[i].data.u64;
    if (tag == kListenTag) {
      accept_waiting();
    } else if (tag == kTimerTag) {
      uint64_t ticks = 0;
      [[maybe_unused]] ssize_t r = read(timer_fd_, &ticks, sizeof ticks);
    } else {
      // Ids are never reused: a client closed earlier in this round is simply not found.
      auto it = clients_.find(tag);
      if (it == clients_.end()) continue;
      if (it->second.answered) {
        flush(it->second);
      } else if (answers_left_ > 0) {
        receive(it->second);
      }  // else it stays readable (level-triggered) for the next serve()
    }
  }
  expire(monotonic_ns());
  arm_timer();
}

void ControlServer::accept_waiting() {
  for (int i = 0; i < kAcceptsPerServe; ++i) {
    const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      return;  // EAGAIN: none left (or out of fds: the next wake-up tries again)
    }
    if (clients_.size() >= kMaxClients) {
      send_best_effort(fd, error_line("busy: " + std::to_string(kMaxClients) +
                                      " clients connected to uplinkd's control socket, try again"));
      close(fd);
      continue;
    }
    Client c;
    c.fd = fd;
    c.id = next_id_++;
    c.peer = credentials_of(fd, &c.pid);
    c.deadline_ns = monotonic_ns() + kRequestDeadlineMs * kNsPerMs;
    epoll_event event{EPOLLIN | EPOLLRDHUP, {.u64 = c.id}};
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &event) != 0) {
      close(fd);
      continue;
    }
    clients_.emplace(c.id, std::move(c));
  }
}

// Reads what the client sent, at most one byte past the size limit, and answers once its line is in.
void ControlServer::receive(Client& c) {
  bool eof = false;
  char chunk[kReadChunk];
  while (c.in.size() <= kMaxRequestBytes) {
    const size_t room = std::min(sizeof chunk, kMaxRequestBytes + 1 - c.in.size());
    const ssize_t n = recv(c.fd, chunk, room, 0);
    if (n > 0) {
      c.in.append(chunk, static_cast<size_t>(n));
      if (std::memchr(chunk, '\n', static_cast<size_t>(n)) != nullptr) break;
      continue;
    }
    if (n == 0) {
      eof = true;
      break;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
    close_client(c.id);  // reset by the peer
    return;
  }
  const Scan scan = scan_request(c.in, eof);
  switch (scan.kind) {
    case Scan::Kind::Incomplete:
      return;
    case Scan::Kind::Empty:
      close_client(c.id);
      return;
    case Scan::Kind::TooLarge:
      respond(c, {{"error", too_large_error()}});
      return;
    case Scan::Kind::Line: {
      const std::string line(scan.line);
      answer(c, line);
      return;
    }
  }
}

void ControlServer::answer(Client& c, const std::string& line) {
  nlohmann::json request;
  const std::string error = parse_request(line, &request);
  if (!error.empty()) {
    respond(c, {{"error", error}});
    return;
  }
  respond(c, handle(c, request));
}

nlohmann::json ControlServer::handle(Client& c, const nlohmann::json& request) {
  const std::string& verb = request["command"].get_ref<const std::string&>();
  if (c.peer.uid != 0 && access_.group && !c.groups_known && c.peer.gid != *access_.group) {
    c.peer.groups = supplementary_groups_of(c.fd, c.pid);
    c.groups_known = true;
  }
  std::string refused = refusal(verb, c.peer, access_);
  if (!refused.empty()) {
    log::info("control socket: refused '" + verb.substr(0, 64) + "' from uid " + std::to_string(c.peer.uid) +
              " (pid " + std::to_string(c.pid) + ")");
    return {{"error", refused}};
  }
  try {
    return handler_(request);
  } catch (const std::exception& e) {
    return {{"error", "internal error answering '" + verb.substr(0, 64) + "': " + e.what()}};
  }
}

void ControlServer::respond(Client& c, const nlohmann::json& response) {
  --answers_left_;
  try {
    c.out = response.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  } catch (const std::exception& e) {
    c.out = error_line(std::string("internal error: the answer cannot be written as JSON: ") + e.what());
  }
  c.answered = true;
  c.sent = 0;
  std::string().swap(c.in);
  c.deadline_ns = monotonic_ns() + kResponseDeadlineMs * kNsPerMs;
  epoll_event event{EPOLLOUT, {.u64 = c.id}};
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, c.fd, &event) != 0) {
    close_client(c.id);
    return;
  }
  flush(c);
}

// Sends what the socket takes now; the rest waits for EPOLLOUT. Closes the client when all is sent.
void ControlServer::flush(Client& c) {
  while (c.sent < c.out.size()) {
    const ssize_t n = send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      c.sent += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    break;  // the client went away
  }
  close_client(c.id);
}

void ControlServer::close_client(uint64_t id) {
  auto it = clients_.find(id);
  if (it == clients_.end()) return;
  close(it->second.fd);  // also takes it out of the epoll set
  clients_.erase(it);
}

void ControlServer::expire(int64_t now_ns) {
  for (auto it = clients_.begin(); it != clients_.end();) {
    const Client& c = it->second;
    if (c.deadline_ns > now_ns) {
      ++it;
      continue;
    }
    if (!c.answered) {
      send_best_effort(c.fd, error_line("timeout: no complete request within " +
                                        std::to_string(kRequestDeadlineMs / 1000) + " s"));
    } else {
      log::info("control socket: uid " + std::to_string(c.peer.uid) + " (pid " + std::to_string(c.pid) +
                ") read " + std::to_string(c.sent) + " of " + std::to_string(c.out.size()) +
                " bytes of its answer in " + std::to_string(kResponseDeadlineMs / 1000) + " s; closed");
    }
    close(c.fd);
    it = clients_.erase(it);
  }
}

// The timer fires at the earliest deadline; disarmed without clients.
void ControlServer::arm_timer() {
  itimerspec its{};
  if (!clients_.empty()) {
    int64_t earliest = INT64_MAX;
    for (const auto& [id, c] : clients_) earliest = std::min(earliest, c.deadline_ns);
    earliest = std::max<int64_t>(earliest, 1);
    its.it_value.tv_sec = earliest / 1000000000;
    its.it_value.tv_nsec = earliest % 1000000000;
  }
  timerfd_settime(timer_fd_, TFD_TIMER_ABSTIME, &its, nullptr);
}

nlohmann::json request(const std::string& socket_path, const nlohmann::json& req, int timeout_ms) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error(std::string("socket: ") + strerror(errno));
  set_timeouts(fd, timeout_ms);
  sockaddr_un addr = address_of(socket_path);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int err = errno;
    close(fd);
    std::string hint = err == ENOENT || err == ECONNREFUSED ? " (is uplinkd running? see --socket)"
                       : err == EACCES ? " (run as root, or as a member of the group of option control_group)"
                                       : "";
    throw std::runtime_error("cannot reach uplinkd at " + socket_path + ": " + strerror(err) + hint);
  }
  bool sent = write_all(fd, req.dump() + "\n");
  shutdown(fd, SHUT_WR);
  std::string data;
  char chunk[8192];
  while (sent && data.size() < (16U << 20)) {
    ssize_t n = recv(fd, chunk, sizeof chunk, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    data.append(chunk, static_cast<size_t>(n));
  }
  close(fd);
  if (data.empty()) throw std::runtime_error("uplinkd at " + socket_path + " gave no answer");
  return nlohmann::json::parse(data);
}

}  // namespace uplinkd::control
