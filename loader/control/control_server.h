// The daemon's unix control socket: one JSON request line in, one JSON response out, then close.
// Fully non-blocking: every client has a buffer and a deadline, and one internal epoll fd holds the
// listening socket, the clients and a timerfd for their deadlines, so the daemon's loop waits on one
// fd and a silent or slow client never delays probing. Who may ask what comes from the peer's
// credentials (SO_PEERCRED): root everything, members of the control group the read-only verbs.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "control/request.h"

namespace uplinkd::control {

class ControlServer {
 public:
  using Handler = std::function<nlohmann::json(const nlohmann::json& request)>;

  static constexpr size_t kMaxClients = 32;              // more are answered "busy" and closed
  static constexpr int64_t kRequestDeadlineMs = 2000;    // from accept to a complete request line
  static constexpr int64_t kResponseDeadlineMs = 10000;  // from the answer to its last byte sent
  // Requests answered by one serve(): the handler's work (and its JSON's) is the daemon's time, so a
  // burst of clients is answered over several wake-ups, with probing in between.
  static constexpr int kAnswersPerServe = 8;

  // Binds `path`: mode 0600, or 0660 and owned by `access.group` when set. Refuses to steal the
  // socket of a daemon that still answers on it; a stale socket file left by a dead daemon is
  // replaced. Throws std::runtime_error with the reason.
  ControlServer(std::string path, Handler handler, Access access);
  ControlServer(std::string path, Handler handler);  // root only
  ~ControlServer();                                  // closes every client and removes the socket file
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  // Readable when serve() has something to do (an epoll fd: wait on it, never read it).
  [[nodiscard]] int fd() const { return epoll_fd_; }
  // Accepts the clients waiting, reads what they sent, answers complete requests, sends what the
  // sockets take and closes clients past their deadline. Never blocks (except in the handler).
  void serve();

  // A new access policy (at reload): requests from now on are checked against it, and the socket
  // file gets its mode and group. A failure to change the file is logged; the policy applies anyway.
  void set_access(Access access);
  [[nodiscard]] const Access& access() const { return access_; }
  [[nodiscard]] size_t client_count() const { return clients_.size(); }

 private:
  struct Client {
    int fd = -1;
    uint64_t id = 0;
    Peer peer;
    pid_t pid = 0;
    bool groups_known = false;  // peer.groups read (only needed for a non-root peer outside the group)
    std::string in;             // what the client sent so far
    std::string out;            // the response, once answered
    size_t sent = 0;
    bool answered = false;
    int64_t deadline_ns = 0;  // CLOCK_MONOTONIC
  };

  void accept_waiting();
  void receive(Client& c);
  void answer(Client& c, const std::string& line);
  void respond(Client& c, const nlohmann::json& response);
  void flush(Client& c);
  void close_client(uint64_t id);
  void expire(int64_t now_ns);
  void arm_timer();
  // Empty, or why the socket file could not get the mode and group of access_.
  [[nodiscard]] std::string apply_file_access() const;
  [[nodiscard]] nlohmann::json handle(Client& c, const nlohmann::json& request);

  std::string path_;
  Handler handler_;
  Access access_;
  int listen_fd_ = -1;
  int epoll_fd_ = -1;
  int timer_fd_ = -1;
  int answers_left_ = 0;  // of this serve()
  uint64_t next_id_ = 2;  // 0 and 1 tag the listening socket and the timer in epoll
  std::map<uint64_t, Client> clients_;
};

// Client side, used by uplinkctl: sends `request`, returns the parsed response.
// Throws std::runtime_error naming the socket and the reason (no daemon, permission, ...).
nlohmann::json request(const std::string& socket_path, const nlohmann::json& request, int timeout_ms = 3000);

}  // namespace uplinkd::control
