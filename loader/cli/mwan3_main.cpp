// uplinkctl called as `mwan3` (the symlink /usr/sbin/mwan3): mwan3's command line, with its verbs,
// output shapes and exit codes (0, except `use`, which returns its command's status), so that LuCI's
// pages and scripts that call mwan3 work unchanged. Errors in what was asked (an unknown interface, a
// daemon that does not answer) go to stderr with a non-zero status.
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "control/control_server.h"
#include "control/status_text.h"
#include "mwan3/mwan3_view.h"
#include "policy/policy_table.h"

namespace uplinkd::cli {
namespace {

int usage_error(const std::string& verb) {
  std::fprintf(stderr, "mwan3: %s: expecting one interface. Usage: mwan3 %s <interface>\n", verb.c_str(),
               verb.c_str());
  return 2;
}

// The read-only verbs: one status request, printed in mwan3's shapes.
int report(const std::string& socket, const std::string& verb) {
  const nlohmann::json status = control::request(socket, {{"command", "status"}});
  if (status.contains("error")) {
    std::fprintf(stderr, "mwan3: %s\n", status["error"].get<std::string>().c_str());
    return 1;
  }
  if (verb == "interfaces") {
    std::cout << mwan3::format_interfaces(status);
  } else if (verb == "policies") {
    std::cout << policy::format_policies(status.value("policies", nlohmann::json::object()));
  } else if (verb == "connected") {
    std::cout << control::format_connected(status.value("connected", nlohmann::json::object()));
  } else if (verb == "rules") {
    std::cout << mwan3::format_rules(status.value("rules", nlohmann::json::array()));
  } else {
    std::cout << mwan3::format_status(status);
  }
  return 0;
}

}  // namespace

int run_mwan3(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  const std::string verb = args.empty() ? "" : args[0];
  const std::string socket = default_socket();
  try {
    if (verb == "status" || verb == "interfaces" || verb == "policies" || verb == "connected" ||
        verb == "rules")
      return report(socket, verb);
    if (verb == "internal") return run_internal(socket, args.size() > 1 ? args[1] : "ipv4");
    if (verb == "ifup" || verb == "ifdown") {
      if (args.size() != 2) return usage_error(verb);
      return run_ifupdown(socket, verb, args[1], "", true);
    }
    if (verb == "use") {
      if (args.size() < 2) return usage_error(verb);
      return run_use(socket, args[1], std::vector<std::string>(args.begin() + 2, args.end()));
    }
    if (verb == "start" || verb == "stop" || verb == "restart") return run_service(socket, verb, true);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mwan3: %s\n", e.what());
    return 1;
  }
  if (!verb.empty() && verb != "help" && verb != "-h" && verb != "--help")
    std::fprintf(stderr, "mwan3: unknown command '%s'\n", verb.c_str());
  std::cout << mwan3::help_text();
  return 0;
}

}  // namespace uplinkd::cli
