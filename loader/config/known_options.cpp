#include "config/known_options.h"

#include <algorithm>
#include <map>
#include <set>

namespace uplinkd::config {
namespace {

using NameSet = std::set<std::string, std::less<>>;

// mwan3's options (read from mwan3's scripts across its releases, older ones included so an old file
// draws no warning) and uplinkd's extensions (README, "Configuration").
const std::map<std::string, NameSet, std::less<>>& known_by_type() {
  static const std::map<std::string, NameSet, std::less<>> known = {
      {"globals",
       {// mwan3
        "mmx_mask", "logging", "loglevel", "rt_table_lookup", "local_source", "source_routing",
        "rtmon_interval",
        // uplinkd
        "probe_reply_mark", "probe_reply_mark_mask", "flow_timeout", "flow_timeout_tcp", "flow_timeout_udp",
        "reset_stale_tcp", "conntrack_by_mark", "flow_table_size", "local_route", "local_route_metric",
        "local_rules", "control_group", "metrics_listen"}},
      {"interface",
       {// mwan3
        "enabled", "initial_state", "family", "track_ip", "track_method", "httping_ssl", "reliability",
        "count", "size", "max_ttl", "check_quality", "failure_latency", "failure_loss", "recovery_latency",
        "recovery_loss", "timeout", "interval", "failure_interval", "recovery_interval",
        "keep_failure_interval", "down", "up", "flush_conntrack", "online_metric",
        // uplinkd
        "device", "gateway", "track_port", "dns_query_name", "icmp_limit_rate", "icmp_limit_burst",
        "pmtu_interval", "timeout_min", "timeout_max"}},
      {"member", {"interface", "metric", "weight"}},
      {"policy", {"use_member", "last_resort", /* uplinkd */ "failback"}},
      {"rule",
       {"use_policy", "family", "proto", "src_ip", "src_port", "src_iface", "dest_ip", "dest_port", "ipset",
        "sticky", "timeout", "logging"}},
      {"wireguard", {"device", "policy", "fix_endpoint_routes", "clamp_mss", "endpoint"}},
  };
  return known;
}

// Levenshtein distance, stopping early: names are short, and only distances up to 2 matter.
size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t above = row[j];
      const size_t substitute = diagonal + (a[i - 1] == b[j - 1] ? 0 : 1);
      row[j] = std::min({above + 1, row[j - 1] + 1, substitute});
      diagonal = above;
    }
  }
  return row[b.size()];
}

std::string quoted(std::string_view s) { return "'" + std::string(s) + "'"; }

std::string joined_with_or(const std::vector<std::string>& words) {
  std::string out;
  for (size_t i = 0; i < words.size(); ++i) {
    if (i > 0) out += i + 1 == words.size() ? " or " : ", ";
    out += words[i];
  }
  return out;
}

// What to add after "ignored": the likely intended name, or the section the option belongs to.
std::string hint(std::string_view type, std::string_view option) {
  if (auto nearest = nearest_known_option(type, option)) return "; did you mean " + quoted(*nearest) + "?";
  const std::vector<std::string> elsewhere = section_types_knowing(option);
  if (!elsewhere.empty()) return "; it is an option of config " + joined_with_or(elsewhere);
  return "";
}

}  // namespace

bool is_known_option(std::string_view type, std::string_view option) {
  const auto& known = known_by_type();
  auto it = known.find(type);
  return it == known.end() || it->second.count(option) != 0;
}

std::optional<std::string> nearest_known_option(std::string_view type, std::string_view option) {
  const auto& known = known_by_type();
  auto it = known.find(type);
  if (it == known.end()) return std::nullopt;
  std::optional<std::string> best;
  size_t best_distance = 3;  // more than 2 edits is not a typo
  for (const std::string& name : it->second) {
    const size_t d = edit_distance(option, name);
    if (d < best_distance && 2 * d < option.size()) {
      best = name;
      best_distance = d;
    }
  }
  return best;
}

std::vector<std::string> section_types_knowing(std::string_view option) {
  std::vector<std::string> types;
  for (const auto& [type, names] : known_by_type()) {
    if (names.count(option) != 0) types.push_back(type);
  }
  return types;
}

std::vector<std::string> unknown_option_warnings(const uci::Package& package) {
  std::vector<std::string> out;
  for (const uci::Section& s : package.sections) {
    for (const uci::Option& o : s.options) {
      if (is_known_option(s.type, o.name)) continue;
      out.push_back(package.file + ":" + std::to_string(o.line) + ": option " + quoted(o.name) +
                    ": unknown in " + s.type + " " + quoted(s.name) + ", ignored" + hint(s.type, o.name));
    }
  }
  return out;
}

}  // namespace uplinkd::config
