// uplinkctl: asks a running uplinkd for its state and prints it like mwan3 does (or as JSON).
#include <libgen.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstring>
#include <iostream>

#include "cli/commands.h"
#include "control/control_server.h"
#include "control/status_text.h"
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

bool called_as_mwan3(const char* argv0) {
  std::string copy = argv0 != nullptr ? argv0 : "";
  return std::strcmp(basename(copy.data()), "mwan3") == 0;
}

}  // namespace

// NOLINTNEXTLINE(bugprone-exception-escape): only allocation failure can escape; dying then is right.
int main(int argc, char** argv) {
  if (called_as_mwan3(argv[0])) return uplinkd::cli::run_mwan3(argc, argv);
  std::string socket = uplinkd::cli::default_socket();
  std::vector<std::string> use_command;
  if (const int at = find_use(argc, argv); at > 0 && at + 2 <= argc) {
    for (int i = at + 2; i < argc; ++i) use_command.emplace_back(argv[i]);
    argc = at + 2;
  }
  bool json = false;
  CLI::App app{"uplinkctl: query uplinkd"};
  app.set_version_flag("--version", uplinkd::version());
  app.add_option("-s,--socket", socket, "uplinkd's control socket (default: $UPLINKD_SOCKET or this)")
      ->capture_default_str();
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
  app.add_subcommand("start", "start the uplinkd service (procd's init script or systemd's unit)");
  std::string updown_iface, updown_device;
  for (const char* verb : {"ifup", "ifdown"}) {
    auto* sub = app.add_subcommand(verb, std::string(verb) == "ifup"
                                             ? "put one interface back in service (mwan3 ifup)"
                                             : "take one interface out of service until ifup (mwan3 ifdown)");
    sub->add_option("interface", updown_iface, "mwan3 interface name")->required();
    if (std::string(verb) == "ifup") sub->add_option("--device", updown_device, "netifd's DEVICE (checked)");
  }
  std::string family = "ipv4";
  app.add_subcommand("internal",
                     "addresses, routes, rules and uplink tables for a bug report (mwan3 internal)")
      ->add_option("family", family, "ipv4 or ipv6")
      ->capture_default_str();
  std::vector<std::string> rpcd_args;
  app.add_subcommand("rpcd",
                     "rpcd exec plugin for ubus `mwan3`: `rpcd list`, `rpcd call status` (JSON on stdin)")
      ->add_option("args", rpcd_args, "list | call status")
      ->required();
  app.add_subcommand("hotplug", "netifd's hotplug.d/iface: forwards ACTION=ifup|ifdown for INTERFACE");
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
    namespace cli = uplinkd::cli;
    if (command == "use") return cli::run_use(socket, use_iface, use_command);
    if (command == "stop" || command == "restart") return cli::run_lifecycle(socket, command, keep_datapath);
    if (command == "start") return cli::run_service(socket, command, false);
    if (command == "ifup" || command == "ifdown") {
      return cli::run_ifupdown(socket, command, updown_iface, updown_device, false);
    }
    if (command == "internal") return cli::run_internal(socket, family);
    if (command == "rpcd") return cli::run_rpcd(socket, rpcd_args);
    if (command == "hotplug") return cli::run_hotplug(socket);
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
