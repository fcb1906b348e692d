// mwan3 rule options -> struct rule_entry. Each option is read by one function that knows mwan3's syntax
// for it (mwan3.sh, mwan3_set_user_iptables_rule) and says what it accepts when a value does not fit.
#include "policy/rule_compiler.h"

#include <sys/socket.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstring>
#include <optional>
#include <set>
#include <stdexcept>
#include <string_view>
#include <utility>

#include "config/uci.h"

namespace uplinkd::policy {
namespace {

using config::ConfigError;
using config::RuleConfig;

std::string quote(std::string_view s) { return "'" + std::string(s) + "'"; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front())) != 0) {
    s.remove_prefix(1);
  }
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back())) != 0) {
    s.remove_suffix(1);
  }
  return s;
}

std::optional<unsigned long> parse_unsigned(std::string_view s) {
  if (s.empty() || s.size() > 10) {
    return std::nullopt;
  }
  unsigned long v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v, 10);
  if (ec != std::errc() || end != s.data() + s.size()) {
    return std::nullopt;
  }
  return v;
}

// ---- protocols --------------------------------------------------------------------------------

struct ProtoName {
  const char* name;
  uint8_t number;
};

// What mwan3 users write (iptables -p takes names from /etc/protocols); the first name of a number is
// the one shown.
constexpr ProtoName kProtoNames[] = {
    {"icmp", 1}, {"igmp", 2},    {"tcp", 6},        {"udp", 17},   {"gre", 47},      {"esp", 50},
    {"ah", 51},  {"icmpv6", 58}, {"ipv6-icmp", 58}, {"sctp", 132}, {"udplite", 136},
};
constexpr const char* kProtoAccepted =
    "all, tcp, udp, icmp, icmpv6, igmp, gre, esp, ah, sctp, udplite, or a protocol number 0 to 255";

constexpr uint8_t kProtoIcmp = 1;
constexpr uint8_t kProtoTcp = 6;
constexpr uint8_t kProtoUdp = 17;
constexpr uint8_t kProtoIcmpv6 = 58;

std::string proto_word(uint8_t proto) {
  if (proto == 0) {
    return "all";
  }
  for (const ProtoName& p : kProtoNames) {
    if (p.number == proto) {
      return p.name;
    }
  }
  return std::to_string(proto);
}

// ---- addresses and ports as the ABI holds them ------------------------------------------------

int prefix_bits(uint8_t family) { return family == 4 ? 32 : 128; }

std::string address_text(const addr_match& a) {
  IpAddress ip;
  ip.family = a.family == 4 ? AF_INET : AF_INET6;
  std::memcpy(ip.bytes.data(), a.addr, a.family == 4 ? 4 : 16);
  std::string s = ip.str();
  if (a.prefixlen < prefix_bits(a.family)) {
    s += "/" + std::to_string(a.prefixlen);
  }
  return s;
}

std::string port_text(const port_range& p) {
  return p.lo == p.hi ? std::to_string(p.lo) : std::to_string(p.lo) + "-" + std::to_string(p.hi);
}

// Bits past the prefix are zero.
bool host_bits_clear(const uint8_t* addr, int bytes, int prefixlen) {
  for (int bit = prefixlen; bit < bytes * 8; ++bit) {
    if ((addr[bit / 8] & (0x80U >> (bit % 8))) != 0) {
      return false;
    }
  }
  return true;
}

void clear_host_bits(uint8_t* addr, int bytes, int prefixlen) {
  for (int bit = prefixlen; bit < bytes * 8; ++bit) {
    addr[bit / 8] = static_cast<uint8_t>(addr[bit / 8] & ~(0x80U >> (bit % 8)));
  }
}

// A dotted IPv4 netmask (255.255.255.0) as iptables also takes it; nullopt when not contiguous.
std::optional<int> netmask_length(std::string_view text) {
  auto mask = IpAddress::parse(text);
  if (!mask || !mask->is_v4()) {
    return std::nullopt;
  }
  int len = 0;
  while (len < 32 && (mask->bytes[len / 8] & (0x80U >> (len % 8))) != 0) {
    ++len;
  }
  if (!host_bits_clear(mask->bytes.data(), 4, len)) {
    return std::nullopt;
  }
  return len;
}

