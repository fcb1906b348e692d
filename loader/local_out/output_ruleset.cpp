#include "local_out/output_ruleset.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <set>
#include <string_view>

namespace uplinkd::local_out {
namespace {

// numgen's range: `numgen random mod 4294967295` gives 0 .. 4294967294, the pick table's thresholds
// clipped to that (the last member's UINT32_MAX becomes its end).
constexpr uint32_t kNumgenModulus = 0xFFFFFFFFU;
constexpr uint32_t kNumgenMax = kNumgenModulus - 1;

std::string hex(uint32_t value) {
  char text[16];
  std::snprintf(text, sizeof text, "0x%08x", value);
  return text;
}

// One string from many pieces without the temporaries of a chain of `+`.
std::string cat(std::initializer_list<std::string_view> parts) {
  std::string out;
  for (std::string_view part : parts) out.append(part);
  return out;
}

std::string fam_suffix(int family) { return family == 6 ? "_v6" : "_v4"; }
std::string ip_word(int family) { return family == 6 ? "ip6" : "ip"; }
std::string nfproto(int family) { return family == 6 ? "ipv6" : "ipv4"; }
std::string addr_type(int family) { return family == 6 ? "ipv6_addr" : "ipv4_addr"; }

std::string mark_chain(uint32_t mark) {
  char text[24];
  std::snprintf(text, sizeof text, "mark_%08x", mark);
  return text;
}
std::string rule_chain(size_t index, int family) {
  return "rule" + std::to_string(index) + fam_suffix(family);
}
std::string policy_map(uint32_t id, int family) { return "policy" + std::to_string(id) + fam_suffix(family); }
std::string member_set(uint32_t id, int family) {
  return "members" + std::to_string(id) + fam_suffix(family);
}
std::string sticky_set(size_t index, uint32_t uplink, int family) {
  return "sticky" + std::to_string(index) + "_" + std::to_string(uplink) + fam_suffix(family);
}

// `mark & ~MASK | M`: sets our bits, keeps the others (a firewall's, a VPN's).
std::string set_mark(const policy::MarkSpace& marks, uint32_t mark) {
  return "meta mark set meta mark & " + hex(~marks.mask) + " | " + hex(mark);
}
std::string our_bits(const policy::MarkSpace& marks) { return "meta mark & " + hex(marks.mask); }

std::string address_text(const addr_match& a) {
  char text[INET6_ADDRSTRLEN] = {};
  inet_ntop(a.family == 6 ? AF_INET6 : AF_INET, a.addr, text, sizeof text);
  return std::string(text) + "/" + std::to_string(a.prefixlen);
}

std::string addresses(const addr_match* list, unsigned n, int family) {
  std::string out;
  for (unsigned k = 0; k < n && k < UPLINKD_RULE_MAX_ADDRS; ++k) {
    if (list[k].family != family) continue;
    out += (out.empty() ? "{ " : ", ") + address_text(list[k]);
  }
  return out.empty() ? out : out + " }";
}

std::string ports(const port_range* list, unsigned n) {
  std::string out;
  for (unsigned k = 0; k < n && k < UPLINKD_RULE_MAX_PORTS; ++k) {
    std::string one = std::to_string(list[k].lo);
    if (list[k].hi != list[k].lo) one += "-" + std::to_string(list[k].hi);
    out += (out.empty() ? "{ " : ", ") + one;
  }
  return out + " }";
}

// Every mark a packet can be given: the uplinks', MMX_DEFAULT, unreachable and blackhole.
std::set<uint32_t> all_marks(const OutputPlan& plan) {
  std::set<uint32_t> marks = {plan.marks.default_mark, plan.marks.unreachable_mark,
                              plan.marks.blackhole_mark};
  for (const auto& u : plan.uplinks) marks.insert(u.mark);
  return marks;
}

bool is_builtin(uint32_t policy_id) { return policy_id < policy::kFirstUserPolicyId; }

uint32_t builtin_mark(uint32_t policy_id, const policy::MarkSpace& marks) {
  if (policy_id == policy::kPolicyIdUnreachable) return marks.unreachable_mark;
  if (policy_id == policy::kPolicyIdBlackhole) return marks.blackhole_mark;
  return marks.default_mark;
}

struct Writer {
  const std::string where;  // "inet <table>"
  std::string text;

