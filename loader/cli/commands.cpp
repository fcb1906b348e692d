#include "cli/commands.h"

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <iterator>
#include <thread>

#include "control/control_server.h"
#include "control/status_text.h"
#include "control/use_runner.h"
#include "mwan3/mwan3_view.h"

namespace uplinkd {
const char* version();
}

namespace uplinkd::cli {
namespace {

// Waits (bounded) until process `pid` is gone. True when it is.
bool wait_gone(int pid, double seconds) {
  for (int i = 0; i < static_cast<int>(seconds * 20); ++i) {
    if (kill(pid, 0) != 0 && errno == ESRCH) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

// Waits (bounded) until the daemon answers again, started after `since`; returns its status or null.
nlohmann::json wait_restarted(const std::string& socket, std::chrono::steady_clock::time_point since,
                              double seconds) {
  for (int i = 0; i < static_cast<int>(seconds * 20); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    try {
      nlohmann::json status = uplinkd::control::request(socket, {{"command", "status"}}, 1000);
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
      if (status.contains("daemon") && status["daemon"].value("uptime_s", 1e9) <= elapsed) return status;
    } catch (const std::exception&) {
      // not answering yet: the new image is still starting
    }
  }
  return nullptr;
}

int print_error(const nlohmann::json& response) {
  std::fprintf(stderr, "uplinkctl: %s\n", response["error"].get<std::string>().c_str());
  return 1;
}

// Runs argv (no shell) and returns its exit status; 127 when it cannot be run.
int run_program(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t pid = fork();
  if (pid < 0) return 127;
  if (pid == 0) {
    execvp(args[0], args.data());
    std::fprintf(stderr, "uplinkctl: cannot run %s: %s\n", args[0], std::strerror(errno));
    _exit(127);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

enum class Manager { Procd, Systemd, None };

constexpr const char* kInitScript = "/etc/init.d/uplinkd";
constexpr const char* kUnit = "uplinkd.service";

Manager service_manager() {
  if (const char* forced = std::getenv("UPLINKD_SERVICE"); forced != nullptr && *forced != 0) {
    const std::string f = forced;
    if (f == "procd") return Manager::Procd;
    if (f == "systemd") return Manager::Systemd;
    return Manager::None;
  }
  struct stat st {};
  if (access(kInitScript, X_OK) == 0 && access("/sbin/procd", X_OK) == 0) return Manager::Procd;
  if (stat("/run/systemd/system", &st) == 0 && S_ISDIR(st.st_mode)) return Manager::Systemd;
  return Manager::None;
}

// Reads all of stdin, at most `limit` bytes; false when there is more.
bool read_stdin(std::string* out, size_t limit) {
  char buf[4096];
  for (;;) {
    const ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return true;
    out->append(buf, static_cast<size_t>(n));
    if (out->size() > limit) return false;
  }
}

// `internal`: one section with mwan3's heading and dashes, then the command's output.
void section(const std::string& title, const std::string& command) {
  std::printf("\nOutput of \"%s\"\n-------------------------------------------------\n", title.c_str());
  std::fflush(stdout);
  FILE* p = popen(command.c_str(), "r");
  std::string text;
  if (p != nullptr) {
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) text.append(buf, n);
    pclose(p);
  }
  std::printf("%s", text.empty() ? "No data found\n" : text.c_str());
  if (!text.empty() && text.back() != '\n') std::printf("\n");
}

std::string openwrt_release() {
  FILE* f = std::fopen("/etc/openwrt_release", "r");
  if (f == nullptr) return "";
  char line[256];
  std::string release;
  while (std::fgets(line, sizeof line, f) != nullptr) {
    std::string l = line;
    if (l.rfind("DISTRIB_RELEASE=", 0) != 0) continue;
    release = l.substr(16);
    while (!release.empty() && (release.back() == '\n' || release.back() == '\'' || release.back() == '"'))
      release.pop_back();
    while (!release.empty() && (release.front() == '\'' || release.front() == '"')) release.erase(0, 1);
  }
  std::fclose(f);
  return release;
}

}  // namespace

std::string default_socket() {
  const char* env = std::getenv("UPLINKD_SOCKET");
  return env != nullptr && *env != 0 ? env : "/var/run/uplinkd.sock";
}

// Asks the daemon for the interface's device and mark, then runs the command bound to it.
int run_use(const std::string& socket, const std::string& iface, const std::vector<std::string>& command) {
  if (command.empty()) {
    std::fprintf(stderr, "uplinkctl: use %s: no command given (e.g. uplinkctl use %s ping -c1 1.1.1.1)\n",
                 iface.c_str(), iface.c_str());
    return 2;
  }
  nlohmann::json info = control::request(socket, {{"command", "interface_info"}, {"interface", iface}});
  if (info.contains("error")) {
    std::fprintf(stderr, "uplinkctl: use: %s\n", info["error"].get<std::string>().c_str());
    return 1;
  }
  control::UseTarget target;
  target.interface = iface;
  target.device = info.value("device", "");
  target.ifindex = info.value("ifindex", 0);
  target.mark = info.value("mark", 0U);
  return control::run_bound(target, command);
}

// `stop [--keep-datapath]` and `restart`: asks, then waits until the daemon is gone or back.
int run_lifecycle(const std::string& socket, const std::string& command, bool keep_datapath) {
  const auto since = std::chrono::steady_clock::now();
  nlohmann::json request = {{"command", command}};
  if (command == "stop") request["keep_datapath"] = keep_datapath;
  nlohmann::json response = control::request(socket, request);
  if (response.contains("error")) {
    std::fprintf(stderr, "uplinkctl: %s\n", response["error"].get<std::string>().c_str());
    return 1;
  }
  const int pid = response.value("pid", 0);
  if (command == "restart") {
    nlohmann::json status = wait_restarted(socket, since, 30);
    if (status.is_null()) {
      std::fprintf(stderr,
                   "uplinkctl: uplinkd (pid %d) did not answer within 30 s of its restart; see its log\n",
                   pid);
      return 1;
    }
    std::printf("uplinkd restarted in place (pid %d); the datapath kept forwarding\n",
                status["daemon"].value("pid", pid));
    return 0;
  }
  // A full stop runs the hooks still queued (up to 10 s) and removes what uplinkd added.
  if (pid > 0 && !wait_gone(pid, 20)) {
    std::fprintf(stderr, "uplinkctl: uplinkd (pid %d) is still running 20 s after `stop`\n", pid);
    return 1;
  }
  std::printf(keep_datapath
                  ? "uplinkd stopped; its datapath keeps forwarding until the next start adopts it\n"
                  : "uplinkd stopped; everything it added is removed\n");
  return 0;
}

int run_ifupdown(const std::string& socket, const std::string& verb, const std::string& iface,
                 const std::string& device, bool quiet) {
  nlohmann::json request = {{"command", verb}, {"interface", iface}};
  if (!device.empty()) request["device"] = device;
  const nlohmann::json response = control::request(socket, request, 10000);
  if (response.contains("error")) return print_error(response);
  if (response.contains("note"))
    std::fprintf(stderr, "%s: %s\n", iface.c_str(), response["note"].get<std::string>().c_str());
  if (!quiet) std::printf("%s: %s\n", iface.c_str(), response.value("state", "?").c_str());
  return 0;
}

int run_service(const std::string& socket, const std::string& verb, bool change_enablement) {
  const Manager manager = service_manager();
  if (manager == Manager::Procd) {
    if (change_enablement && verb != "restart") {
      const int status = run_program({kInitScript, verb == "start" ? "enable" : "disable"});
      if (status != 0) return status;
    }
    if (verb == "restart") return run_lifecycle(socket, "restart", false);
    return run_program({kInitScript, verb});
  }
  if (manager == Manager::Systemd) {
    if (verb == "restart") return run_lifecycle(socket, "restart", false);
    if (change_enablement)
      return run_program({"systemctl", verb == "start" ? "enable" : "disable", "--now", kUnit});
    return run_program({"systemctl", verb, kUnit});
  }
  if (verb == "start") {
    std::fprintf(stderr,
                 "uplinkctl: start: no service manager runs uplinkd here (no %s with procd, no systemd): "
                 "start it with `uplinkd --config /etc/config/mwan3`\n",
                 kInitScript);
    return 1;
  }
  return run_lifecycle(socket, verb, false);
}

int run_internal(const std::string& socket, const std::string& family) {
  if (family != "ipv4" && family != "ipv6") {
    std::fprintf(stderr, "uplinkctl: internal: '%s': expected ipv4 or ipv6\n", family.c_str());
    return 2;
  }
  const std::string ip = family == "ipv6" ? "ip -6" : "ip -4";
  const std::string release = openwrt_release();
  std::printf("Software-Version\n-------------------------------------------------\n");
  std::printf("uplinkd - %s\n", version());
  if (!release.empty()) std::printf("OpenWrt - %s\n", release.c_str());
  section(ip + " a show", ip + " a show 2>&1");
  section(ip + " route show", ip + " route show 2>&1");
  section(ip + " rule show", ip + " rule show 2>&1");
  // The uplink tables, as mwan3 lists tables 1-250: one `ip route` for all, split by table.
  section(ip + " route list table 1-250",
          ip + " route show table all 2>/dev/null | awk '{ for (i = 1; i < NF; i++) if ($i == \"table\" && "
               "$(i+1) ~ /^[0-9]+$/ && $(i+1) >= 1 && $(i+1) <= 250) { t = $(i+1); if (!(t in seen)) "
               "order[++n] = t; seen[t] = seen[t] $0 \"\\n\" } } END { for (k = 1; k <= n; k++) "
               "printf \"Routing table %s:\\n%s\\n\", order[k], seen[order[k]] }'");
  std::printf("\nOutput of \"uplinkctl status\"\n-------------------------------------------------\n");
  try {
    std::cout << control::format_status(control::request(socket, {{"command", "status"}}));
  } catch (const std::exception& e) {
    std::printf("uplinkd does not answer: %s\n", e.what());
  }
  return 0;
}

int run_rpcd(const std::string& socket, const std::vector<std::string>& args) {
  if (args.size() == 1 && args[0] == "list") {
    std::printf("%s\n", mwan3::rpcd_list().c_str());
    return 0;
  }
  if (args.size() != 2 || args[0] != "call") {
    std::fprintf(stderr, "uplinkctl: rpcd: expected `list` or `call status` (rpcd's exec plugin protocol)\n");
    return 2;
  }
  if (args[1] != "status") {
    std::fprintf(stderr, "uplinkctl: rpcd: unknown method '%s' (the mwan3 object has: status)\n",
                 args[1].c_str());
    return 2;
  }
  std::string input;
  if (!read_stdin(&input, size_t{64} * 1024)) {
    std::fprintf(stderr, "uplinkctl: rpcd call status: arguments larger than 64 KiB\n");
    return 2;
  }
  mwan3::UbusArgs ubus_args;
  if (std::string error = mwan3::parse_ubus_args(input, &ubus_args); !error.empty()) {
    std::fprintf(stderr, "uplinkctl: rpcd call status: %s\n", error.c_str());
    return 2;
  }
  const nlohmann::json status = control::request(socket, {{"command", "status"}});
  if (status.contains("error")) return print_error(status);
  std::printf("%s\n", mwan3::ubus_status(status, ubus_args).dump().c_str());
  return 0;
}

int run_hotplug(const std::string& socket) {
  const char* action = std::getenv("ACTION");
  const char* iface = std::getenv("INTERFACE");
  const char* device = std::getenv("DEVICE");
  const std::string verb = action != nullptr ? action : "";
  if (verb != "ifup" && verb != "ifdown") return 0;  // ifupdate, connected...: nothing to forward
  if (iface == nullptr || *iface == 0) {
    std::fprintf(stderr, "uplinkctl: hotplug: ACTION=%s without INTERFACE (netifd sets both)\n",
                 verb.c_str());
    return 2;
  }
  return run_ifupdown(socket, verb, iface, verb == "ifup" && device != nullptr ? device : "", true);
}

}  // namespace uplinkd::cli