// ---- reading one rule -------------------------------------------------------------------------

// One entry of an option's comma list, with the line it was written on.
struct Token {
  std::string text;
  int line = 0;
};

std::vector<Token> split_commas(std::string_view text, int line) {
  std::vector<Token> out;
  size_t start = 0;
  for (;;) {
    size_t comma = text.find(',', start);
    std::string_view part = text.substr(start, comma == std::string_view::npos ? text.npos : comma - start);
    out.push_back(Token{std::string(trim(part)), line});
    if (comma == std::string_view::npos) {
      return out;
    }
    start = comma + 1;
  }
}

class RuleReader {
 public:
  RuleReader(const config::Config& cfg, const RuleConfig& rule, const config::uci::Section* source)
      : file_(cfg.file), rule_(rule), source_(source) {}

  [[nodiscard]] std::string where() const { return "rule " + quote(rule_.name); }
  [[nodiscard]] const RuleConfig& rule() const { return rule_; }

  // The option's value; nullopt when absent or empty (mwan3: `[ -z "$src_ip" ] && unset src_ip`).
  [[nodiscard]] std::optional<std::string> text(std::string_view option) const {
    auto it = rule_.options.find(std::string(option));
    if (it == rule_.options.end() || trim(it->second).empty()) {
      return std::nullopt;
    }
    return it->second;
  }

  // Where the option was written: its line in `source`, else the rule's header line.
  [[nodiscard]] int line_of(std::string_view option) const {
    const config::uci::Option* o = source_option(option);
    return o != nullptr ? o->line : rule_.line;
  }

  // The option's comma list, each entry with its own line when the source is known. A `list` option's
  // values were joined with ',' by the config reader, so splitting the source values one by one gives the
  // same entries.
  [[nodiscard]] std::vector<Token> tokens(std::string_view option) const {
    std::optional<std::string> joined = text(option);
    if (!joined) {
      return {};
    }
    std::vector<Token> whole = split_commas(*joined, rule_.line);
    const config::uci::Option* o = source_option(option);
    if (o == nullptr) {
      return whole;
    }
    std::vector<Token> located;
    for (const config::uci::Value& v : o->values) {
      for (Token& t : split_commas(v.text, v.line)) {
        located.push_back(std::move(t));
      }
    }
    bool same = located.size() == whole.size() &&
                std::equal(located.begin(), located.end(), whole.begin(),
                           [](const Token& a, const Token& b) { return a.text == b.text; });
    return same ? located : whole;
  }

  [[noreturn]] void fail(int line, const std::string& option, const std::string& message) const {
    throw ConfigError(file_, line, option, message);
  }
  // "'<value>' <problem> in rule 'x'; accepted: <accepted>", at the value's line.
  [[noreturn]] void fail_value(const Token& t, const std::string& option, const std::string& problem,
                               const std::string& accepted) const {
    fail(t.line, option, quote(t.text) + " " + problem + " in " + where() + "; accepted: " + accepted);
  }

 private:
  [[nodiscard]] const config::uci::Option* source_option(std::string_view option) const {
    return source_ == nullptr ? nullptr : source_->find(option);
  }

  const std::string& file_;
  const RuleConfig& rule_;
  const config::uci::Section* source_;
};

uint8_t read_family(const RuleReader& r) {
  std::optional<std::string> f = r.text("family");
  if (!f || *f == "any") {
    return 0;
  }
  if (*f == "ipv4") {
    return 4;
  }
  if (*f == "ipv6") {
    return 6;
  }
  r.fail_value(Token{*f, r.line_of("family")}, "family", "is not a family", "any, ipv4, ipv6");
}

