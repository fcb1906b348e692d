// `uplinkctl use <iface> <command...>`: runs a command whose every socket leaves by one uplink, like
// `mwan3 use`. mwan3 preloads a library that sets SO_MARK and SO_BINDTODEVICE; uplinkctl instead puts
// the command in a cgroup (v2) of its own with a cgroup/sock_create BPF program (bpf/use_sock.bpf.c)
// that gives each new inet socket the uplink's mark and binds it to its device. That also covers
// static binaries and whatever the command starts. The cgroup is removed when the command ends.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace uplinkd::control {

struct UseTarget {
  std::string interface;  // for messages
  std::string device;
  int ifindex = 0;
  uint32_t mark = 0;
};

// The cgroup v2 mount point from /proc/self/mounts; empty when none is mounted.
std::string find_cgroup2_mount();

// Runs `argv` (argv[0] looked up in PATH) bound to `target` and waits for it. Returns its exit status,
// or 128 + signal number when a signal ended it, as a shell does. Throws std::runtime_error naming what
// could not be set up (cgroup, BPF program, fork) and how to fix it.
int run_bound(const UseTarget& target, const std::vector<std::string>& argv);

}  // namespace uplinkd::control
