#include "policy/policy_table.h"

#include <algorithm>
#include <bit>
#include <cstdio>
#include <stdexcept>
#include <utility>

namespace uplinkd::policy {
namespace {

// ceil_scaled_to_hash_space() is exact below this; 16 members of weight INT_MAX stay under 2^35.
constexpr uint64_t kMaxTotalWeight = uint64_t{1} << 47;

std::string hex(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%X", static_cast<unsigned>(v));
  return buf;
}

const config::MemberConfig* find_member(const config::Config& cfg, const std::string& name) {
  for (const auto& m : cfg.members) {
    if (m.name == name) {
      return &m;
    }
  }
  return nullptr;
}

const char* family_word(config::Family f) { return f == config::Family::Ipv4 ? "ipv4" : "ipv6"; }

// ceil(part * 2^32 / total) without overflow for part <= total < kMaxTotalWeight, in two 16-bit steps of
// long division: OpenWrt's 32-bit targets have no 128-bit integer to do it in one.
uint64_t ceil_scaled_to_hash_space(uint64_t part, uint64_t total) {
  const uint64_t step1 = part << 16;
  const uint64_t q1 = step1 / total;
  const uint64_t step2 = (step1 % total) << 16;
  const uint64_t q2 = step2 / total;
  const bool inexact = step2 % total != 0;
  return (q1 << 16) + q2 + (inexact ? 1 : 0);
}

// mwan3 uses a member only while its interface is enabled and online, of the family being built, and
// with a metric of at most 256 (mwan3_set_policy in lib/mwan3/mwan3.sh).
const config::InterfaceConfig* usable_interface(const config::Config& cfg, const config::MemberConfig& m,
                                                config::Family family, const OnlineInterfaces& online) {
  if (m.metric > kMaxMemberMetric) {
    return nullptr;
  }
  const config::InterfaceConfig* iface = cfg.find_interface(m.interface);
  if (iface == nullptr || !iface->enabled || iface->family != family) {
    return nullptr;
  }
  return online.contains(iface->name) ? iface : nullptr;
}

// The members of `policy` that could be used in `family`, in use_member order.
struct Candidate {
  const config::MemberConfig* member;
  const config::InterfaceConfig* iface;
};

std::vector<Candidate> online_candidates(const config::Config& cfg, const config::PolicyConfig& policy,
                                         config::Family family, const OnlineInterfaces& online) {
  std::vector<Candidate> out;
  for (const auto& name : policy.use_member) {
    const config::MemberConfig* m = find_member(cfg, name);
    if (m == nullptr) {
      continue;  // config parsing rejects this; mwan3 would skip it too
    }
    if (const config::InterfaceConfig* iface = usable_interface(cfg, *m, family, online)) {
      out.push_back({m, iface});
    }
  }
  return out;
}

// mwan3 keeps the members with the lowest metric; equal metrics all stay (they balance).
std::vector<Candidate> lowest_metric_only(const std::vector<Candidate>& candidates) {
  if (candidates.empty()) {
    return {};
  }
  const auto lowest =
      std::min_element(candidates.begin(), candidates.end(), [](const auto& a, const auto& b) {
        return a.member->metric < b.member->metric;
      })->member->metric;
  std::vector<Candidate> out;
  for (const auto& c : candidates) {
    if (c.member->metric == lowest) {
      out.push_back(c);
    }
  }
  return out;
}

ActiveMember active_member(const Candidate& c, const MarkSpace& marks) {
  ActiveMember a;
  a.member = c.member->name;
  a.interface = c.iface->name;
  a.id = c.iface->id;
  a.mark = marks.interface_mark(c.iface->id);
  a.metric = c.member->metric;
  a.weight = c.member->weight;
  return a;
}

// `mwan3 policies` prints weight*100/total with shell integer arithmetic: truncated, so three equal
// members show 33% each.
void set_shares(std::vector<ActiveMember>& members, uint64_t total_weight) {
  for (auto& m : members) {
    m.share_pct = static_cast<int>(static_cast<uint64_t>(m.weight) * 100 / total_weight);
  }
}

PickTable pick_table_for(const std::vector<ActiveMember>& members, uint32_t last_resort_mark) {
  if (members.empty()) {
    return PickTable{{}, {}, last_resort_mark};
  }
  std::vector<uint64_t> weights;
  std::vector<uint32_t> marks;
  for (const auto& m : members) {
    weights.push_back(static_cast<uint64_t>(m.weight));
    marks.push_back(m.mark);
  }
  return build_pick_table(weights, marks, last_resort_mark);
}

size_t members_of_family(const config::Config& cfg, const config::PolicyConfig& policy, config::Family f) {
  size_t n = 0;
  for (const auto& name : policy.use_member) {
    const config::MemberConfig* m = find_member(cfg, name);
    if (m == nullptr || m->metric > kMaxMemberMetric) {
      continue;
    }
    const config::InterfaceConfig* iface = cfg.find_interface(m->interface);
    n += iface != nullptr && iface->family == f ? 1 : 0;
  }
  return n;
}

// ---- JSON and text ------------------------------------------------------------------------------

nlohmann::json member_json(const ActiveMember& m) {
  return {{"interface", m.interface}, {"percent", m.share_pct}, {"member", m.member}, {"id", m.id},
          {"mark", m.mark},           {"metric", m.metric},     {"weight", m.weight}};
}

// mwan3 appends the first lowest-metric member to the policy chain and inserts each later one at the top,
// so its chain, and everything listed from it, runs in reverse use_member order.
nlohmann::json chain_json(const FamilyPolicy& fp) {
  nlohmann::json out = nlohmann::json::array();
  for (auto it = fp.members.rbegin(); it != fp.members.rend(); ++it) {
    out.push_back(member_json(*it));
  }
  return out;
}

// One family's section: each policy's name, then its members with their shares, or its last_resort word
// when no member is online. Keys of a JSON object iterate in byte order, mwan3's `sort -u` order.
std::string family_text(const std::string& heading, const nlohmann::json& family,
                        const nlohmann::json& last_resort) {
  std::string out = heading + "\n";
  for (const auto& [policy, members] : family.items()) {
    out += policy + ":\n";
    if (members.empty()) {
      const auto lr = last_resort.value(policy, nlohmann::json::object());
      out += " " + lr.value("action", std::string("unreachable")) + "\n";
      continue;
    }
    for (const auto& m : members) {
      out += " " + m.value("interface", std::string("?")) + " (" + std::to_string(m.value("percent", 0)) +
             "%)\n";
    }
  }
  return out + "\n";
}

}  // namespace

// ---- marks --------------------------------------------------------------------------------------

MarkSpace MarkSpace::from_mask(uint32_t mmx_mask) {
  MarkSpace s;
  s.mask = mmx_mask;
  s.bits = std::popcount(mmx_mask);
  if (s.bits < 3) {
    throw std::invalid_argument("mmx_mask " + hex(mmx_mask) + " has " + std::to_string(s.bits) +
                                " bit(s) set; at least 3 are needed (2^bits - 4 interface ids)");
  }
  // 64-bit so a full 32-bit mask gives mmdefault 0xFFFFFFFF rather than overflowing.
  s.mmdefault = static_cast<uint32_t>((uint64_t{1} << s.bits) - 1);
  s.blackhole_id = s.mmdefault - 2;
  s.unreachable_id = s.mmdefault - 1;
  s.max_interfaces = s.mmdefault - 3;
  s.blackhole_mark = config::mark_for_id(s.blackhole_id, mmx_mask);
  s.unreachable_mark = config::mark_for_id(s.unreachable_id, mmx_mask);
  s.default_mark = config::mark_for_id(s.mmdefault, mmx_mask);  // = the mask
  return s;
}

uint32_t MarkSpace::interface_mark(uint32_t id) const {
  if (id == 0 || id > max_interfaces) {
    return 0;
  }
  return config::mark_for_id(id, mask);
}

LastResort parse_last_resort(std::string_view word) {
  if (word == "blackhole") {
    return LastResort::Blackhole;
  }
  if (word == "default") {
    return LastResort::Default;
  }
  return LastResort::Unreachable;
}

std::string_view last_resort_word(LastResort last_resort) {
  switch (last_resort) {
    case LastResort::Blackhole:
      return "blackhole";
    case LastResort::Default:
      return "default";
    case LastResort::Unreachable:
      break;
  }
  return "unreachable";
}

uint32_t last_resort_mark(LastResort last_resort, const MarkSpace& marks) {
  switch (last_resort) {
    case LastResort::Blackhole:
      return marks.blackhole_mark;
    case LastResort::Default:
      return marks.default_mark;
    case LastResort::Unreachable:
      break;
  }
  return marks.unreachable_mark;
}

std::optional<uint32_t> builtin_policy_mark(std::string_view use_policy, const MarkSpace& marks) {
  if (use_policy == "default") {
    return marks.default_mark;
  }
  if (use_policy == "unreachable") {
    return marks.unreachable_mark;
  }
  if (use_policy == "blackhole") {
    return marks.blackhole_mark;
  }
  return std::nullopt;
}

// ---- pick table ---------------------------------------------------------------------------------

std::optional<size_t> PickTable::index_for(uint32_t flow_hash) const {
  if (thresholds.empty()) {
    return std::nullopt;
  }
  for (size_t i = 0; i < thresholds.size(); ++i) {
    if (flow_hash <= thresholds[i]) {
      return i;
    }
  }
  return thresholds.size() - 1;  // only for a table without its UINT32_MAX end, as the classifier does
}

uint32_t PickTable::mark_for(uint32_t flow_hash) const {
  const std::optional<size_t> i = index_for(flow_hash);
  return i ? marks[*i] : fallback_mark;
}

PickTable build_pick_table(const std::vector<uint64_t>& weights, const std::vector<uint32_t>& marks,
                           uint32_t fallback_mark) {
  if (weights.empty() || weights.size() != marks.size()) {
    throw std::invalid_argument("pick table: " + std::to_string(weights.size()) + " weights for " +
                                std::to_string(marks.size()) + " marks; need as many, at least one");
  }
  if (weights.size() > kMaxPolicyMembers) {
    throw std::invalid_argument("pick table: " + std::to_string(weights.size()) + " members; at most " +
                                std::to_string(kMaxPolicyMembers) + " fit");
  }
  uint64_t total = 0;
  for (uint64_t w : weights) {
    total += w;
  }
  if (total == 0 || total >= kMaxTotalWeight) {
    throw std::invalid_argument("pick table: weights add up to " + std::to_string(total) +
                                "; accepted: 1 to 2^47 - 1");
  }
  // Member i's last hash is ceil(cumulative_i * 2^32 / total) - 1, so its count of the 2^32 hashes is
  // within one of weight_i * 2^32 / total, any evenly spaced sample splits the same way, and the last
  // member ends at UINT32_MAX. The ceiling is at least 1 (cumulative >= 1), so nothing wraps.
  PickTable t;
  t.marks = marks;
  t.fallback_mark = fallback_mark;
  uint64_t cumulative = 0;
  for (uint64_t w : weights) {
    cumulative += w;
    t.thresholds.push_back(static_cast<uint32_t>(ceil_scaled_to_hash_space(cumulative, total) - 1));
  }
  return t;
}

// ---- resolution ---------------------------------------------------------------------------------

const ActiveMember* FamilyPolicy::pick(uint32_t flow_hash) const {
  const std::optional<size_t> i = table.index_for(flow_hash);
  return i ? &members[*i] : nullptr;
}

policy_entry to_policy_entry(const FamilyPolicy& fp) {
  policy_entry e{};
  e.n_members = static_cast<__u32>(fp.members.size());
  e.fallback_mark = fp.last_resort_mark;
  for (size_t i = 0; i < fp.members.size(); ++i) {
    e.threshold[i] = fp.table.thresholds[i];
    e.mark[i] = fp.table.marks[i];
    // The uplinks map stops at UPLINKD_MAX_UPLINKS (256) ids, well inside 16 bits.
    e.uplink_id[i] = static_cast<__u16>(fp.members[i].id);
  }
  return e;
}

const PolicyState* PolicyTable::find(std::string_view name) const {
  for (const auto& p : policies) {
    if (p.name == name) {
      return &p;
    }
  }
  return nullptr;
}

void check_policy_limits(const config::Config& cfg) {
  for (const auto& p : cfg.policies) {
    for (config::Family f : {config::Family::Ipv4, config::Family::Ipv6}) {
      const size_t n = members_of_family(cfg, p, f);
      if (n <= kMaxPolicyMembers) {
        continue;
      }
      throw config::ConfigError(cfg.file, p.line, "use_member",
                                "policy '" + p.name + "' has " + std::to_string(n) + " " + family_word(f) +
                                    " members; accepted: at most " + std::to_string(kMaxPolicyMembers) +
                                    " per address family (the size of uplinkd's per-policy pick table)");
    }
  }
}

FamilyPolicy resolve_policy(const config::Config& cfg, const config::PolicyConfig& policy,
                            config::Family family, const OnlineInterfaces& online, const MarkSpace& marks) {
  FamilyPolicy fp;
  fp.last_resort = parse_last_resort(policy.last_resort);
  fp.last_resort_mark = last_resort_mark(fp.last_resort, marks);
  for (const Candidate& c : lowest_metric_only(online_candidates(cfg, policy, family, online))) {
    ActiveMember a = active_member(c, marks);
    if (a.mark == 0) {
      continue;  // an id beyond the mask; config parsing rejects such a configuration
    }
    fp.total_weight += static_cast<uint64_t>(a.weight);
    fp.members.push_back(std::move(a));
  }
  set_shares(fp.members, fp.total_weight);
  fp.table = pick_table_for(fp.members, fp.last_resort_mark);
  return fp;
}

PolicyTable resolve_policies(const config::Config& cfg, const OnlineInterfaces& online) {
  check_policy_limits(cfg);
  PolicyTable t;
  t.marks = MarkSpace::from_mask(cfg.globals.mmx_mask);
  for (const auto& p : cfg.policies) {
    PolicyState s;
    s.name = p.name;
    s.line = p.line;
    s.last_resort = parse_last_resort(p.last_resort);
    s.ipv4 = resolve_policy(cfg, p, config::Family::Ipv4, online, t.marks);
    s.ipv6 = resolve_policy(cfg, p, config::Family::Ipv6, online, t.marks);
    t.policies.push_back(std::move(s));
  }
  std::sort(t.policies.begin(), t.policies.end(),
            [](const PolicyState& a, const PolicyState& b) { return a.name < b.name; });
  return t;
}

// ---- output -------------------------------------------------------------------------------------

nlohmann::json policies_json(const PolicyTable& table) {
  nlohmann::json out = {{"ipv4", nlohmann::json::object()},
                        {"ipv6", nlohmann::json::object()},
                        {"last_resort", nlohmann::json::object()}};
  for (const auto& p : table.policies) {
    out["ipv4"][p.name] = chain_json(p.ipv4);
    out["ipv6"][p.name] = chain_json(p.ipv6);
    out["last_resort"][p.name] = {{"action", std::string(last_resort_word(p.last_resort))},
                                  {"mark", last_resort_mark(p.last_resort, table.marks)}};
  }
  return out;
}

std::string format_policies(const nlohmann::json& policies) {
  const auto last_resort = policies.value("last_resort", nlohmann::json::object());
  std::string out =
      family_text("Current ipv4 policies:", policies.value("ipv4", nlohmann::json::object()), last_resort);
  if (policies.contains("ipv6")) {
    out += family_text("Current ipv6 policies:", policies["ipv6"], last_resort);
  }
  return out;
}

std::string format_policies(const PolicyTable& table) { return format_policies(policies_json(table)); }

}  // namespace uplinkd::policy
