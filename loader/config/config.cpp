#include "config/config.h"

#include <grp.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <utility>

#include "config/known_options.h"
#include "config/uci.h"
#include "observability/listen_address.h"

namespace uplinkd::config {
namespace {

std::string compose_message(const std::string& file, int line, const std::string& option,
                            const std::string& message) {
  std::string s = file;
  if (line > 0) {
    s += ":" + std::to_string(line);
  }
  s += ": ";
  if (!option.empty()) {
    s += "option '" + option + "': ";
  }
  return s + message;
}

std::string quote(std::string_view s) { return "'" + std::string(s) + "'"; }

std::string join(const std::vector<std::string>& items, std::string_view sep) {
  std::string out;
  for (const auto& item : items) {
    if (!out.empty()) {
      out += sep;
    }
    out += item;
  }
  return out;
}

// mwan3 names iptables chains and ip rules after these sections and refuses names over 15 characters.
constexpr size_t kMaxNameLength = 15;

constexpr const char* kBooleanAccepted = "0/1, no/yes, off/on, false/true";
const std::vector<std::string> kTrackMethods = {"ping",      "arping",     "httping",   "nping-tcp",
                                                "nping-udp", "nping-icmp", "nping-arp", "nslookup"};
// nping's default UDP destination port (nping.h DEFAULT_UDP_TARGET_PORT); mwan3 passes no -p.
constexpr int kNpingUdpDefaultPort = 40125;
const std::vector<std::string> kLastResorts = {"unreachable", "blackhole", "default"};
const std::vector<std::string> kBuiltinPolicies = {"default", "unreachable", "blackhole"};
const std::vector<std::string> kLogLevels = {"emerg",   "alert",  "crit", "error",
                                             "warning", "notice", "info", "debug"};
const std::vector<std::string> kConntrackEvents = {"ifup", "ifdown", "connected", "disconnected"};

bool contains(const std::vector<std::string>& list, std::string_view s) {
  for (const auto& item : list) {
    if (item == s) {
      return true;
    }
  }
  return false;
}

std::optional<bool> parse_bool(std::string_view s) {
  if (s == "1" || s == "yes" || s == "on" || s == "true") {
    return true;
  }
  if (s == "0" || s == "no" || s == "off" || s == "false") {
    return false;
  }
  return std::nullopt;
}

std::optional<long long> parse_int(std::string_view s) {
  if (s.empty()) {
    return std::nullopt;
  }
  long long v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v, 10);
  if (ec != std::errc() || end != s.data() + s.size()) {
    return std::nullopt;
  }
  return v;
}

// Hex with 0x, else decimal, as mwan3's shell arithmetic reads mmx_mask.
std::optional<uint32_t> parse_u32(std::string_view s) {
  int base = 10;
  if (s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
    s.remove_prefix(2);
    base = 16;
  }
  if (s.empty()) {
    return std::nullopt;
  }
  uint32_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v, base);
  if (ec != std::errc() || end != s.data() + s.size()) {
    return std::nullopt;
  }
  return v;
}

// Seconds as digits with an optional fraction ("10", "1.5", "0.1", ".5"); no sign, no exponent.
std::optional<double> parse_seconds(std::string_view s) {
  bool digits = false;
  bool dot = false;
  for (char c : s) {
    if (c >= '0' && c <= '9') {
      digits = true;
    } else if (c == '.' && !dot) {
      dot = true;
    } else {
      return std::nullopt;
    }
  }
  if (!digits) {
    return std::nullopt;
  }
  double v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || !std::isfinite(v)) {
    return std::nullopt;
  }
  return v;
}

const char* family_name(Family f) { return f == Family::Ipv4 ? "ipv4" : "ipv6"; }
bool family_matches(const IpAddress& a, Family f) { return f == Family::Ipv4 ? a.is_v4() : a.is_v6(); }

// Reads one section's options, converting and checking each, and remembers which ones were used so the
// rest can be kept verbatim. Errors name the option's line, the option, the section and what is accepted.
class SectionReader {
 public:
  // `of_mwan3`: a section of the mwan3 file, whose option names known_options.cpp lists (not one of
  // /etc/config/network's).
  SectionReader(const uci::Section& section, const std::string& file, bool of_mwan3 = true)
      : s_(section), file_(file), of_mwan3_(of_mwan3) {}

  [[nodiscard]] std::string where() const { return s_.type + " " + quote(s_.name); }
  [[nodiscard]] const uci::Section& section() const { return s_; }

  [[noreturn]] void fail(int line, const std::string& option, const std::string& message) const {
    throw ConfigError(file_, line, option, message);
  }
  // "'<value>' <problem> in interface 'wan'; accepted: <accepted>"
  [[noreturn]] void fail_value(const uci::Value& v, const std::string& option, const std::string& problem,
                               const std::string& accepted) const {
    fail(v.line, option, quote(v.text) + " " + problem + " in " + where() + "; accepted: " + accepted);
  }
  // A section-level problem: "<file>:<header line>: interface 'wan': <message>".
  [[noreturn]] void fail_section(const std::string& message) const {
    fail(s_.line, "", where() + ": " + message);
  }

  const uci::Option* take(std::string_view name) {
    // Every option this file reads must be in known_options.cpp, or a user who writes it correctly
    // is told it is unknown. Any test that reads a section of this type trips over a missing name.
    if (of_mwan3_ && !is_known_option(s_.type, name)) {
      throw std::logic_error("config.cpp reads option '" + std::string(name) + "' of config " + s_.type +
                             ", which loader/config/known_options.cpp does not list");
    }
    used_.insert(std::string(name));
    return s_.find(name);
  }

