#include "common/log.h"

#include <syslog.h>

#include <cstdio>
#include <mutex>
#include <utility>

namespace uplinkd::log {
namespace {
Level g_level = Level::Notice;
bool g_syslog = false;
// The conntrack worker logs from its own thread, so the observer is swapped and read under a lock.
std::mutex g_observer_mutex;
Level g_observer_level = Level::Notice;
Observer g_observer;
}  // namespace

void set_level(Level level) { g_level = level; }
void use_syslog(bool enabled) {
  g_syslog = enabled;
  if (enabled) openlog("uplinkd", LOG_PID, LOG_DAEMON);
}

bool parse_level(const std::string& t, Level* out) {
  if (t == "debug")
    *out = Level::Debug;
  else if (t == "info")
    *out = Level::Info;
  else if (t == "notice")
    *out = Level::Notice;
  else if (t == "warn" || t == "warning")
    *out = Level::Warn;
  else if (t == "error" || t == "err")
    *out = Level::Error;
  else
    return false;
  return true;
}

void set_observer(Level min, Observer observer) {
  const std::lock_guard<std::mutex> lock(g_observer_mutex);
  g_observer_level = min;
  g_observer = std::move(observer);
}

namespace {
void tell_observer(Level level, const std::string& message) {
  const std::lock_guard<std::mutex> lock(g_observer_mutex);
  if (g_observer && level >= g_observer_level) g_observer(level, message);
}
}  // namespace

void write(Level level, const std::string& message) {
  if (level >= Level::Notice) tell_observer(level, message);
  if (level < g_level) return;
  if (g_syslog) {
    static const int prio[] = {LOG_DEBUG, LOG_INFO, LOG_NOTICE, LOG_WARNING, LOG_ERR};
    syslog(prio[static_cast<int>(level)], "%s", message.c_str());
    return;
  }
  std::fprintf(stderr, "uplinkd: %s\n", message.c_str());
  std::fflush(stderr);
}

}  // namespace uplinkd::log
