// The daemon's unix control socket: one JSON request line in, one JSON response out, then close.
// Small and synchronous per client (responses are a few KiB), driven by the daemon's epoll loop.
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <string>

namespace uplinkd::control {

class ControlServer {
 public:
  using Handler = std::function<nlohmann::json(const nlohmann::json& request)>;

  // Binds `path` (mode 0600). Refuses to steal the socket of a daemon that still answers on it;
  // a stale socket file left by a dead daemon is replaced. Throws std::runtime_error with the reason.
  ControlServer(std::string path, Handler handler);
  ~ControlServer();  // closes and removes the socket file
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  [[nodiscard]] int fd() const { return fd_; }
  // Accepts and answers every waiting client (non-blocking accept; each client gets 1 s).
  void serve();

 private:
  void answer(int client);
  std::string path_;
  Handler handler_;
  int fd_ = -1;
};

// Client side, used by uplinkctl: sends `request`, returns the parsed response.
// Throws std::runtime_error naming the socket and the reason (no daemon, permission, ...).
nlohmann::json request(const std::string& socket_path, const nlohmann::json& request, int timeout_ms = 3000);

}  // namespace uplinkd::control
