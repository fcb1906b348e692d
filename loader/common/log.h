// Minimal levelled logging: stderr in the foreground, syslog when daemonised.
#pragma once

#include <functional>
#include <string>

namespace uplinkd::log {

enum class Level { Debug = 0, Info = 1, Notice = 2, Warn = 3, Error = 4 };

void set_level(Level level);
bool parse_level(const std::string& text, Level* out);
void use_syslog(bool enabled);
void write(Level level, const std::string& message);

// Also hands every message at `min` (Notice or above) or above to `observer` (the status page's
// last events), from whichever thread logs it, one at a time; the observer must not log. Clear it
// (nullptr) before what it refers to goes.
using Observer = std::function<void(Level, const std::string&)>;
void set_observer(Level min, Observer observer);

inline void debug(const std::string& m) { write(Level::Debug, m); }
inline void info(const std::string& m) { write(Level::Info, m); }
inline void notice(const std::string& m) { write(Level::Notice, m); }
inline void warn(const std::string& m) { write(Level::Warn, m); }
inline void error(const std::string& m) { write(Level::Error, m); }

}  // namespace uplinkd::log
