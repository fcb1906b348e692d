#include "lifecycle/service_notify.h"

#ifdef UPLINKD_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

namespace uplinkd::lifecycle {
namespace {

void send(const std::string& message) {
#ifdef UPLINKD_HAVE_SYSTEMD
  // unset_environment 0: after an exec (uplinkctl restart) the new image notifies again.
  sd_notify(0, message.c_str());
#else
  (void)message;
#endif
}

}  // namespace

ServiceNotify::ServiceNotify() {
#ifdef UPLINKD_HAVE_SYSTEMD
  uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) > 0) watchdog_ns_ = static_cast<int64_t>(usec) * 1000;
#endif
}

void ServiceNotify::ready(const std::string& status) { send("READY=1\nSTATUS=" + status); }
void ServiceNotify::reloading() { send("RELOADING=1\nSTATUS=restarting in place"); }
void ServiceNotify::stopping() { send("STOPPING=1"); }
void ServiceNotify::status(const std::string& text) { send("STATUS=" + text); }

void ServiceNotify::watchdog(int64_t now_ns) {
  if (watchdog_ns_ <= 0 || now_ns - last_pet_ns_ < watchdog_ns_ / 2) return;
  last_pet_ns_ = now_ns;
  send("WATCHDOG=1");
}

}  // namespace uplinkd::lifecycle