  // The single value of an option; a list of several values is an error.
  const uci::Value* single(std::string_view name) {
    const uci::Option* o = take(name);
    if (o == nullptr) {
      return nullptr;
    }
    if (o->values.size() > 1) {
      fail(o->line, o->name,
           "given as a list of " + std::to_string(o->values.size()) + " values in " + where() +
               "; accepted: one value (use option, not list)");
    }
    return &o->values.front();
  }

  std::vector<uci::Value> list(std::string_view name) {
    const uci::Option* o = take(name);
    return o == nullptr ? std::vector<uci::Value>{} : o->values;
  }

  std::optional<std::string> text(std::string_view name) {
    const uci::Value* v = single(name);
    return v == nullptr ? std::nullopt : std::optional<std::string>(v->text);
  }

  bool boolean(std::string_view name, bool def) {
    const uci::Value* v = single(name);
    if (v == nullptr) {
      return def;
    }
    auto b = parse_bool(v->text);
    if (!b) {
      fail_value(*v, std::string(name), "is not a boolean", kBooleanAccepted);
    }
    return *b;
  }

  long long integer(std::string_view name, long long def, long long min, long long max) {
    const uci::Value* v = single(name);
    if (v == nullptr) {
      return def;
    }
    auto n = parse_int(v->text);
    if (!n) {
      fail_value(*v, std::string(name), "is not a whole number", range_text(min, max));
    }
    if (*n < min || *n > max) {
      fail_value(*v, std::string(name), "is out of range", range_text(min, max));
    }
    return *n;
  }

  double seconds(std::string_view name, double def) {
    const uci::Value* v = single(name);
    if (v == nullptr) {
      return def;
    }
    auto d = parse_seconds(v->text);
    if (!d) {
      fail_value(*v, std::string(name), "is not a number of seconds",
                 "a positive number of seconds, fractions allowed (e.g. 10, 1.5, 0.1)");
    }
    if (*d <= 0) {
      fail_value(*v, std::string(name), "is not positive",
                 "a positive number of seconds, fractions allowed (e.g. 10, 1.5, 0.1)");
    }
    return *d;
  }

  std::string choice(std::string_view name, const std::string& def,
                     const std::vector<std::string>& accepted) {
    const uci::Value* v = single(name);
    if (v == nullptr) {
      return def;
    }
    if (!contains(accepted, v->text)) {
      fail_value(*v, std::string(name), "is not a valid value", join(accepted, ", "));
    }
    return v->text;
  }

  std::optional<uint32_t> u32(std::string_view name) {
    const uci::Value* v = single(name);
    if (v == nullptr) {
      return std::nullopt;
    }
    auto n = parse_u32(v->text);
    if (!n) {
      fail_value(*v, std::string(name), "is not a 32-bit number",
                 "hexadecimal with 0x (e.g. 0x3F00) or decimal, 0 to 4294967295");
    }
    return n;
  }

  std::optional<IpAddress> address(std::string_view name, Family family) {
    const uci::Value* v = single(name);
    if (v == nullptr) {
      return std::nullopt;
    }
    return checked_address(*v, std::string(name), family);
  }

  IpAddress checked_address(const uci::Value& v, const std::string& option, Family family) const {
    auto a = IpAddress::parse(v.text);
    if (!a) {
      fail_value(v, option, "is not an IP address",
                 std::string(family == Family::Ipv4 ? "an IPv4 address such as 1.1.1.1"
                                                    : "an IPv6 address such as 2606:4700:4700::1111"));
    }
    if (!family_matches(*a, family)) {
      fail_value(
          v, option,
          std::string("is not an ") + (family == Family::Ipv4 ? "IPv4" : "IPv6") +
              " address (the interface has family " + family_name(family) + ")",
          std::string(family == Family::Ipv4 ? "IPv4" : "IPv6") + " addresses, or change option family");
    }
    return *a;
  }

  // The options not read by anyone, verbatim.
  [[nodiscard]] std::map<std::string, std::vector<std::string>> rest() const {
    std::map<std::string, std::vector<std::string>> out;
    for (const uci::Option& o : s_.options) {
      if (used_.count(o.name) != 0) {
        continue;
      }
      auto& values = out[o.name];
      for (const auto& v : o.values) {
        values.push_back(v.text);
      }
    }
    return out;
  }

  // Line to blame for a default-derived problem: the option's line when given, else the header's.
  [[nodiscard]] int line_of(std::string_view name) const {
    const uci::Option* o = s_.find(name);
    return o == nullptr ? s_.line : o->line;
  }

 private:
  static std::string range_text(long long min, long long max) {
    if (max == std::numeric_limits<int>::max() || max == std::numeric_limits<uint32_t>::max()) {
      return "a whole number, " + std::to_string(min) + " or more";
    }
    return "a whole number from " + std::to_string(min) + " to " + std::to_string(max);
  }

  const uci::Section& s_;
  const std::string& file_;
  bool of_mwan3_;
  std::set<std::string> used_;
};

constexpr int kIntMax = std::numeric_limits<int>::max();
constexpr long long kU32Max = std::numeric_limits<uint32_t>::max();

void check_name_length(const SectionReader& r) {
  const std::string& name = r.section().name;
  if (name.size() > kMaxNameLength) {
    r.fail_section("name longer than 15 characters (mwan3 refuses such names; " +
                   std::to_string(name.size()) + " given)");
  }
}

// ---- sections ---------------------------------------------------------------------------------

