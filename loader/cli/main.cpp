// uplinkctl: asks a running uplinkd for its state and prints it like mwan3 does (or as JSON).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>

#include "control/control_server.h"
#include "control/status_text.h"

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
  for (auto* sub : {status, interfaces}) sub->add_flag("-j,--json", json, "print JSON");
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
    } else {
      std::cout << uplinkd::control::format_status(response);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "uplinkctl: %s\n", e.what());
    return 1;
  }
  return 0;
}
