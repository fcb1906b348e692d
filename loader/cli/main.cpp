// uplinkctl: asks a running uplinkd for its state and prints it like mwan3 does (or as JSON).
#include <signal.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <chrono>
#include <thread>
#include <cstdio>
#include <iostream>

#include "control/control_server.h"
#include "control/status_text.h"
#include "control/use_runner.h"
#include "daemon/flow_hygiene.h"
#include "policy/policy_table.h"
#include "policy/rule_compiler.h"
#include "wireguard/wireguard_text.h"

namespace uplinkd {
const char* version();
}

namespace {

// `use <iface> <command...>`: the command's own options (ping -c1) must not reach CLI11, so the words
// after the interface are cut off before parsing. Returns the index of "use" in argv, or 0.
int find_use(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string word = argv[i];
    if (word == "-s" || word == "--socket") {
      ++i;  // its value
    } else if (word.empty() || word[0] != '-') {
      return word == "use" ? i : 0;
    }
  }
  return 0;
}

// Asks the daemon for the interface's device and mark, then runs the command bound to it.
int run_use(const std::string& socket, const std::string& iface, const std::vector<std::string>& command) {
  if (command.empty()) {
    std::fprintf(stderr, "uplinkctl: use %s: no command given (e.g. uplinkctl use %s ping -c1 1.1.1.1)\n",
                 iface.c_str(), iface.c_str());
    return 2;
  }
  nlohmann::json info =
      uplinkd::control::request(socket, {{"command", "interface_info"}, {"interface", iface}});
  if (info.contains("error")) {
    std::fprintf(stderr, "uplinkctl: use: %s\n", info["error"].get<std::string>().c_str());
    return 1;
  }
  uplinkd::control::UseTarget target;
  target.interface = iface;
  target.device = info.value("device", "");
  target.ifindex = info.value("ifindex", 0);
  target.mark = info.value("mark", 0U);
  return uplinkd::control::run_bound(target, command);
}

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

// `stop [--keep-datapath]` and `restart`: asks, then waits until the daemon is gone or back.
int run_lifecycle(const std::string& socket, const std::string& command, bool keep_datapath) {
  const auto since = std::chrono::steady_clock::now();
  nlohmann::json request = {{"command", command}};
  if (command == "stop") request["keep_datapath"] = keep_datapath;
  nlohmann::json response = uplinkd::control::request(socket, request);
  if (response.contains("error")) {
    std::fprintf(stderr, "uplinkctl: %s\n", response["error"].get<std::string>().c_str());
    return 1;
  }
  const int pid = response.value("pid", 0);
  if (command == "restart") {
    nlohmann::json status = wait_restarted(socket, since, 30);
    if (status.is_null()) {
      std::fprintf(stderr, "uplinkctl: uplinkd (pid %d) did not answer within 30 s of its restart; see its log\n", pid);
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
  std::printf(keep_datapath ? "uplinkd stopped; its datapath keeps forwarding until the next start adopts it\n"
                            : "uplinkd stopped; everything it added is removed\n");
  return 0;
}

}  // namespace

// NOLINTNEXTLINE(bugprone-exception-escape): only allocation failure can escape; dying then is right.
int main(int argc, char** argv) {
  std::string socket = "/var/run/uplinkd.sock";
  std::vector<std::string> use_command;
  if (const int at = find_use(argc, argv); at > 0 && at + 2 <= argc) {
    for (int i = at + 2; i < argc; ++i) use_command.emplace_back(argv[i]);
    argc = at + 2;
  }
  bool json = false;
  CLI::App app{"uplinkctl: query uplinkd"};
  app.set_version_flag("--version", uplinkd::version());
  app.add_option("-s,--socket", socket, "uplinkd's control socket")->capture_default_str();
  app.add_flag("-j,--json", json, "print JSON");
  app.require_subcommand(1);
  auto* status = app.add_subcommand("status", "interfaces and their probe targets");
  auto* interfaces = app.add_subcommand("interfaces", "interface status lines");
  auto* policies = app.add_subcommand("policies", "each policy's members in use and their shares");
  auto* rules = app.add_subcommand("rules", "rules in order, with the packets of the flows they classified");
  auto* connected = app.add_subcommand("connected", "networks routed by the main table (never balanced)");
  app.add_subcommand("reload", "read the configuration again and apply it (a bad one is refused)");
  bool keep_datapath = false;
  app.add_subcommand("stop", "stop uplinkd: remove everything it added (or keep the datapath forwarding)")
      ->add_flag("--keep-datapath", keep_datapath,
                 "leave programs, maps, rules and routes in place for the next start to adopt");
  app.add_subcommand("restart",
                     "restart uplinkd in place (same pid, the binary on disk now): no connection is lost");
  std::string use_iface;
  auto* use = app.add_subcommand(
      "use", "run a command whose sockets all leave by one uplink: use <iface> <command...>");
  use->add_option("interface", use_iface, "mwan3 interface name (online)")->required();
  for (auto* sub : {status, interfaces, policies, rules, connected})
    sub->add_flag("-j,--json", json, "print JSON");
  app.add_subcommand("flows", "flows tracked, stale TCP resets, conntrack deletes, expiry")
      ->add_flag("-j,--json", json, "print JSON");
  app.add_subcommand("wireguard", "WireGuard peers: endpoint, policy, uplink, steered packets, routes")
      ->add_flag("-j,--json", json, "print JSON");
  CLI11_PARSE(app, argc, argv);

  const std::string command = app.get_subcommands().front()->get_name();
  try {
    if (command == "use") return run_use(socket, use_iface, use_command);
    if (command == "stop" || command == "restart") return run_lifecycle(socket, command, keep_datapath);
    // A reload re-reads the configuration and re-syncs routes: give it longer than a query.
    nlohmann::json response =
        uplinkd::control::request(socket, {{"command", command}}, command == "reload" ? 20000 : 3000);
    if (response.contains("error")) {
      std::fprintf(stderr, "uplinkctl: %s\n", response["error"].get<std::string>().c_str());
      return 1;
    }
    if (json) {
      std::cout << response.dump(2) << "\n";
    } else if (command == "reload") {
      std::cout << response.value("summary", "reloaded") << "\n";
    } else if (command == "interfaces") {
      std::cout << uplinkd::control::format_interfaces(response);
    } else if (command == "policies") {
      std::cout << uplinkd::policy::format_policies(response["policies"]);
    } else if (command == "rules") {
      std::cout << uplinkd::policy::format_rules(response["rules"]);
    } else if (command == "flows") {
      std::cout << uplinkd::format_flows(response["flows"]);
    } else if (command == "wireguard") {
      std::cout << uplinkd::wireguard::format_wireguard(response["wireguard"]);
    } else if (command == "connected") {
      std::cout << uplinkd::control::format_connected(response["connected"]);
    } else {
      std::cout << uplinkd::control::format_status(response);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "uplinkctl: %s\n", e.what());
    return 1;
  }
  return 0;
}
