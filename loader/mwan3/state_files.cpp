#include "mwan3/state_files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <vector>

#include "common/log.h"

namespace uplinkd::mwan3 {
namespace {

using json = nlohmann::json;

std::string integer(const json& object, const char* key) {
  const auto it = object.find(key);
  if (it == object.end() || !it->is_number()) return "0";
  if (it->is_number_float()) return std::to_string(std::llround(it->get<double>()));
  return it->dump();
}

// A target address as a file name: mwan3track uses the address as it is written in track_ip.
bool safe_name(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos;
}

}  // namespace

std::map<std::string, std::string> interface_files(const json& interface) {
  std::map<std::string, std::string> files;
  const std::string name = interface.value("name", "");
  if (!safe_name(name) || !interface.value("enabled", false)) return files;
  const json m = interface.value("mwan3", json::object());
  files["mwan3/iface_state/" + name] = m.value("hotplug_state", "offline") + "\n";
  const std::string dir = "mwan3track/" + name + "/";
  files[dir + "STATUS"] = m.value("status", "unknown") + "\n";
  files[dir + "ONLINE"] = integer(m, "online_at") + "\n";
  files[dir + "OFFLINE"] = integer(m, "offline_at") + "\n";
  files[dir + "SCORE"] = integer(interface, "score") + "\n";
  files[dir + "LOST"] = integer(m, "lost") + "\n";
  files[dir + "TURN"] = integer(m, "turn") + "\n";
  files[dir + "TIME"] = integer(m, "time") + "\n";
  for (const auto& t : interface.value("targets", json::array())) {
    const std::string ip = t.value("ip", "");
    if (!safe_name(ip)) continue;
    // Named as mwan3track names them: <KIND>_<ip> in the interface's directory.
    auto name = [&](const char* kind) {
      std::string path = dir;
      path.append(kind).append("_").append(ip);
      return path;
    };
    files[name("TRACK")] = t.value("state", "unknown") + "\n";
    files[name("LATENCY")] = std::to_string(std::llround(t.value("rtt_ms", 0.0))) + "\n";
    files[name("LOSS")] = std::to_string(std::llround(t.value("loss_pct", 0.0))) + "\n";
  }
  return files;
}

StateFiles::StateFiles(std::string root) : root_(std::move(root)) {}

bool StateFiles::ensure_dir(const std::string& path) {
  if (dirs_.count(path) != 0) return true;
  const size_t slash = path.rfind('/');
  if (slash != std::string::npos && slash > root_.size() && !ensure_dir(path.substr(0, slash))) return false;
  if (mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) return false;
  dirs_.insert(path);
  return true;
}

bool StateFiles::put(const std::string& path, const std::string& content) {
  const auto it = written_.find(path);
  if (it != written_.end() && it->second == content) return false;
  const std::string tmp = path.substr(0, path.rfind('/') + 1) + ".uplinkd.tmp";
  auto failed = [&](const char* what) {
    if (failed_.insert(path).second) log::warn("state file " + path + ": " + what + ": " + strerror(errno));
    unlink(tmp.c_str());
    return false;
  };
  if (!ensure_dir(path.substr(0, path.rfind('/')))) return failed("mkdir");
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return failed("open");
  const bool complete = write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size());
  close(fd);
  if (!complete) return failed("write");
  if (rename(tmp.c_str(), path.c_str()) != 0) return failed("rename");
  failed_.erase(path);
  written_[path] = content;
  return true;
}

bool StateFiles::drop(const std::string& path) {
  written_.erase(path);
  return unlink(path.c_str()) == 0;
}

int StateFiles::sync(const json& status) {
  if (root_.empty()) return 0;
  std::map<std::string, std::string> wanted;
  for (const auto& i : status.value("interfaces", json::array())) {
    for (auto& [name, content] : interface_files(i)) wanted[root_ + "/" + name] = std::move(content);
  }
  int changed = 0;
  std::vector<std::string> stale;
  for (const auto& [path, content] : written_) {
    if (wanted.count(path) == 0) stale.push_back(path);
  }
  for (const auto& path : stale) changed += drop(path) ? 1 : 0;
  for (const auto& [path, content] : wanted) changed += put(path, content) ? 1 : 0;
  return changed;
}

void StateFiles::remove_all() {
  std::vector<std::string> paths;
  for (const auto& [path, content] : written_) paths.push_back(path);
  for (const auto& path : paths) drop(path);
  for (auto it = dirs_.rbegin(); it != dirs_.rend(); ++it) rmdir(it->c_str());  // only if empty
  dirs_.clear();
}

}  // namespace uplinkd::mwan3