uint8_t read_proto(const RuleReader& r, uint8_t family) {
  std::optional<std::string> p = r.text("proto");
  if (!p) {
    return 0;
  }
  Token t{std::string(trim(*p)), r.line_of("proto")};
  std::string word = t.text;
  std::transform(word.begin(), word.end(), word.begin(), [](unsigned char c) { return std::tolower(c); });
  std::optional<uint8_t> proto;
  if (word == "all") {
    proto = 0;
  }
  for (const ProtoName& n : kProtoNames) {
    if (word == n.name) {
      proto = n.number;
    }
  }
  if (!proto) {
    auto number = parse_unsigned(word);
    if (!number || *number > 255) {
      r.fail_value(t, "proto", "is not a protocol", kProtoAccepted);
    }
    proto = static_cast<uint8_t>(*number);
  }
  // ICMP and ICMPv6 are different protocols: each never matches a packet of the other family.
  if (*proto == kProtoIcmp && family == 6) {
    r.fail_value(t, "proto", "never matches IPv6 packets (the rule has family ipv6)",
                 "icmpv6 for IPv6, or family ipv4/any");
  }
  if (*proto == kProtoIcmpv6 && family == 4) {
    r.fail_value(t, "proto", "never matches IPv4 packets (the rule has family ipv4)",
                 "icmp for IPv4, or family ipv6/any");
  }
  return *proto;
}

addr_match parse_address(const RuleReader& r, const Token& t, const std::string& option, uint8_t family) {
  const std::string accepted =
      "addresses or networks such as 192.168.1.10, 10.0.0.0/8, 2001:db8::/32, separated by commas";
  std::string_view text = t.text;
  size_t slash = text.find('/');
  auto ip = IpAddress::parse(text.substr(0, slash));
  if (!ip) {
    r.fail_value(t, option, "is not an address or network", accepted);
  }
  addr_match m{};
  m.family = ip->is_v4() ? 4 : 6;
  const int bits = prefix_bits(m.family);
  int prefixlen = bits;
  if (slash != std::string_view::npos) {
    std::string_view len_text = text.substr(slash + 1);
    auto len = parse_unsigned(len_text);
    std::optional<int> dotted =
        m.family == 4 && len_text.find('.') != len_text.npos ? netmask_length(len_text) : std::nullopt;
    if (dotted) {
      prefixlen = *dotted;
    } else if (len && *len <= static_cast<unsigned long>(bits)) {
      prefixlen = static_cast<int>(*len);
    } else {
      r.fail_value(
          t, option, "has a bad prefix length",
          m.family == 4 ? "/0 to /32 for IPv4 (or a netmask such as /255.255.255.0)" : "/0 to /128 for IPv6");
    }
  }
  if (family != 0 && m.family != family) {
    r.fail_value(t, option,
                 std::string("is not an ") + (family == 4 ? "IPv4" : "IPv6") +
                     " address (the rule has family " + (family == 4 ? "ipv4" : "ipv6") + ")",
                 std::string(family == 4 ? "IPv4" : "IPv6") + " addresses, or change option family");
  }
  std::memcpy(m.addr, ip->bytes.data(), m.family == 4 ? 4 : 16);
  m.prefixlen = static_cast<uint8_t>(prefixlen);
  if (!host_bits_clear(m.addr, m.family == 4 ? 4 : 16, prefixlen)) {
    addr_match network = m;
    clear_host_bits(network.addr, network.family == 4 ? 4 : 16, prefixlen);
    addr_match host = m;
    host.prefixlen = static_cast<uint8_t>(bits);
    r.fail_value(t, option, "has host bits set past the prefix length",
                 "the network " + address_text(network) + ", or the single address " + address_text(host));
  }
  return m;
}