  void line(const std::string& command) { text += command + "\n"; }
  void rule(const std::string& chain, const std::string& body) {
    line("add rule " + where + " " + chain + " " + body);
  }
};

void add_mark_chains(Writer& w, const OutputPlan& plan) {
  for (uint32_t mark : all_marks(plan)) {
    w.line("add chain " + w.where + " " + mark_chain(mark));
    w.rule(mark_chain(mark), set_mark(plan.marks, mark));
  }
  // A sticky entry whose uplink no longer carries the policy's new flows is not reused.
  w.line("add chain " + w.where + " mark_clear");
  w.rule("mark_clear", "meta mark set meta mark & " + hex(~plan.marks.mask));
}

void add_sets(Writer& w, const OutputPlan& plan) {
  for (int family : {4, 6}) {
    w.line("add set " + w.where + " connected" + fam_suffix(family) + " { type " + addr_type(family) +
           "; flags interval; auto-merge; }");
    for (size_t k = 1; k <= plan.rules->sets.size(); ++k) {
      w.line("add set " + w.where + " ipset" + std::to_string(k) + fam_suffix(family) + " { type " +
             addr_type(family) + "; flags interval; auto-merge; }");
    }
    for (uint32_t id : plan.policy_ids) {
      w.line("add map " + w.where + " " + policy_map(id, family) + " { typeof numgen random mod " +
             std::to_string(kNumgenModulus) + " : verdict; flags interval; }");
      w.line("add set " + w.where + " " + member_set(id, family) + " { type mark; }");
    }
  }
}

void add_sticky_sets(Writer& w, const OutputPlan& plan, size_t index, const rule_entry& e, int family) {
  for (const auto& u : plan.uplinks) {
    if (u.family != family) continue;
    std::string flags = "flags dynamic";
    // mwan3's `timeout 0` is an ipset entry that never expires: an nft set without a timeout.
    if (e.sticky_timeout_s != 0) flags += ",timeout; timeout " + std::to_string(e.sticky_timeout_s) + "s";
    w.line("add set " + w.where + " " + sticky_set(index, u.id, family) + " { type " + addr_type(family) +
           "; " + flags + "; }");
  }
}

// rule<i>_v4: the policy's decision for a packet that matched rule i, then accept (the route chain
// re-routes by the new mark).
void add_rule_chain(Writer& w, const OutputPlan& plan, size_t index, const rule_entry& e, int family) {
  const std::string chain = rule_chain(index, family);
  w.line("add chain " + w.where + " " + chain);
  if (is_builtin(e.policy_id)) {
    w.rule(chain, set_mark(plan.marks, builtin_mark(e.policy_id, plan.marks)) + " accept");
    return;
  }
  const std::string bits = our_bits(plan.marks);
  const std::string saddr = ip_word(family) + " saddr";
  if (e.sticky != 0) {
    add_sticky_sets(w, plan, index, e, family);
    for (const auto& u : plan.uplinks) {
      if (u.family != family) continue;
      w.rule(chain, cat({bits, " == 0 ", saddr, " @", sticky_set(index, u.id, family), " jump ",
                         mark_chain(u.mark)}));
      w.rule(chain, cat({bits, " == ", hex(u.mark), " ", bits, " != @", member_set(e.policy_id, family),
                         " jump mark_clear"}));
    }
  }
  w.rule(chain, bits + " == 0 numgen random mod " + std::to_string(kNumgenModulus) + " vmap @" +
                    policy_map(e.policy_id, family));
  if (e.sticky != 0) {
    for (const auto& u : plan.uplinks) {
      if (u.family != family) continue;
      w.rule(chain, cat({bits, " == ", hex(u.mark), " update @", sticky_set(index, u.id, family), " { ",
                         saddr, " }"}));
    }
  }
  w.rule(chain, "accept");
}

void add_output_chain(Writer& w, const OutputPlan& plan) {
  const std::string bits = our_bits(plan.marks);
  w.line("add chain " + w.where + " output { type route hook output priority mangle; policy accept; }");
  w.rule("output", bits + " != 0 return");
  std::set<uint32_t> restored;
  for (const auto& u : plan.uplinks) {
    if (!restored.insert(u.mark).second) continue;
    w.rule("output", "ct mark & " + hex(plan.marks.mask) + " == " + hex(u.mark) + " " +
                         set_mark(plan.marks, u.mark) + " accept");
  }
  for (int family : {4, 6}) {
    w.rule("output", ip_word(family) + " daddr @connected" + fam_suffix(family) + " " +
                         set_mark(plan.marks, plan.marks.default_mark) + " accept");
  }
  const auto& rules = *plan.rules;
  for (size_t i = 0; i < rules.entries.size() && i < rules.info.size(); ++i) {
    for (int family : {4, 6}) {
      const std::string match = rule_match(rules.entries[i], rules.info[i], family);
      if (match.empty()) continue;
      add_rule_chain(w, plan, i, rules.entries[i], family);
      w.rule("output", match + " goto " + rule_chain(i, family));
    }
  }
}

bool is_quotable_device(const std::string& device) {
  if (device.empty() || device.size() > 15) return false;
  return std::none_of(device.begin(), device.end(), [](char c) {
    const auto byte = static_cast<unsigned char>(c);
    return byte <= ' ' || byte == 0x7f || c == '"' || c == '\\';
  });
}

void add_source_fix(Writer& w, const OutputPlan& plan) {
  w.line("add chain " + w.where +
         " source_fix { type nat hook postrouting priority srcnat; policy accept; }");
  for (const auto& u : plan.uplinks) {
    if (!is_quotable_device(u.device)) continue;
    w.rule("source_fix", "meta nfproto " + nfproto(u.family) + " oifname \"" + u.device + "\" " +
                             our_bits(plan.marks) + " == " + hex(u.mark) +
                             " fib saddr type local fib saddr . oif type != local masquerade");
  }
}

std::string elements(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "{ " : ", ") + item;
  return out + " }";
}

void add_policy_elements(Writer& w, uint32_t id, int family, const policy::FamilyPolicy& fp) {
  w.line("flush map " + w.where + " " + policy_map(id, family));
  w.line("flush set " + w.where + " " + member_set(id, family));
  std::vector<std::string> ranges;
  std::vector<std::string> members;
  const auto& t = fp.table;
  if (t.thresholds.empty()) {
    ranges.push_back("0-" + std::to_string(kNumgenMax) + " : jump " + mark_chain(t.fallback_mark));
  }
  uint64_t lo = 0;
  for (size_t k = 0; k < t.thresholds.size() && k < t.marks.size(); ++k) {
    const uint64_t hi = std::min<uint64_t>(t.thresholds[k], kNumgenMax);
    if (lo <= hi)
      ranges.push_back(std::to_string(lo) + "-" + std::to_string(hi) + " : jump " + mark_chain(t.marks[k]));
    lo = static_cast<uint64_t>(t.thresholds[k]) + 1;
    members.push_back(hex(t.marks[k]));
  }
  w.line("add element " + w.where + " " + policy_map(id, family) + " " + elements(ranges));
  if (!members.empty())
    w.line("add element " + w.where + " " + member_set(id, family) + " " + elements(members));
}

}  // namespace