// Failover hygiene extensions of globals: idle timeouts of remembered flows (seconds, 0 = never)
// and the two switches.
void read_flow_hygiene(SectionReader& r, Globals& g) {
  g.flow_timeout_tcp_s =
      static_cast<uint32_t>(r.integer("flow_timeout_tcp", g.flow_timeout_tcp_s, 0, kU32Max));
  g.flow_timeout_udp_s =
      static_cast<uint32_t>(r.integer("flow_timeout_udp", g.flow_timeout_udp_s, 0, kU32Max));
  g.flow_timeout_s = static_cast<uint32_t>(r.integer("flow_timeout", g.flow_timeout_s, 0, kU32Max));
  g.reset_stale_tcp = r.boolean("reset_stale_tcp", g.reset_stale_tcp);
  g.conntrack_by_mark = r.boolean("conntrack_by_mark", g.conntrack_by_mark);
  // 0 (the default) sizes the maps from the RAM; an explicit size is bounded so the maps stay
  // within what the kernel will allocate and what one flow per conntrack entry needs.
  g.flow_table_size = static_cast<uint32_t>(r.integer("flow_table_size", g.flow_table_size, 0, 4194304));
  if (g.flow_table_size != 0 && g.flow_table_size < 1024) {
    r.fail(r.line_of("flow_table_size"), "flow_table_size",
           "'" + std::to_string(g.flow_table_size) + "' is below 1024 in " + r.where() +
               "; accepted: 0 (sized from the RAM) or 1024 to 4194304");
  }
}

// Router-originated traffic extensions: whether uplinkd keeps its own default route(s) in the main
// table, and their metric (netifd gives each uplink's default route the interface's metric; mwan3
// asks for distinct metrics there, usually 10, 20, ...; 1 sits below them and above a metric 0).
void read_local_route(SectionReader& r, Globals& g) {
  g.local_route = r.boolean("local_route", g.local_route);
  g.local_route_metric =
      static_cast<uint32_t>(r.integer("local_route_metric", g.local_route_metric, 0, kU32Max));
  g.local_rules = r.boolean("local_rules", g.local_rules);
}

// The group database's entry for `name` (getgrnam_r, growing its buffer as asked); nullopt when none.
std::optional<uint32_t> group_id(const std::string& name) {
  std::vector<char> buf(1024);
  for (;;) {
    group entry{};
    group* found = nullptr;
    const int rc = getgrnam_r(name.c_str(), &entry, buf.data(), buf.size(), &found);
    if (rc == ERANGE && buf.size() < (size_t{1} << 20)) {
      buf.resize(buf.size() * 2);
      continue;
    }
    if (rc != 0 || found == nullptr) {
      return std::nullopt;
    }
    return found->gr_gid;
  }
}

// The name the group database gives `gid`, else the number.
std::string group_name(uint32_t gid) {
  std::vector<char> buf(1024);
  for (;;) {
    group entry{};
    group* found = nullptr;
    const int rc = getgrgid_r(gid, &entry, buf.data(), buf.size(), &found);
    if (rc == ERANGE && buf.size() < (size_t{1} << 20)) {
      buf.resize(buf.size() * 2);
      continue;
    }
    return rc == 0 && found != nullptr ? std::string(found->gr_name) : std::to_string(gid);
  }
}

// The control socket's group (extension): a group name, resolved now, or a numeric gid, taken as it
// is (a gid need not be in the group database to own a file or be held by a process). Empty: unset.
void read_control_group(SectionReader& r, Globals& g) {
  const uci::Value* v = r.single("control_group");
  if (v == nullptr || v->text.empty()) {
    return;
  }
  constexpr const char* kAccepted = "a group name from the group database (/etc/group) or a numeric gid";
  const bool numeric = v->text.find_first_not_of("0123456789") == std::string::npos;
  if (numeric) {
    auto gid = parse_int(v->text);
    // (gid_t)-1 means "no change" to chown, so it cannot name a group.
    if (!gid || *gid < 0 || *gid >= kU32Max) {
      r.fail_value(*v, "control_group", "is not a valid gid", kAccepted);
    }
    g.control_group = ControlGroup{static_cast<uint32_t>(*gid), group_name(static_cast<uint32_t>(*gid))};
    return;
  }
  auto gid = group_id(v->text);
  if (!gid) {
    r.fail_value(*v, "control_group", "is not a group on this system", kAccepted);
  }
  g.control_group = ControlGroup{*gid, v->text};
}

// The metrics listener's addresses (extension), each checked now so a typo is a config error with
// its line, not a listener that silently is not there.
void read_metrics_listen(SectionReader& r, Globals& g) {
  const auto refuse = [&r](const uci::Value& v, const std::string& word, const std::string& problem) {
    r.fail(v.line, "metrics_listen",
           "'" + word + "' " + problem + " in " + r.where() +
               "; accepted: address:port with a literal IPv4 address or [IPv6 address]:port, "
               "e.g. '127.0.0.1:9107' or '[::1]:9107', several separated by spaces");
  };
  for (const auto& v : r.list("metrics_listen")) {
    std::istringstream words(v.text);
    std::string word;
    while (words >> word) {
      std::string problem;
      const auto address = observability::parse_listen_address(word, &problem);
      if (!address) refuse(v, word, problem);
      if (std::find(g.metrics_listen.begin(), g.metrics_listen.end(), address->text) !=
          g.metrics_listen.end())
        refuse(v, word, "is given twice");
      g.metrics_listen.push_back(address->text);
    }
  }
}

