// uplinkctl: asks a running uplinkd for its state and prints it like mwan3 does (or as JSON).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>

#include "control/control_server.h"
#include "control/status_text.h"
#include "policy/policy_table.h"
#include "policy/rule_compiler.h"

namespace uplinkd {
const char* version();
}

// NOLINTNEXTLINE(bugprone-exception-escape): only allocation failure can escape; dying then is right.
int main(int argc, char** argv) {
  std::string socket = "/var/run/uplinkd.sock";
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
  for (auto* sub : {status, interfaces, policies, rules, connected}) sub->add_flag("-j,--json", json, "print JSON");
  CLI11_PARSE(app, argc, argv);

  const std::string command = app.get_subcommands().front()->get_name();
  try {
    nlohmann::json response = uplinkd::control::request(socket, {{"command", command}});
    if (response.contains("error")) {
      std::fprintf(stderr, "uplinkctl: %s\n", response["error"].get<std::string>().c_str());
      return 1;
    }
    if (json) {
      std::cout << response.dump(2) << "\n";
    } else if (command == "interfaces") {
      std::cout << uplinkd::control::format_interfaces(response);
    } else if (command == "policies") {
      std::cout << uplinkd::policy::format_policies(response["policies"]);
    } else if (command == "rules") {
      std::cout << uplinkd::policy::format_rules(response["rules"]);
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