std::string output_table_name(const std::string& instance) {
  if (instance.empty() || instance == "default") return "uplinkd-out";
  std::string name = "uplinkd-out_";
  for (char c : instance) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                    c == '-' || c == '.';
    name += ok ? c : '_';
  }
  return name;
}

std::vector<OutputUplink> output_uplinks(const config::Config& cfg) {
  std::vector<OutputUplink> out;
  for (const auto& i : cfg.interfaces) {
    const uint32_t mark = config::mark_for_id(i.id, cfg.globals.mmx_mask);
    if (!i.enabled || mark == 0) continue;
    out.push_back({i.id, mark, i.device, i.family == config::Family::Ipv6 ? 6 : 4});
  }
  return out;
}

std::string rule_match(const rule_entry& e, const policy::RuleInfo& info, int family) {
  if (e.family != 0 && e.family != family) return "";
  if (e.src_ifindex != 0 || !info.src_iface.empty()) return "";  // no input interface on OUTPUT
  const std::string src = addresses(e.src, e.n_src, family);
  const std::string dst = addresses(e.dst, e.n_dst, family);
  if ((e.n_src != 0 && src.empty()) || (e.n_dst != 0 && dst.empty())) return "";
  std::string m = "meta nfproto " + nfproto(family);
  if (e.proto != 0) m += " meta l4proto " + std::to_string(e.proto);
  if (!src.empty()) m += " " + ip_word(family) + " saddr " + src;
  if (e.n_sport != 0) m += " th sport " + ports(e.sport, e.n_sport);
  if (!dst.empty()) m += " " + ip_word(family) + " daddr " + dst;
  if (e.n_dport != 0) m += " th dport " + ports(e.dport, e.n_dport);
  if (e.set_id != 0)
    m += " " + ip_word(family) + " daddr @ipset" + std::to_string(e.set_id) + fam_suffix(family);
  return m;
}

