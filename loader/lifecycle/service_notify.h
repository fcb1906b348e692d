// Supervision hooks for systemd (Type=notify, WatchdogSec=): readiness once the datapath is attached and
// the control socket answers, a watchdog pet from the event loop, and the state of a stop or restart.
// Built on sd_notify(3) from libsystemd when it is available at build time; without it (OpenWrt, whose
// procd needs nothing of this) every call does nothing.
#pragma once

#include <cstdint>
#include <string>

namespace uplinkd::lifecycle {

class ServiceNotify {
 public:
  ServiceNotify();

  void ready(const std::string& status);
  void reloading();  // before an in-place restart (exec): systemd keeps the same main pid
  void stopping();
  void status(const std::string& text);
  // Pets the watchdog when half its interval has passed since the last pet; cheap otherwise.
  void watchdog(int64_t now_ns);
  // The watchdog interval systemd asked for (0: none), so the loop wakes often enough.
  [[nodiscard]] int64_t watchdog_interval_ns() const { return watchdog_ns_; }

 private:
  int64_t watchdog_ns_ = 0;
  int64_t last_pet_ns_ = 0;
};

}  // namespace uplinkd::lifecycle
