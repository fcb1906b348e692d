// Minimal levelled logging: stderr in the foreground, syslog when daemonised.
#pragma once

#include <string>

namespace uplinkd::log {

enum class Level { Debug = 0, Info = 1, Notice = 2, Warn = 3, Error = 4 };

void set_level(Level level);
bool parse_level(const std::string& text, Level* out);
void use_syslog(bool enabled);
void write(Level level, const std::string& message);

inline void debug(const std::string& m) { write(Level::Debug, m); }
inline void info(const std::string& m) { write(Level::Info, m); }
inline void notice(const std::string& m) { write(Level::Notice, m); }
inline void warn(const std::string& m) { write(Level::Warn, m); }
inline void error(const std::string& m) { write(Level::Error, m); }

}  // namespace uplinkd::log