// src_ip / dest_ip into the entry's array; returns the count.
uint8_t read_addresses(const RuleReader& r, const std::string& option, uint8_t family, addr_match* out) {
  std::vector<Token> tokens = r.tokens(option);
  if (tokens.size() > UPLINKD_RULE_MAX_ADDRS) {
    r.fail_value(tokens[UPLINKD_RULE_MAX_ADDRS], option,
                 "is address number " + std::to_string(UPLINKD_RULE_MAX_ADDRS + 1),
                 "at most " + std::to_string(UPLINKD_RULE_MAX_ADDRS) +
                     " addresses or networks per option (use option ipset for longer lists)");
  }
  for (size_t i = 0; i < tokens.size(); ++i) {
    out[i] = parse_address(r, tokens[i], option, family);
  }
  return static_cast<uint8_t>(tokens.size());
}

port_range parse_port_range(const RuleReader& r, const Token& t, const std::string& option) {
  const std::string accepted =
      "ports 1 to 65535 and ranges such as 1000-2000 or 1000:2000, separated by commas";
  std::string_view text = t.text;
  size_t sep = text.find_first_of("-:");
  auto lo = parse_unsigned(text.substr(0, sep));
  auto hi = sep == std::string_view::npos ? lo : parse_unsigned(text.substr(sep + 1));
  if (!lo || !hi) {
    r.fail_value(t, option, "is not a port or port range", accepted);
  }
  if (*lo < 1 || *lo > 65535 || *hi < 1 || *hi > 65535) {
    r.fail_value(t, option, "is out of range", accepted);
  }
  if (*lo > *hi) {
    r.fail_value(t, option, "is a range whose start is above its end", accepted);
  }
  return port_range{static_cast<__u16>(*lo), static_cast<__u16>(*hi)};
}

uint8_t read_ports(const RuleReader& r, const std::string& option, uint8_t proto, port_range* out) {
  std::vector<Token> tokens = r.tokens(option);
  if (tokens.empty()) {
    return 0;
  }
  if (proto != kProtoTcp && proto != kProtoUdp) {
    // mwan3 logs "src_port will be ignored" and installs the rule without ports: it would then carry
    // every packet of the protocol, which is never what the person meant.
    r.fail(r.line_of(option), option,
           quote(r.text(option).value_or("")) + " needs proto tcp or udp in " + r.where() + " (proto is " +
               proto_word(proto) +
               "; mwan3 ignores ports then, so the rule would match all such traffic); accepted: "
               "option proto tcp or udp, or no " +
               option);
  }
  if (tokens.size() > UPLINKD_RULE_MAX_PORTS) {
    r.fail_value(tokens[UPLINKD_RULE_MAX_PORTS], option,
                 "is port entry number " + std::to_string(UPLINKD_RULE_MAX_PORTS + 1),
                 "at most " + std::to_string(UPLINKD_RULE_MAX_PORTS) + " ports or ranges per option");
  }
  for (size_t i = 0; i < tokens.size(); ++i) {
    out[i] = parse_port_range(r, tokens[i], option);
  }
  return static_cast<uint8_t>(tokens.size());
}

// A rule whose src_ip holds only one family and dest_ip only the other can never match: mwan3 would skip
// it for both families.
void check_address_families(const RuleReader& r, const rule_entry& e) {
  auto families = [](const addr_match* a, uint8_t n) {
    std::set<uint8_t> f;
    for (uint8_t i = 0; i < n; ++i) {
      f.insert(a[i].family);
    }
    return f;
  };
  std::set<uint8_t> src = families(e.src, e.n_src);
  std::set<uint8_t> dst = families(e.dst, e.n_dst);
  if (src.empty() || dst.empty()) {
    return;
  }
  for (uint8_t f : dst) {
    if (src.count(f) != 0) {
      return;
    }
  }
  Token first{address_text(e.dst[0]), r.line_of("dest_ip")};
  r.fail_value(first, "dest_ip",
               std::string("is ") + (e.dst[0].family == 4 ? "IPv4" : "IPv6") + " but src_ip holds only " +
                   (*src.begin() == 4 ? "IPv4" : "IPv6") + " addresses, so the rule can never match",
               "src_ip and dest_ip with addresses of a common family");
}