Globals read_globals(const uci::Section& s, const std::string& file) {
  SectionReader r(s, file);
  Globals g;
  if (auto mask = r.u32("mmx_mask")) {
    g.mmx_mask = *mask;
  }
  g.logging = r.boolean("logging", false) ? 1 : 0;
  g.loglevel = r.choice("loglevel", g.loglevel, kLogLevels);
  for (const auto& v : r.list("rt_table_lookup")) {
    g.rt_table_lookup.push_back(v.text);
  }
  if (auto mark = r.u32("probe_reply_mark")) {
    g.probe_reply_mark = *mark;
  }
  if (auto mask = r.u32("probe_reply_mark_mask")) {
    g.probe_reply_mark_mask = *mask;
  }
  if ((g.probe_reply_mark & ~g.probe_reply_mark_mask) != 0) {
    r.fail(r.line_of("probe_reply_mark"), "probe_reply_mark",
           "bits outside probe_reply_mark_mask in " + r.where() + "; accepted: a mark within the mask");
  }
  read_flow_hygiene(r, g);
  read_local_route(r, g);
  read_control_group(r, g);
  read_metrics_listen(r, g);
  g.other_options = r.rest();
  return g;
}

TrackMethod read_track_method(SectionReader& r) {
  static const std::map<std::string, TrackMethod> kByName = {
      {"ping", TrackMethod::Ping},          {"arping", TrackMethod::Arping},
      {"httping", TrackMethod::Httping},    {"nping-tcp", TrackMethod::NpingTcp},
      {"nping-udp", TrackMethod::NpingUdp}, {"nping-icmp", TrackMethod::NpingIcmp},
      {"nping-arp", TrackMethod::NpingArp}, {"nslookup", TrackMethod::Nslookup}};
  const uci::Value* v = r.single("track_method");
  if (v == nullptr) return TrackMethod::Ping;
  if (auto it = kByName.find(v->text); it != kByName.end()) return it->second;
  r.fail_value(*v, "track_method", "is not a track method", join(kTrackMethods, ", "));
}

// httping_ssl needs OpenSSL in the build (CMake option UPLINKD_TLS); without it the option is refused
// rather than silently probing plain HTTP.
void read_httping_ssl(SectionReader& r, InterfaceConfig& c) {
  c.httping_ssl = r.boolean("httping_ssl", false);
#ifndef UPLINKD_HAVE_TLS
  if (c.httping_ssl && c.track_method == TrackMethod::Httping) {
    r.fail(r.line_of("httping_ssl"), "httping_ssl",
           "'1' needs HTTPS, but this uplinkd was built without TLS (UPLINKD_TLS=OFF) in " + r.where() +
               "; accepted: 0, or an uplinkd built with UPLINKD_TLS=ON");
  }
#endif
}

// `timeout`: mwan3's seconds, or 'auto' (extension) with its bounds timeout_min and timeout_max,
// which mean nothing without it and are refused there rather than silently ignored.
void read_timeout(SectionReader& r, InterfaceConfig& c) {
  constexpr const char* kAccepted =
      "a positive number of seconds, fractions allowed (e.g. 4, 1.5, 0.1), or auto";
  const uci::Value* v = r.single("timeout");
  if (v != nullptr && v->text == "auto") {
    AutoTimeout a;
    a.min_s = r.seconds("timeout_min", a.min_s);
    a.max_s = r.seconds("timeout_max", a.max_s);
    if (a.min_s > a.max_s) {
      r.fail(r.line_of("timeout_min"), "timeout_min",
             quote(r.text("timeout_min").value_or("")) + " is more than timeout_max " +
                 quote(r.text("timeout_max").value_or("1")) + " in " + r.where() +
                 "; accepted: at most timeout_max");
    }
    c.timeout_auto = a;
    c.timeout_s = a.max_s;
    return;
  }
  if (v != nullptr) {
    const auto d = parse_seconds(v->text);
    if (!d) r.fail_value(*v, "timeout", "is not a number of seconds", kAccepted);
    if (*d <= 0) r.fail_value(*v, "timeout", "is not positive", kAccepted);
    c.timeout_s = *d;
  }
  for (const char* bound : {"timeout_min", "timeout_max"}) {
    if (r.section().find(bound) != nullptr) {
      r.fail(r.line_of(bound), bound,
             std::string("needs option timeout 'auto' in ") + r.where() +
                 "; accepted: with timeout 'auto' only");
    }
  }
}

