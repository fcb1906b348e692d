// uplinkctl's verbs beyond one request and its printout: mwan3's command (argv[0] "mwan3"), the
// service verbs, `internal`, and the entry points rpcd and netifd's hotplug call.
#pragma once

#include <string>
#include <vector>

namespace uplinkd::cli {

// The control socket: $UPLINKD_SOCKET, else /var/run/uplinkd.sock.
std::string default_socket();

// `use <iface> <command...>`: the command with all its sockets leaving by that uplink; its status.
int run_use(const std::string& socket, const std::string& iface, const std::vector<std::string>& command);

// `ifup|ifdown <iface>`: `verb` for one interface; `device` is netifd's DEVICE (may be empty).
// `quiet`: print nothing on success (mwan3's command does not). Errors go to stderr, exit 1.
int run_ifupdown(const std::string& socket, const std::string& verb, const std::string& iface,
                 const std::string& device, bool quiet);

// `start`, `stop`, `restart` through the service manager that runs uplinkd (procd's init script,
// systemd's unit; $UPLINKD_SERVICE=procd|systemd|none overrides the detection). `disable`/`enable`:
// mwan3's start enables and its stop disables the service. Without a service manager, stop and
// restart go to the daemon over the socket and start explains how to start it.
int run_service(const std::string& socket, const std::string& verb, bool change_enablement);

// `stop [--keep-datapath]` and `restart` over the control socket, waiting until done.
int run_lifecycle(const std::string& socket, const std::string& command, bool keep_datapath);

// `internal ipv4|ipv6`: versions, addresses, routes, rules, the uplink tables and uplinkd's status.
int run_internal(const std::string& socket, const std::string& family);

// rpcd's exec plugin protocol: `list`, and `call status` with the arguments on stdin.
int run_rpcd(const std::string& socket, const std::vector<std::string>& args);

// netifd's hotplug: ACTION, INTERFACE, DEVICE from the environment; ifup/ifdown forwarded.
int run_hotplug(const std::string& socket);

// argv[0] is "mwan3": mwan3's verbs, output and exit codes.
int run_mwan3(int argc, char** argv);

}  // namespace uplinkd::cli