std::string read_ipset(const RuleReader& r) {
  std::optional<std::string> set = r.text("ipset");
  if (!set) {
    return "";
  }
  Token t{std::string(trim(*set)), r.line_of("ipset")};
  const std::string accepted = "one set name of 1 to 31 characters, no spaces or commas";
  if (t.text.find(',') != std::string::npos) {
    r.fail_value(t, "ipset", "names more than one set", accepted);
  }
  if (t.text.size() > 31 ||
      std::any_of(t.text.begin(), t.text.end(), [](unsigned char c) { return std::isspace(c) != 0; })) {
    r.fail_value(t, "ipset", "is not a set name", accepted);
  }
  return t.text;
}

uint8_t set_id_for(const RuleReader& r, const std::string& name, std::vector<std::string>& sets) {
  auto known = std::find(sets.begin(), sets.end(), name);
  if (known != sets.end()) {
    return static_cast<uint8_t>(known - sets.begin() + 1);
  }
  if (sets.size() >= UPLINKD_MAX_SETS) {
    r.fail_value(Token{name, r.line_of("ipset")}, "ipset",
                 "would be set number " + std::to_string(UPLINKD_MAX_SETS + 1),
                 "at most " + std::to_string(UPLINKD_MAX_SETS) + " different sets across all rules");
  }
  sets.push_back(name);
  return static_cast<uint8_t>(sets.size());
}

bool read_bool(const RuleReader& r, std::string_view option) {
  std::optional<std::string> v = r.text(option);
  if (!v) {
    return false;
  }
  if (*v == "1" || *v == "yes" || *v == "on" || *v == "true") {
    return true;
  }
  if (*v == "0" || *v == "no" || *v == "off" || *v == "false") {
    return false;
  }
  r.fail_value(Token{*v, r.line_of(option)}, std::string(option), "is not a boolean",
               "0/1, no/yes, off/on, false/true");
}

uint32_t read_timeout(const RuleReader& r) {
  std::optional<std::string> v = r.text("timeout");
  if (!v) {
    return 600;
  }
  auto n = parse_unsigned(*v);
  if (!n || *n < 1 || *n > 0xFFFFFFFFUL) {
    r.fail_value(Token{*v, r.line_of("timeout")}, "timeout", "is not a number of seconds",
                 "a whole number of seconds, 1 or more");
  }
  return static_cast<uint32_t>(*n);
}

uint32_t policy_id_for(const RuleReader& r, const std::map<std::string, uint32_t>& policy_ids) {
  const std::string& name = r.rule().use_policy;
  // mwan3 tests the three words before policy names, so a policy called "default" is never reached.
  if (name == "default") {
    return kPolicyIdDefault;
  }
  if (name == "unreachable") {
    return kPolicyIdUnreachable;
  }
  if (name == "blackhole") {
    return kPolicyIdBlackhole;
  }
  auto it = policy_ids.find(name);
  if (it == policy_ids.end()) {
    r.fail_value(Token{name, r.line_of("use_policy")}, "use_policy", "is not a policy",
                 "a policy name, or default, unreachable, blackhole");
  }
  if (it->second < kFirstUserPolicyId || it->second >= UPLINKD_MAX_POLICIES) {
    throw std::invalid_argument("policy '" + name + "' has id " + std::to_string(it->second) +
                                "; user policies take " + std::to_string(kFirstUserPolicyId) + " to " +
                                std::to_string(UPLINKD_MAX_POLICIES - 1));
  }
  return it->second;
}

bool is_builtin_policy(uint32_t id) { return id < kFirstUserPolicyId; }

uint32_t resolved_ifindex(const IfindexResolver& resolve, const std::string& src_iface) {
  uint32_t ifindex = resolve ? resolve(src_iface) : 0;
  return ifindex == 0 ? kUnresolvedIfindex : ifindex;
}