InterfaceConfig read_interface(const uci::Section& s, uint32_t id, const std::string& file) {
  SectionReader r(s, file);
  if (s.anonymous) {
    r.fail_section("interface sections need a name: the name of the network interface they track");
  }
  check_name_length(r);
  InterfaceConfig c;
  c.name = s.name;
  c.line = s.line;
  c.id = id;
  c.enabled = r.boolean("enabled", false);
  c.family = r.choice("family", "ipv4", {"ipv4", "ipv6"}) == "ipv4" ? Family::Ipv4 : Family::Ipv6;

  for (const auto& v : r.list("track_ip")) {
    c.track_ip.push_back(r.checked_address(v, "track_ip", c.family));
  }
  c.track_method = read_track_method(r);
  if ((c.track_method == TrackMethod::Arping || c.track_method == TrackMethod::NpingArp) &&
      c.family == Family::Ipv6) {
    r.fail(r.line_of("track_method"), "track_method",
           std::string("'") + (c.track_method == TrackMethod::Arping ? "arping" : "nping-arp") +
               "' tracks IPv4 only but " + r.where() +
               " has family ipv6; accepted: ping, httping, nping-tcp, nping-udp, nping-icmp, nslookup");
  }
  read_httping_ssl(r, c);

  c.reliability = static_cast<int>(r.integer("reliability", 1, 1, kIntMax));
  if (!c.track_ip.empty() && c.reliability > static_cast<int>(c.track_ip.size())) {
    r.fail(r.line_of("reliability"), "reliability",
           std::to_string(c.reliability) + " is more than the " + std::to_string(c.track_ip.size()) +
               " track_ip target(s) of " + r.where() + "; accepted: 1 to " +
               std::to_string(c.track_ip.size()));
  }
  c.count = static_cast<int>(r.integer("count", 1, 1, kIntMax));
  read_timeout(r, c);
  c.interval_s = r.seconds("interval", 10);
  // mwan3: `config_get failure_interval $INTERFACE failure_interval $interval`.
  c.failure_interval_s = r.seconds("failure_interval", c.interval_s);
  c.recovery_interval_s = r.seconds("recovery_interval", c.interval_s);
  c.keep_failure_interval = r.boolean("keep_failure_interval", false);
  c.down = static_cast<int>(r.integer("down", 5, 1, kIntMax));
  c.up = static_cast<int>(r.integer("up", 5, 1, kIntMax));
  c.size = static_cast<int>(r.integer("size", 56, 0, 65507));
  c.max_ttl = static_cast<int>(r.integer("max_ttl", 60, 1, 255));
  c.check_quality = r.boolean("check_quality", false);
  if (c.check_quality && c.track_method != TrackMethod::Ping && c.track_method != TrackMethod::Httping) {
    // mwan3 reads loss and latency from ping's and httping's output only; with another method every
    // target is "skipped" and the uplink can never come online.
    r.fail(r.line_of("check_quality"), "check_quality",
           "needs track_method ping or httping in " + r.where() +
               "; accepted: 0, or track_method ping or httping");
  }
  c.failure_latency_ms = static_cast<int>(r.integer("failure_latency", 1000, 0, kIntMax));
  c.failure_loss_pct = static_cast<int>(r.integer("failure_loss", 40, 0, 100));
  c.recovery_latency_ms = static_cast<int>(r.integer("recovery_latency", 500, 0, kIntMax));
  c.recovery_loss_pct = static_cast<int>(r.integer("recovery_loss", 10, 0, 100));
  c.initial_state = r.choice("initial_state", "online", {"online", "offline"}) == "online"
                        ? InitialState::Online
                        : InitialState::Offline;
  for (const auto& v : r.list("flush_conntrack")) {
    if (!contains(kConntrackEvents, v.text)) {
      r.fail_value(v, "flush_conntrack", "is not an event", join(kConntrackEvents, ", "));
    }
    c.flush_conntrack.push_back(v.text);
  }

  // Extensions.
  if (auto dev = r.text("device")) {
    if (dev->empty()) {
      r.fail(r.line_of("device"), "device",
             "empty in " + r.where() + "; accepted: a device name such as eth1");
    }
    c.device = *dev;
  }
  c.gateway = r.address("gateway", c.family);
  const int default_port = c.track_method == TrackMethod::NpingUdp ? kNpingUdpDefaultPort : 80;
  c.track_port = static_cast<uint16_t>(r.integer("track_port", default_port, 1, 65535));
  if (auto name = r.text("dns_query_name")) {
    if (name->empty()) {
      r.fail(r.line_of("dns_query_name"), "dns_query_name",
             "empty in " + r.where() + "; accepted: a DNS name such as openwrt.org");
    }
    c.dns_query_name = *name;
  }
  c.icmp_limit_rate = static_cast<uint32_t>(r.integer("icmp_limit_rate", 0, 0, kU32Max));
  c.icmp_limit_burst = static_cast<uint32_t>(r.integer("icmp_limit_burst", 5, 1, kU32Max));
  c.pmtu_interval_s = static_cast<uint32_t>(r.integer("pmtu_interval", 600, 0, kU32Max));
  c.other_options = r.rest();
  return c;
}

MemberConfig read_member(const uci::Section& s, const std::string& file) {
  SectionReader r(s, file);
  MemberConfig m;
  m.name = s.name;
  m.line = s.line;
  auto iface = r.text("interface");
  if (!iface || iface->empty()) {
    r.fail(s.line, "interface",
           r.where() + " names no interface; accepted: the name of an interface section");
  }
  m.interface = *iface;
  // mwan3 never selects a member with a metric of 256 or more (its "lowest metric" starts at 256); such
  // values are kept so the policy engine can do the same.
  m.metric = static_cast<int>(r.integer("metric", 1, 0, kIntMax));
  m.weight = static_cast<int>(r.integer("weight", 1, 1, kIntMax));
  m.other_options = r.rest();
  return m;
}

PolicyConfig read_policy(const uci::Section& s, const std::string& file) {
  SectionReader r(s, file);
  check_name_length(r);
  PolicyConfig p;
  p.name = s.name;
  p.line = s.line;
  for (const auto& v : r.list("use_member")) {
    p.use_member.push_back(v.text);
  }
  p.last_resort = r.choice("last_resort", "unreachable", kLastResorts);
  p.failback_move = r.choice("failback", "keep", {"keep", "move"}) == "move";
  p.other_options = r.rest();
  return p;
}

RuleConfig read_rule(const uci::Section& s, const std::string& file) {
  SectionReader r(s, file);
  check_name_length(r);
  RuleConfig rule;
  rule.name = s.name;
  rule.line = s.line;
  auto policy = r.text("use_policy");
  if (!policy || policy->empty()) {
    r.fail(s.line, "use_policy",
           r.where() + " has no use_policy; accepted: a policy name, or " + join(kBuiltinPolicies, ", "));
  }
  rule.use_policy = *policy;
  // Checked here so a typo is reported with its line; the values stay verbatim in `options`.
  r.choice("family", "any", {"any", "ipv4", "ipv6"});
  r.boolean("sticky", false);
  r.boolean("logging", false);
  r.integer("timeout", 600, 1, kIntMax);
  for (const uci::Option& o : s.options) {
    if (o.name == "use_policy") {
      continue;
    }
    std::vector<std::string> values;
    for (const auto& v : o.values) {
      values.push_back(v.text);
    }
    rule.options[o.name] = join(values, ",");
  }
  return rule;
}

