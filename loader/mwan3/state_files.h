// The files mwan3 leaves for scripts to poll, kept by uplinkd: <root>/mwan3/iface_state/<iface>
// (online or offline) and <root>/mwan3track/<iface>/{STATUS, ONLINE, OFFLINE, SCORE, LOST, TURN, TIME,
// TRACK_<ip>, LATENCY_<ip>, LOSS_<ip>}. Times are in seconds of system uptime, as mwan3track writes
// them. Each file is replaced atomically (written beside it, then renamed), and only when its content
// changes; files of interfaces and targets no longer configured are removed.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

namespace uplinkd::mwan3 {

class StateFiles {
 public:
  // `root` is /var/run on a router; empty: write nothing.
  explicit StateFiles(std::string root);

  // Brings the files in line with the daemon's status JSON (its "interfaces" and their "mwan3"
  // objects). Returns the number of files written or removed; a failure is logged once per path.
  int sync(const nlohmann::json& status);

  // Removes every file this object wrote and the directories it made, if they are empty (a full stop:
  // mwan3 removes its tracker files when it stops).
  void remove_all();

  [[nodiscard]] const std::string& root() const { return root_; }

 private:
  bool put(const std::string& path, const std::string& content);
  bool drop(const std::string& path);
  bool ensure_dir(const std::string& path);

  std::string root_;
  std::map<std::string, std::string> written_;  // path -> content on disk
  std::set<std::string> dirs_;                  // directories made, deepest last
  std::set<std::string> failed_;                // paths whose failure was logged
};

// The files of one interface (name relative to <root>) and their contents, from its status JSON.
std::map<std::string, std::string> interface_files(const nlohmann::json& interface);

}  // namespace uplinkd::mwan3