std::pair<rule_entry, RuleInfo> compile_rule(const RuleReader& r,
                                             const std::map<std::string, uint32_t>& policy_ids,
                                             const IfindexResolver& resolve, std::vector<std::string>& sets) {
  const RuleConfig& rule = r.rule();
  rule_entry e{};
  RuleInfo info;
  info.name = rule.name;
  info.line = rule.line;
  info.use_policy = rule.use_policy;

  e.family = read_family(r);
  e.proto = read_proto(r, e.family);
  e.n_src = read_addresses(r, "src_ip", e.family, e.src);
  e.n_dst = read_addresses(r, "dest_ip", e.family, e.dst);
  check_address_families(r, e);
  e.n_sport = read_ports(r, "src_port", e.proto, e.sport);
  e.n_dport = read_ports(r, "dest_port", e.proto, e.dport);

  if (std::optional<std::string> iface = r.text("src_iface")) {
    info.src_iface = std::string(trim(*iface));
    e.src_ifindex = resolved_ifindex(resolve, info.src_iface);
    info.src_iface_pending = e.src_ifindex == kUnresolvedIfindex;
  }
  info.set = read_ipset(r);
  if (!info.set.empty()) {
    e.set_id = set_id_for(r, info.set, sets);
  }

  e.policy_id = policy_id_for(r, policy_ids);
  info.timeout_s = read_timeout(r);
  bool sticky = read_bool(r, "sticky");
  if (sticky && is_builtin_policy(e.policy_id)) {
    info.warnings.push_back("sticky ignored: use_policy " + rule.use_policy +
                            " is a fixed mark, not a policy (mwan3 makes only policy rules sticky)");
    sticky = false;
  }
  e.sticky = sticky ? 1 : 0;
  e.sticky_timeout_s = sticky ? info.timeout_s : 0;
  info.logging = read_bool(r, "logging");
  // Unknown options are warned about with every other section's (config::unknown_option_warnings).
  return {e, info};
}

// ---- JSON and text ----------------------------------------------------------------------------

nlohmann::json address_list(const addr_match* a, uint8_t n) {
  nlohmann::json out = nlohmann::json::array();
  for (uint8_t i = 0; i < n; ++i) {
    out.push_back(address_text(a[i]));
  }
  return out;
}

nlohmann::json port_list(const port_range* p, uint8_t n) {
  nlohmann::json out = nlohmann::json::array();
  for (uint8_t i = 0; i < n; ++i) {
    out.push_back(port_text(p[i]));
  }
  return out;
}

std::string joined(const nlohmann::json& list) {
  std::string out;
  for (const auto& item : list) {
    if (!out.empty()) {
      out += ",";
    }
    out += item.get<std::string>();
  }
  return out;
}

}  // namespace

std::map<std::string, uint32_t> assign_policy_ids(const config::Config& cfg) {
  std::map<std::string, uint32_t> ids;
  uint32_t next = kFirstUserPolicyId;
  for (const config::PolicyConfig& p : cfg.policies) {
    if (next >= UPLINKD_MAX_POLICIES) {
      throw ConfigError(cfg.file, p.line, "",
                        "policy " + quote(p.name) + ": more than " +
                            std::to_string(UPLINKD_MAX_POLICIES - kFirstUserPolicyId) +
                            " policies; the classifier holds at most that many");
    }
    ids.emplace(p.name, next++);
  }
  return ids;
}

CompiledRules compile_rules(const config::Config& cfg, const std::map<std::string, uint32_t>& policy_ids,
                            const IfindexResolver& resolve, const config::uci::Package* source) {
  CompiledRules out;
  for (const RuleConfig& rule : cfg.rules) {
    if (out.entries.size() >= UPLINKD_MAX_RULES) {
      throw ConfigError(cfg.file, rule.line, "",
                        "rule " + quote(rule.name) + ": more than " + std::to_string(UPLINKD_MAX_RULES) +
                            " rules; the classifier holds at most that many");
    }
    const config::uci::Section* section = source != nullptr ? source->find("rule", rule.name) : nullptr;
    RuleReader reader(cfg, rule, section);
    auto [entry, info] = compile_rule(reader, policy_ids, resolve, out.sets);
    out.entries.push_back(entry);
    out.info.push_back(std::move(info));
  }
  return out;
}