// ---- wireguard (extension) --------------------------------------------------------------------

struct EndpointText {
  std::string_view host;
  std::string_view port;
};

// "host:port" or "[ipv6]:port"; nullopt without a port.
std::optional<EndpointText> split_endpoint(std::string_view text) {
  if (!text.empty() && text.front() == '[') {
    size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return std::nullopt;
    }
    return EndpointText{text.substr(1, close - 1), text.substr(close + 2)};
  }
  size_t colon = text.rfind(':');
  if (colon == std::string_view::npos || text.find(':') != colon) {
    return std::nullopt;  // no port, or an IPv6 address without brackets
  }
  return EndpointText{text.substr(0, colon), text.substr(colon + 1)};
}

constexpr const char* kEndpointAccepted =
    "ip:port or [ipv6]:port, e.g. 203.0.113.5:51820 or [2001:db8::5]:51820";

// A static endpoint; a host name is reported (not fatal): uplinkd does not resolve names, and the
// endpoint discovered from the device covers a DDNS name once WireGuard has resolved it.
void read_wireguard_endpoint(SectionReader& r, const std::string& file, const uci::Value& v,
                             WireguardConfig& wg) {
  std::optional<EndpointText> parts = split_endpoint(v.text);
  if (!parts) {
    r.fail_value(v, "endpoint", "is not an endpoint", kEndpointAccepted);
  }
  auto port = parse_int(parts->port);
  if (!port || *port < 1 || *port > 65535) {
    r.fail_value(v, "endpoint", "has no valid port (1 to 65535)", kEndpointAccepted);
  }
  std::optional<IpAddress> address = IpAddress::parse(parts->host);
  if (!address) {
    wg.unsupported_endpoints.push_back(compose_message(
        file, v.line, "endpoint",
        quote(v.text) + " in " + r.where() +
            ": host names are not supported (not resolved); give the address, or leave it to discovery "
            "from the WireGuard device"));
    return;
  }
  if (v.text.front() == '[' && !address->is_v6()) {
    r.fail_value(v, "endpoint", "puts an IPv4 address in brackets", kEndpointAccepted);
  }
  wg.endpoints.push_back({*address, static_cast<uint16_t>(*port), v.line});
}

WireguardConfig read_wireguard(const uci::Section& s, const std::string& file) {
  SectionReader r(s, file);
  WireguardConfig wg;
  wg.line = s.line;
  wg.device = r.text("device").value_or(s.anonymous ? "" : s.name);
  if (wg.device.empty()) {
    r.fail(r.line_of("device"), "device",
           r.where() + " names no WireGuard device; accepted: a named section or option device 'wg0'");
  }
  wg.policy = r.text("policy").value_or("");
  wg.fix_endpoint_routes = r.boolean("fix_endpoint_routes", true);
  wg.clamp_mss = r.boolean("clamp_mss", false);
  for (const uci::Value& v : r.list("endpoint")) {
    read_wireguard_endpoint(r, file, v, wg);
  }
  return wg;
}

void check_wireguard(const Config& cfg, const uci::Package& pkg) {
  std::vector<std::string> policy_names;
  for (const auto& p : cfg.policies) {
    policy_names.push_back(p.name);
  }
  std::set<std::string> devices;
  for (size_t i = 0; i < cfg.wireguard.size(); ++i) {
    const WireguardConfig& wg = cfg.wireguard[i];
    const uci::Section* s = nullptr;
    for (const uci::Section& candidate : pkg.sections) {
      if (candidate.type == "wireguard" && candidate.line == wg.line) {
        s = &candidate;
      }
    }
    if (!devices.insert(wg.device).second) {
      throw ConfigError(cfg.file, wg.line, "device",
                        "wireguard device " + quote(wg.device) +
                            " is configured twice; accepted: one wireguard section per device");
    }
    if (wg.policy.empty() || contains(policy_names, wg.policy)) {
      continue;
    }
    const uci::Option* o = s != nullptr ? s->find("policy") : nullptr;
    throw ConfigError(
        cfg.file, o != nullptr ? o->line : wg.line, "policy",
        quote(wg.policy) + " is not a policy section in wireguard " + quote(wg.device) +
            "; accepted: " + (policy_names.empty() ? "(no policy sections)" : join(policy_names, ", ")));
  }
}

// ---- cross-section checks ---------------------------------------------------------------------

const uci::Value& value_of(const uci::Section& s, std::string_view option, size_t index = 0) {
  return s.find(option)->values.at(index);
}

