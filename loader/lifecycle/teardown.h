// What this process may do to the kernel state it shares with the daemons before and after it.
//
// A router's daemon crashes, is respawned, upgraded or restarted; the datapath it leaves behind keeps
// forwarding (DESIGN.md, "Lifecycle"). Two process-wide facts decide what the kernel-facing classes do:
//   - adopting: this process found a predecessor's pins and is taking its state over. What it finds
//     identical to what it would install (an ip rule, a route copy, uplinkd's own default route, a tc
//     filter) is its own from now on, and so is removed at a full stop;
//   - teardown: what the destructors do. Full (SIGTERM, `uplinkctl stop`): remove everything uplinkd
//     added. Keep (a failed start that adopted, `uplinkctl stop --keep-datapath`, `uplinkctl restart`):
//     leave programs, pins, rules, routes and nft tables exactly as they are, for the next daemon.
#pragma once

namespace uplinkd::lifecycle {

enum class Teardown { Full, Keep };

void set_adopting(bool adopting);
[[nodiscard]] bool adopting();

void set_teardown(Teardown mode);
[[nodiscard]] Teardown teardown();
// True when destructors must leave the kernel state alone.
[[nodiscard]] inline bool keep_kernel_state() { return teardown() == Teardown::Keep; }

}  // namespace uplinkd::lifecycle