std::vector<size_t> refresh_src_ifindexes(CompiledRules& rules, const IfindexResolver& resolve) {
  std::vector<size_t> changed;
  for (size_t i = 0; i < rules.entries.size(); ++i) {
    RuleInfo& info = rules.info[i];
    if (info.src_iface.empty()) {
      continue;
    }
    uint32_t ifindex = resolved_ifindex(resolve, info.src_iface);
    info.src_iface_pending = ifindex == kUnresolvedIfindex;
    if (rules.entries[i].src_ifindex != ifindex) {
      rules.entries[i].src_ifindex = ifindex;
      changed.push_back(i);
    }
  }
  return changed;
}

nlohmann::json rule_json(const rule_entry& e, const RuleInfo& info) {
  nlohmann::json j;
  j["name"] = info.name;
  j["line"] = info.line;
  j["family"] = e.family == 4 ? "ipv4" : e.family == 6 ? "ipv6" : "any";
  j["proto"] = proto_word(e.proto);
  j["proto_number"] = e.proto;
  j["src_ip"] = address_list(e.src, e.n_src);
  j["src_port"] = port_list(e.sport, e.n_sport);
  j["src_iface"] = info.src_iface.empty() ? nlohmann::json(nullptr) : nlohmann::json(info.src_iface);
  j["src_ifindex"] = e.src_ifindex == kUnresolvedIfindex ? 0 : e.src_ifindex;
  j["src_iface_pending"] = info.src_iface_pending;
  j["dest_ip"] = address_list(e.dst, e.n_dst);
  j["dest_port"] = port_list(e.dport, e.n_dport);
  j["ipset"] = info.set.empty() ? nlohmann::json(nullptr) : nlohmann::json(info.set);
  j["set_id"] = e.set_id;
  j["sticky"] = e.sticky != 0;
  j["timeout"] = info.timeout_s;
  j["use_policy"] = info.use_policy;
  j["policy_id"] = e.policy_id;
  j["logging"] = info.logging;
  j["warnings"] = info.warnings;
  return j;
}

nlohmann::json rules_json(const CompiledRules& rules) {
  nlohmann::json out = nlohmann::json::array();
  for (size_t i = 0; i < rules.entries.size(); ++i) {
    out.push_back(rule_json(rules.entries[i], rules.info[i]));
  }
  return out;
}

std::string rule_text(const nlohmann::json& rule) {
  std::vector<std::string> parts;
  if (rule.value("family", "any") != "any") {
    parts.push_back(rule["family"].get<std::string>());
  }
  if (rule.value("proto", "all") != "all") {
    parts.push_back(rule["proto"].get<std::string>());
  }
  auto list_part = [&](const char* key, const char* word) {
    if (rule.contains(key) && !rule[key].empty()) {
      parts.push_back(std::string(word) + " " + joined(rule[key]));
    }
  };
  list_part("src_ip", "from");
  list_part("src_port", "sport");
  if (rule.contains("src_iface") && rule["src_iface"].is_string()) {
    parts.push_back("iif " + rule["src_iface"].get<std::string>() +
                    (rule.value("src_iface_pending", false) ? " (no device yet)" : ""));
  }
  list_part("dest_ip", "to");
  list_part("dest_port", "dport");
  if (rule.contains("ipset") && rule["ipset"].is_string()) {
    parts.push_back("ipset " + rule["ipset"].get<std::string>());
  }
  std::string text = rule.value("name", "?") + ":";
  if (parts.empty()) {
    parts.push_back("all");
  }
  for (const std::string& p : parts) {
    text += " " + p;
  }
  text += " -> " + rule.value("use_policy", "?");
  if (rule.value("sticky", false)) {
    text += " (sticky " + std::to_string(rule.value("timeout", 600U)) + "s)";
  }
  return text;
}

std::string format_rules(const nlohmann::json& rules) {
  std::string out;
  for (const auto& rule : rules) {
    out += rule_text(rule) + "\n";
  }
  return out;
}

}  // namespace uplinkd::policy