void check_references(const Config& cfg, const uci::Package& pkg) {
  auto section_of = [&](const std::string& type, const std::string& name) { return pkg.find(type, name); };
  std::vector<std::string> iface_names;
  for (const auto& i : cfg.interfaces) {
    iface_names.push_back(i.name);
  }
  std::set<std::string> member_names;
  for (const auto& m : cfg.members) {
    member_names.insert(m.name);
  }
  std::set<std::string> policy_names;
  for (const auto& p : cfg.policies) {
    policy_names.insert(p.name);
  }

  for (const auto& m : cfg.members) {
    if (cfg.find_interface(m.interface) != nullptr) {
      continue;
    }
    const uci::Section* s = section_of("member", m.name);
    const uci::Value& v = value_of(*s, "interface");
    throw ConfigError(
        cfg.file, v.line, "interface",
        quote(v.text) + " is not an interface section in member " + quote(m.name) +
            "; accepted: " + (iface_names.empty() ? "(no interface sections)" : join(iface_names, ", ")));
  }
  for (const auto& p : cfg.policies) {
    const uci::Section* s = section_of("policy", p.name);
    for (size_t i = 0; i < p.use_member.size(); ++i) {
      if (member_names.count(p.use_member[i]) != 0) {
        continue;
      }
      const uci::Value& v = value_of(*s, "use_member", i);
      throw ConfigError(cfg.file, v.line, "use_member",
                        quote(v.text) + " is not a member section in policy " + quote(p.name) +
                            "; accepted: the name of a member section");
    }
  }
  for (const auto& rule : cfg.rules) {
    if (policy_names.count(rule.use_policy) != 0 || contains(kBuiltinPolicies, rule.use_policy)) {
      continue;
    }
    const uci::Section* s = section_of("rule", rule.name);
    const uci::Value& v = value_of(*s, "use_policy");
    throw ConfigError(cfg.file, v.line, "use_policy",
                      quote(v.text) + " is not a policy section in rule " + quote(rule.name) +
                          "; accepted: a policy name, or " + join(kBuiltinPolicies, ", "));
  }
}

// mwan3: mmdefault = 2^bits - 1; mmdefault-2 and mmdefault-1 are blackhole and unreachable, so
// interface ids run from 1 to 2^bits - 4 (60 with 0x3F00). mwan3 itself wants at least 3 bits.
void check_mmx_mask(const Config& cfg, const uci::Section* globals) {
  const int bits = std::popcount(cfg.globals.mmx_mask);
  const long long max_ifaces = bits >= 3 ? (1LL << bits) - 4 : 0;
  const uci::Option* opt = globals != nullptr ? globals->find("mmx_mask") : nullptr;
  char mask_text[16];
  std::snprintf(mask_text, sizeof mask_text, "0x%X", static_cast<unsigned>(cfg.globals.mmx_mask));
  if (bits < 3) {
    throw ConfigError(cfg.file, opt != nullptr ? opt->line : 0, "mmx_mask",
                      std::string(mask_text) + " has " + std::to_string(bits) +
                          " bit(s) set in globals; accepted: a mask with at least 3 bits set, e.g. 0x3F00");
  }
  if (static_cast<long long>(cfg.interfaces.size()) > max_ifaces) {
    int line = opt != nullptr ? opt->line : cfg.interfaces[max_ifaces].line;
    throw ConfigError(
        cfg.file, line, "mmx_mask",
        std::string(mask_text) + " leaves room for " + std::to_string(max_ifaces) +
            " interface ids but there are " + std::to_string(cfg.interfaces.size()) +
            " interface sections; accepted: a mask with more bits set (n interfaces need 2^bits - 4 >= n)");
  }
}

// ---- device and gateway from /etc/config/network ---------------------------------------------

// Protocols whose netifd device is "<proto>-<interface>" rather than `option device`.
const std::vector<std::string> kProtoNamedDevices = {"pppoe", "pppoa", "ppp", "3g", "l2tp", "pptp"};

struct NetworkInfo {
  std::string device;
  std::optional<IpAddress> gateway;
};

std::optional<NetworkInfo> network_info(const uci::Package& net, const std::string& iface, Family family,
                                        int depth = 0) {
  const uci::Section* s = net.find("interface", iface);
  if (s == nullptr) {
    return std::nullopt;
  }
  SectionReader r(*s, net.file, false);
  NetworkInfo info;
  const std::string proto = r.text("proto").value_or("");
  if (contains(kProtoNamedDevices, proto)) {
    info.device = proto + "-" + iface;  // e.g. pppoe-wan
  } else if (proto == "wireguard") {
    info.device = iface;  // the WireGuard netdev is named after the interface
  } else {
    std::string dev = r.text("device").value_or("");
    if (dev.empty()) {
      // Before OpenWrt 21.02: `option ifname`, possibly several words for a bridge (`option type bridge`).
      std::string ifname = r.text("ifname").value_or("");
      dev = ifname.substr(0, ifname.find_first_of(" \t"));
      if (r.text("type").value_or("") == "bridge") {
        dev = "br-" + iface;
      }
    }
    if (!dev.empty() && dev[0] == '@') {
      // An alias (wan6 on '@wan') uses the other interface's device.
      if (depth >= 8) {
        r.fail(r.line_of("device"), "device", "alias loop through " + quote(dev) + " in " + r.where());
      }
      auto target = network_info(net, dev.substr(1), family, depth + 1);
      if (!target) {
        r.fail(r.line_of("device"), "device",
               quote(dev) + " names no interface section in " + r.where() + "; accepted: @<interface name>");
      }
      dev = target->device;
    }
    if (!dev.empty() && dev[0] == '/') {
      dev.clear();  // a modem's control node (qmi, ncm), not a netdev
    }
    info.device = dev;  // a device section name such as br-lan.253 is the Linux device name
  }
  // Only a static interface has its gateway in the file; dhcp and pppoe learn it (the daemon reads it
  // from the main table).
  if (proto == "static") {
    const char* option = family == Family::Ipv4 ? "gateway" : "ip6gw";
    info.gateway = r.address(option, family);
  }
  return info;
}

void resolve_devices(Config& cfg, const std::optional<uci::Package>& net) {
  for (auto& iface : cfg.interfaces) {
    std::optional<NetworkInfo> info;
    if (net) {
      info = network_info(*net, iface.name, iface.family);
    }
    if (iface.device.empty() && info) {
      iface.device = info->device;
    }
    if (!iface.gateway && info) {
      iface.gateway = info->gateway;
    }
    if (iface.enabled && iface.device.empty()) {
      std::string why = !net    ? "add option device to the mwan3 section or pass --network"
                        : !info ? "no interface '" + iface.name + "' in " + net->file +
                                      "; add option device to the mwan3 section"
                                : "its section in " + net->file +
                                      " names no device; add option device to the mwan3 section";
      throw ConfigError(cfg.file, iface.line, "", "interface " + quote(iface.name) + ": no device: " + why);
    }
  }
}

}  // namespace