std::string table_commands(const OutputPlan& plan) {
  Writer w{"inet " + plan.table, {}};
  // `add` then `delete` makes the delete valid whether or not a table is there (ct_mark.cpp).
  w.line("add table " + w.where);
  w.line("delete table " + w.where);
  w.line("add table " + w.where);
  // Chains before the maps that jump to them: nft refuses a verdict element naming a chain that
  // was added after its map in the same transaction.
  add_mark_chains(w, plan);
  add_sets(w, plan);
  add_output_chain(w, plan);
  add_source_fix(w, plan);
  return w.text;
}

std::string policy_commands(const OutputPlan& plan, const policy::PolicyTable& resolved,
                            const std::map<std::string, uint32_t>& policy_ids) {
  Writer w{"inet " + plan.table, {}};
  for (const auto& [name, id] : policy_ids) {
    if (std::find(plan.policy_ids.begin(), plan.policy_ids.end(), id) == plan.policy_ids.end()) continue;
    const policy::PolicyState* p = resolved.find(name);
    if (p == nullptr) continue;
    add_policy_elements(w, id, 4, p->ipv4);
    add_policy_elements(w, id, 6, p->ipv6);
  }
  return w.text;
}

std::string address_set_commands(const std::string& table, const std::string& set_base,
                                 const std::vector<netlink::SetPrefix>& prefixes) {
  Writer w{"inet " + table, {}};
  for (int family : {4, 6}) {
    std::vector<std::string> items;
    for (const auto& p : prefixes) {
      if ((family == 6) != p.address.is_v6()) continue;
      items.push_back(p.str());
    }
    w.line("flush set " + w.where + " " + set_base + fam_suffix(family));
    if (!items.empty())
      w.line("add element " + w.where + " " + set_base + fam_suffix(family) + " " + elements(items));
  }
  return w.text;
}

std::string sticky_flush_commands(const OutputPlan& plan, uint32_t id) {
  Writer w{"inet " + plan.table, {}};
  const auto uplink = std::find_if(plan.uplinks.begin(), plan.uplinks.end(),
                                   [id](const OutputUplink& u) { return u.id == id; });
  if (uplink == plan.uplinks.end()) return "";
  const auto& rules = *plan.rules;
  for (size_t i = 0; i < rules.entries.size() && i < rules.info.size(); ++i) {
    const rule_entry& e = rules.entries[i];
    if (e.sticky == 0 || is_builtin(e.policy_id)) continue;
    if (rule_match(e, rules.info[i], uplink->family).empty()) continue;
    w.line("flush set " + w.where + " " + sticky_set(i, id, uplink->family));
  }
  return w.text;
}

}  // namespace uplinkd::local_out
