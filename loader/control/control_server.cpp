#include "control/control_server.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace uplinkd::control {
namespace {

constexpr size_t kMaxRequest = size_t{64} * 1024;

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
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

// Reads until newline or EOF, bounded in size (and in time by the socket's timeout).
std::string read_line(int fd) {
  std::string buf;
  char chunk[4096];
  while (buf.size() < kMaxRequest) {
    ssize_t n = recv(fd, chunk, sizeof chunk, 0);
    if (n <= 0) break;
    buf.append(chunk, static_cast<size_t>(n));
    if (buf.find('\n') != std::string::npos) break;
  }
  return buf;
}

}  // namespace

ControlServer::ControlServer(std::string path, Handler handler)
    : path_(std::move(path)), handler_(std::move(handler)) {
  sockaddr_un addr = address_of(path_);
  if (someone_listens(path_)) {
    throw std::runtime_error("another uplinkd answers on " + path_ +
                             ": stop it first, or use --socket and --instance");
  }
  unlink(path_.c_str());
  fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd_ < 0) throw std::runtime_error("control socket: " + std::string(strerror(errno)));
  mode_t old = umask(077);
  int rc = bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  int bind_errno = errno;
  umask(old);
  if (rc != 0 || listen(fd_, 16) != 0) {
    close(fd_);
    fd_ = -1;
    throw std::runtime_error("binding control socket " + path_ + ": " + strerror(bind_errno) +
                             " (does its directory exist and is it writable?)");
  }
}

ControlServer::~ControlServer() {
  if (fd_ >= 0) {
    close(fd_);
    unlink(path_.c_str());
  }
}

void ControlServer::serve() {
  for (int i = 0; i < 64; ++i) {  // bounded per wake-up; the rest wait for the next one
    int client = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) return;
    set_timeouts(client, 1000);
    answer(client);
    close(client);
  }
}

void ControlServer::answer(int client) {
  nlohmann::json response;
  try {
    std::string line = read_line(client);
    nlohmann::json req = nlohmann::json::parse(line);
    response = handler_(req);
  } catch (const std::exception& e) {
    response = {{"error", std::string("bad request: ") + e.what()}};
  }
  write_all(client, response.dump() + "\n");
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
                       : err == EACCES                      ? " (run as root)"
                                                            : "";
    throw std::runtime_error("cannot reach uplinkd at " + socket_path + ": " + strerror(err) + hint);
  }
  bool sent = write_all(fd, req.dump() + "\n");
  shutdown(fd, SHUT_WR);
  std::string data;
  char chunk[8192];
  while (sent && data.size() < (16u << 20)) {
    ssize_t n = recv(fd, chunk, sizeof chunk, 0);
    if (n <= 0) break;
    data.append(chunk, static_cast<size_t>(n));
  }
  close(fd);
  if (data.empty()) throw std::runtime_error("uplinkd at " + socket_path + " gave no answer");
  return nlohmann::json::parse(data);
}

}  // namespace uplinkd::control