ConfigError::ConfigError(std::string file_, int line_, std::string option_, const std::string& message)
    : std::runtime_error(compose_message(file_, line_, option_, message)),
      file(std::move(file_)),
      line(line_),
      option(std::move(option_)) {}

const InterfaceConfig* Config::find_interface(const std::string& name) const {
  for (const auto& i : interfaces) {
    if (i.name == name) {
      return &i;
    }
  }
  return nullptr;
}

const WireguardConfig* Config::find_wireguard(const std::string& device) const {
  for (const auto& wg : wireguard) {
    if (wg.device == device) {
      return &wg;
    }
  }
  return nullptr;
}

namespace {

bool matches_every_destination(const RuleConfig& rule, Family family) {
  auto option = [&](const char* name) {
    auto it = rule.options.find(name);
    return it == rule.options.end() ? std::string() : it->second;
  };
  const std::string rule_family = option("family");
  if (!rule_family.empty() && rule_family != "any" && rule_family != family_name(family)) {
    return false;
  }
  for (const char* selector : {"src_ip", "src_port", "dest_port", "ipset", "src_iface"}) {
    if (!option(selector).empty()) {
      return false;
    }
  }
  const std::string proto = option("proto");
  if (!proto.empty() && proto != "all" && proto != "udp") {
    return false;  // WireGuard is UDP: a udp-only rule still covers it
  }
  const std::string dest = option("dest_ip");
  return dest.empty() || dest == (family == Family::Ipv4 ? "0.0.0.0/0" : "::/0");
}

}  // namespace

std::optional<DefaultRulePolicy> default_rule_policy(const Config& cfg, Family family) {
  for (const RuleConfig& rule : cfg.rules) {
    if (matches_every_destination(rule, family)) {
      return DefaultRulePolicy{rule.use_policy, rule.name, rule.line};
    }
  }
  return std::nullopt;
}

Config parse(const std::string& text, const std::string& file, const std::optional<std::string>& network_text,
             const std::string& network_file) {
  const uci::Package pkg = uci::parse(text, file);
  std::optional<uci::Package> net;
  if (network_text) {
    net = uci::parse(*network_text, network_file);
  }

  Config cfg;
  cfg.file = file;
  const uci::Section* globals = nullptr;
  uint32_t next_id = 1;
  for (const uci::Section& s : pkg.sections) {
    if (s.type == "globals") {
      // mwan3 reads `config_get ... globals <option>`: only the section named globals counts.
      if (s.name != "globals") {
        continue;
      }
      globals = &s;
      cfg.globals = read_globals(s, file);
    } else if (s.type == "interface") {
      cfg.interfaces.push_back(read_interface(s, next_id++, file));
    } else if (s.type == "member") {
      cfg.members.push_back(read_member(s, file));
    } else if (s.type == "policy") {
      cfg.policies.push_back(read_policy(s, file));
    } else if (s.type == "rule") {
      cfg.rules.push_back(read_rule(s, file));
    } else if (s.type == "wireguard") {
      cfg.wireguard.push_back(read_wireguard(s, file));
    }
    // Other section types are not mwan3's business (or not ours): ignored.
  }
  cfg.warnings = unknown_option_warnings(pkg);
  check_mmx_mask(cfg, globals);
  check_references(cfg, pkg);
  check_wireguard(cfg, pkg);
  resolve_devices(cfg, net);
  return cfg;
}

namespace {

std::string read_file(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    throw ConfigError(path, 0, "", std::strerror(errno));
  }
  std::string data;
  char buf[8192];
  size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) {
    data.append(buf, n);
  }
  int err = std::ferror(f) ? errno : 0;
  std::fclose(f);
  if (err != 0) {
    throw ConfigError(path, 0, "", std::strerror(err));
  }
  return data;
}

}  // namespace

Config load(const std::string& mwan3_path, const std::optional<std::string>& network_path) {
  std::string text = read_file(mwan3_path);
  std::optional<std::string> network_text;
  if (network_path) {
    network_text = read_file(*network_path);
  }
  return parse(text, mwan3_path, network_text, network_path.value_or("network"));
}

uint32_t mark_for_id(uint32_t id, uint32_t mask) {
  uint32_t mark = 0;
  uint32_t rest = id;
  for (int bit = 0; bit < 32 && rest != 0; ++bit) {
    if ((mask & (1U << bit)) == 0) {
      continue;
    }
    if ((rest & 1U) != 0) {
      mark |= 1U << bit;
    }
    rest >>= 1;
  }
  return rest == 0 ? mark : 0;
}

uint32_t flow_table_entries(const Globals& g, uint64_t mem_total_bytes) {
  if (g.flow_table_size != 0) return g.flow_table_size;
  // One entry per 16 KiB of RAM, as the kernel sizes conntrack: 16384 on a 256 MiB router, 65536
  // with 1 GiB. A power of two, between 4096 and 262144.
  uint64_t want = mem_total_bytes / 16384;
  uint32_t entries = 4096;
  while (entries < 262144 && static_cast<uint64_t>(entries) * 2 <= want) entries *= 2;
  return entries;
}

bool needs_every_reply(TrackMethod m) {
  return m == TrackMethod::NpingUdp || m == TrackMethod::NpingIcmp || m == TrackMethod::NpingArp;
}

}  // namespace uplinkd::config
