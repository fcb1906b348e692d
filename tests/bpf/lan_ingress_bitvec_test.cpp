// The bit-vector classifier (bpf/lib/rule_match.h, tables from policy/rule_tables.h): fixtures for the
// cases the tables must get right, and a property test against a linear reference written here from
// mwan3's rule semantics (../shared/reference/mwan3-behaviour.md; the comment at the top of
// rule_match.h). Every packet runs through the real lan_ingress program (BPF_PROG_TEST_RUN); the rule
// that classified it is read back from the flow the program files (flow_value.rule_id = index + 1).
//
// The property test's seed: UPLINKD_BITVEC_SEED (default 1), printed with every failure;
// UPLINKD_BITVEC_SETS sets the number of random rule sets (default 60).
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <gtest/gtest.h>
#include <linux/if_ether.h>
#include <netinet/in.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "datapath/set_keys.h"
#include "lan_ingress.skel.h"
#include "maps/uplinkd_maps.h"
#include "packet_builder.h"
#include "rule_tables_helper.h"
#include "test_run.h"

namespace uplinkd::bpftest {
namespace {

constexpr uint32_t kMmxMask = 0x3f00;
constexpr uint32_t kLanIf = 11;

// ---- packets --------------------------------------------------------------------------------

struct Packet {
  int family = 4;
  uint8_t proto = IPPROTO_TCP;
  std::array<uint8_t, 16> src{}, dst{};  // IPv4 in the first 4 bytes
  uint16_t sport = 0, dport = 0;         // used for TCP and UDP only
  uint32_t ifindex = kLanIf;

  bool ports_known() const { return proto == IPPROTO_TCP || proto == IPPROTO_UDP; }
};

std::string text(int family, const std::array<uint8_t, 16>& a) {
  char buf[INET6_ADDRSTRLEN] = {};
  inet_ntop(family == 6 ? AF_INET6 : AF_INET, a.data(), buf, sizeof buf);
  return buf;
}

std::string describe(const Packet& p) {
  return "family " + std::to_string(p.family) + " proto " + std::to_string(p.proto) + " " +
         text(p.family, p.src) + ":" + std::to_string(p.sport) + " -> " + text(p.family, p.dst) + ":" +
         std::to_string(p.dport) + " iif " + std::to_string(p.ifindex);
}

Bytes frame_of(const Packet& p) {
  const std::string src = text(p.family, p.src), dst = text(p.family, p.dst);
  Bytes l4;
  if (p.proto == IPPROTO_TCP) {
    l4 = tcp(p.sport, p.dport, 0x2000, 0, 0x02);
  } else if (p.proto == IPPROTO_UDP) {
    l4 = udp(p.sport, p.dport, Bytes(12, 0x5a));
  } else if (p.proto == IPPROTO_ICMP || p.proto == IPPROTO_ICMPV6) {
    l4 = icmp_echo(p.family == 6 ? 128 : 8, 1, 1, Bytes(8, 0));
  } else {
    l4 = Bytes(16, 0);
  }
  if (p.family == 6) return ethernet(ETH_P_IPV6, ipv6(src.c_str(), dst.c_str(), p.proto, std::move(l4)));
  return ethernet(ETH_P_IP, ipv4(src.c_str(), dst.c_str(), p.proto, std::move(l4)));
}

std::array<uint8_t, 16> addr(const char* s) {
  std::array<uint8_t, 16> a{};
  inet_pton(std::strchr(s, ':') != nullptr ? AF_INET6 : AF_INET, s, a.data());
  return a;
}

Packet pkt(const char* src, const char* dst, uint8_t proto, uint16_t sport = 0, uint16_t dport = 0,
           uint32_t ifindex = kLanIf) {
  Packet p;
  p.family = std::strchr(src, ':') != nullptr ? 6 : 4;
  p.src = addr(src);
  p.dst = addr(dst);
  p.proto = proto;
  p.sport = sport;
  p.dport = dport;
  p.ifindex = ifindex;
  return p;
}

// ---- rules ----------------------------------------------------------------------------------

addr_match cidr(const char* s) {
  addr_match m{};
  std::string str(s);
  const size_t slash = str.find('/');
  const std::string host = str.substr(0, slash);
  const bool v6 = host.find(':') != std::string::npos;
  inet_pton(v6 ? AF_INET6 : AF_INET, host.c_str(), m.addr);
  m.family = v6 ? 6 : 4;
  m.prefixlen =
      static_cast<uint8_t>(slash == std::string::npos ? (v6 ? 128 : 32) : std::stoi(str.substr(slash + 1)));
  return m;
}

struct Rule {
  rule_entry e{};
  Rule& family(uint8_t f) {
    e.family = f;
    return *this;
  }
  Rule& proto(uint8_t p) {
    e.proto = p;
    return *this;
  }
  Rule& iif(uint32_t i) {
    e.src_ifindex = i;
    return *this;
  }
  Rule& set(uint8_t id) {
    e.set_id = id;
    return *this;
  }
  Rule& src(std::initializer_list<const char*> l) {
    for (const char* c : l) e.src[e.n_src++] = cidr(c);
    return *this;
  }
  Rule& dst(std::initializer_list<const char*> l) {
    for (const char* c : l) e.dst[e.n_dst++] = cidr(c);
    return *this;
  }
  Rule& sport(std::initializer_list<port_range> l) {
    for (auto r : l) e.sport[e.n_sport++] = r;
    return *this;
  }
  Rule& dport(std::initializer_list<port_range> l) {
    for (auto r : l) e.dport[e.n_dport++] = r;
    return *this;
  }
  operator rule_entry() const { return e; }  // NOLINT(google-explicit-constructor): rows read as rules
};

std::string describe(const rule_entry& r) {
  std::string out = "family " + std::to_string(r.family) + " proto " + std::to_string(r.proto) + " iif " +
                    std::to_string(r.src_ifindex) + " set " + std::to_string(r.set_id);
  auto addrs = [&](const char* what, const addr_match* l, unsigned n) {
    out += std::string(" ") + what + " [";
    for (unsigned k = 0; k < n; ++k) {
      std::array<uint8_t, 16> a{};
      std::memcpy(a.data(), l[k].addr, 16);
      out += (k != 0 ? " " : "") + text(l[k].family, a) + "/" + std::to_string(l[k].prefixlen);
    }
    out += "]";
  };
  auto ports = [&](const char* what, const port_range* l, unsigned n) {
    out += std::string(" ") + what + " [";
    for (unsigned k = 0; k < n; ++k) {
      out += (k != 0 ? " " : "") + std::to_string(l[k].lo) + "-" + std::to_string(l[k].hi);
    }
    out += "]";
  };
  addrs("src", r.src, r.n_src);
  addrs("dst", r.dst, r.n_dst);
  ports("sport", r.sport, r.n_sport);
  ports("dport", r.dport, r.n_dport);
  return out;
}

// ---- the linear reference (mwan3's semantics, written from the rule fields' meaning) -------------

bool prefix_covers(const uint8_t* net, unsigned len, const std::array<uint8_t, 16>& a) {
  for (unsigned bit = 0; bit < len; ++bit) {
    const unsigned byte = bit / 8, shift = 7 - bit % 8;
    if (((net[byte] >> shift) & 1U) != ((a[byte] >> shift) & 1U)) return false;
  }
  return true;
}

// An empty list takes any address; otherwise an entry of the packet's family must cover it.
bool ref_addresses(const addr_match* list, unsigned n, int family, const std::array<uint8_t, 16>& a) {
  if (n == 0) return true;
  for (unsigned k = 0; k < n; ++k) {
    const unsigned max = family == 6 ? 128 : 32;
    if (list[k].family == family &&
        prefix_covers(list[k].addr, std::min<unsigned>(list[k].prefixlen, max), a))
      return true;
  }
  return false;
}

bool ref_ports(const port_range* list, unsigned n, uint16_t port) {
  if (n == 0) return true;
  for (unsigned k = 0; k < n; ++k) {
    if (list[k].lo <= port && port <= list[k].hi) return true;
  }
  return false;
}

// set id -> the prefixes of that set (a set id with no entry here is a slot never filled).
using Sets = std::map<uint8_t, std::vector<addr_match>>;

bool ref_in_set(const Sets& sets, uint8_t id, const Packet& p) {
  const auto it = sets.find(id);
  if (it == sets.end()) return false;
  for (const addr_match& m : it->second) {
    if (m.family == p.family && prefix_covers(m.addr, m.prefixlen, p.dst)) return true;
  }
  return false;
}

bool ref_matches(const rule_entry& r, const Packet& p, const Sets& sets) {
  if (r.family != 0 && r.family != p.family) return false;
  if (r.proto != 0 && r.proto != p.proto) return false;
  if (r.src_ifindex != 0 && r.src_ifindex != p.ifindex) return false;
  if (r.n_sport != 0 || r.n_dport != 0) {  // mwan3: ports only for tcp and udp
    if (!p.ports_known()) return false;
    if (!ref_ports(r.sport, r.n_sport, p.sport) || !ref_ports(r.dport, r.n_dport, p.dport)) return false;
  }
  if (!ref_addresses(r.src, r.n_src, p.family, p.src)) return false;
  if (!ref_addresses(r.dst, r.n_dst, p.family, p.dst)) return false;
  return r.set_id == 0 || ref_in_set(sets, r.set_id, p);
}

int ref_first_match(const std::vector<rule_entry>& rules, uint32_t n_rules, const Packet& p,
                    const Sets& sets) {
  for (uint32_t i = 0; i < rules.size() && i < n_rules; ++i) {
    if (ref_matches(rules[i], p, sets)) return static_cast<int>(i);
  }
  return -1;
}

// ---- the program ----------------------------------------------------------------------------

// A set's prefix as the daemon reads it from nft (datapath/set_keys.h turns it into trie keys).
netlink::SetPrefix set_prefix_of(const addr_match& m) {
  netlink::SetPrefix p;
  p.address.family = m.family == 6 ? AF_INET6 : AF_INET;
  std::memcpy(p.address.bytes.data(), m.addr, m.family == 6 ? 16 : 4);
  p.len = m.prefixlen;
  return p;
}

class Classifier {
 public:
  Classifier() {
    skel_ = lan_ingress__open_and_load();
    if (skel_ == nullptr) load_err_ = -errno;
  }
  ~Classifier() {
    if (skel_ != nullptr) lan_ingress__destroy(skel_);
  }
  Classifier(const Classifier&) = delete;
  Classifier& operator=(const Classifier&) = delete;

  bool ok() const { return skel_ != nullptr; }
  int load_err() const { return load_err_; }
  lan_ingress* skel() const { return skel_; }

  // The rules (actions and tables, as the daemon writes them: only what differs from the inactive
  // set, so the property test's rule sets go through the writer's difference path), then the count
  // that makes them live.
  int load(const std::vector<rule_entry>& rules, std::optional<uint32_t> n_rules = std::nullopt) {
    if (int err = testing::write_rules_and_tables(skel_, rules, &writer_); err != 0) return err;
    return set_n_rules(n_rules.value_or(static_cast<uint32_t>(rules.size())));
  }
  int set_n_rules(uint32_t n) {
    const classifier_cfg cfg{kMmxMask, n, kMmxMask, 600, 600, 600, 0, 0};
    const uint32_t zero = 0;
    return bpf_map_update_elem(bpf_map__fd(skel_->maps.classifier_cfg), &zero, &cfg, BPF_ANY);
  }
  // The daemon's way: a trie shaped like the inner-map template, its fd into sets[id - 1].
  int set_set(uint8_t id, const std::vector<addr_match>& prefixes) {
    bpf_map_create_opts opts{};
    opts.sz = sizeof opts;
    opts.map_flags = BPF_F_NO_PREALLOC;
    const int trie = bpf_map_create(BPF_MAP_TYPE_LPM_TRIE, "set", sizeof(lpm_key), 1, 1024, &opts);
    if (trie < 0) return trie;
    std::vector<netlink::SetPrefix> set;
    set.reserve(prefixes.size());
    for (const addr_match& m : prefixes) set.push_back(set_prefix_of(m));
    int err = 0;
    for (const lpm_key& key : datapath::lpm_keys_of(set)) {
      const uint8_t one = 1;
      err = err != 0 ? err : bpf_map_update_elem(trie, &key, &one, BPF_ANY);
    }
    const uint32_t slot = id - 1U;
    err = err != 0 ? err : bpf_map_update_elem(bpf_map__fd(skel_->maps.sets), &slot, &trie, BPF_ANY);
    close(trie);
    return err;
  }
  int clear_set(uint8_t id) {
    const uint32_t slot = id - 1U;
    const int err = bpf_map_delete_elem(bpf_map__fd(skel_->maps.sets), &slot);
    return err == 0 || errno == ENOENT ? 0 : -errno;
  }

  // Runs p through lan_ingress as a new flow and returns the index of the rule that classified it,
  // -1 for none, or -1000 - errno when the run or the flow read-back failed. The flow is deleted, so
  // the next packet is a new flow again.
  int classify(const Packet& p) const {
    __sk_buff in{};
    in.ingress_ifindex = p.ifindex;
    __sk_buff out{};
    const TestRun run = test_run_once(bpf_program__fd(skel_->progs.lan_ingress), frame_of(p), in, &out, 64);
    if (run.err != 0) return -1000 - run.saved_errno;
    return take_flow_rule();
  }

 private:
  int take_flow_rule() const {
    const int flows = bpf_map__fd(skel_->maps.flows);
    flow_key key{};
    flow_value value{};
    if (bpf_map_get_next_key(flows, nullptr, &key) != 0) return -1000 - ENOENT;
    if (bpf_map_lookup_elem(flows, &key, &value) != 0) return -1000 - errno;
    bpf_map_delete_elem(flows, &key);
    if (value.origin != FLOW_ORIGIN_RULE) return -1;
    return static_cast<int>(value.rule_id) - 1;
  }

  lan_ingress* skel_ = nullptr;
  int load_err_ = 0;
  datapath::RuleTableWriter writer_;
};

#define ASSERT_LOADED(c) ASSERT_TRUE((c).ok()) << "lan_ingress must load: " << std::strerror(-(c).load_err())

struct Expect {
  Packet packet;
  int rule;
};

void expect_all(const Classifier& c, const std::vector<Expect>& rows) {
  for (const Expect& row : rows) {
    EXPECT_EQ(c.classify(row.packet), row.rule) << describe(row.packet);
  }
}

// ---- fixtures -------------------------------------------------------------------------------

TEST(LanIngressBitvec, FirstMatchOrderAcrossFields) {
  Classifier c;
  ASSERT_LOADED(c);
  ASSERT_EQ(c.load({
                Rule().proto(IPPROTO_UDP).dport({{53, 53}}),          // 0: DNS
                Rule().family(6),                                     // 1: any IPv6
                Rule().src({"10.1.0.0/16"}).iif(12),                  // 2: a subnet on the guest port
                Rule().proto(IPPROTO_TCP).src({"10.1.0.0/16"}),       // 3
                Rule().dst({"198.51.100.0/24"}).proto(IPPROTO_ICMP),  // 4
                Rule(),                                               // 5: everything else
            }),
            0);
  expect_all(c, {
                    {pkt("10.1.2.3", "192.0.2.1", IPPROTO_UDP, 4000, 53), 0},
                    {pkt("2001:db8::1", "2001:db8::2", IPPROTO_UDP, 4000, 53), 0},
                    {pkt("2001:db8::1", "2001:db8::2", IPPROTO_TCP, 4000, 53), 1},
                    {pkt("10.1.2.3", "192.0.2.1", IPPROTO_TCP, 4000, 80, 12), 2},
                    {pkt("10.1.2.3", "192.0.2.1", IPPROTO_TCP, 4000, 80, 11), 3},
                    {pkt("10.2.2.3", "192.0.2.1", IPPROTO_TCP, 4000, 80, 11), 5},
                    {pkt("10.2.2.3", "198.51.100.9", IPPROTO_ICMP), 4},
                    {pkt("10.1.2.3", "198.51.100.9", IPPROTO_ICMP, 0, 0, 12), 2},
                    {pkt("10.2.2.3", "198.51.100.9", IPPROTO_UDP, 1, 2), 5},
                });
}

// An LPM lookup returns the longest prefix only: the /24's entry must carry the /8 rule's bit.
TEST(LanIngressBitvec, OverlappingPrefixes) {
  Classifier c;
  ASSERT_LOADED(c);
  ASSERT_EQ(c.load({
                Rule().dst({"10.0.0.0/8"}).proto(IPPROTO_TCP),         // 0
                Rule().dst({"10.1.2.0/24"}).proto(IPPROTO_UDP),        // 1: later, other protocol
                Rule().dst({"10.1.2.128/25", "10.1.0.0/16"}).iif(12),  // 2
                Rule().dst({"2001:db8::/32"}).proto(IPPROTO_TCP),      // 3
                Rule().dst({"2001:db8:1:2::/64"}).proto(IPPROTO_UDP),  // 4
                Rule().src({"0.0.0.0/0"}),                             // 5: every IPv4 source, no IPv6
                Rule().dst({"2001:db8:1:2::1/128", "10.1.2.3/32"}),    // 6
            }),
            0);
  expect_all(c, {
                    {pkt("192.0.2.1", "10.1.2.5", IPPROTO_TCP, 1000, 80), 0},
                    {pkt("192.0.2.1", "10.1.2.5", IPPROTO_UDP, 1000, 80), 1},
                    {pkt("192.0.2.1", "10.1.2.200", IPPROTO_UDP, 1000, 80), 1},
                    {pkt("192.0.2.1", "10.1.3.200", IPPROTO_UDP, 1000, 80, 12), 2},
                    {pkt("192.0.2.1", "10.1.2.200", IPPROTO_ICMP, 0, 0, 12), 2},
                    {pkt("192.0.2.1", "10.9.2.200", IPPROTO_ICMP, 0, 0, 12), 5},
                    {pkt("192.0.2.1", "10.1.2.3", IPPROTO_ICMP), 5},
                    {pkt("2001:db8:1:2::5", "2001:db8:1:2::1", IPPROTO_TCP, 1, 2), 3},
                    {pkt("2001:db8:1:2::5", "2001:db8:1:2::1", IPPROTO_UDP, 1, 2), 4},
                    {pkt("2001:db8:1:2::5", "2001:db8:1:2::1", 47), 6},
                    {pkt("2001:db8:1:2::5", "2001:db8:1:3::1", 47), -1},
                });
}

TEST(LanIngressBitvec, PortRangesAndLists) {
  Classifier c;
  ASSERT_LOADED(c);
  ASSERT_EQ(c.load({
                Rule().proto(IPPROTO_TCP).dport({{1000, 2000}, {3000, 3000}}),  // 0
                Rule().sport({{5000, 5100}}).dport({{80, 80}, {443, 443}}),     // 1
                Rule().proto(IPPROTO_UDP).dport({{0, 65535}}),                  // 2
                Rule().sport({{65535, 65535}}),                                 // 3
                Rule().dport({{0, 0}, {1999, 3001}}),                           // 4
                Rule(),                                                         // 5
            }),
            0);
  const char* s = "10.0.0.1";
  const char* d = "192.0.2.1";
  expect_all(c, {
                    {pkt(s, d, IPPROTO_TCP, 1, 999), 5},
                    {pkt(s, d, IPPROTO_TCP, 1, 1000), 0},
                    {pkt(s, d, IPPROTO_TCP, 1, 2000), 0},
                    {pkt(s, d, IPPROTO_TCP, 1, 2001), 4},
                    {pkt(s, d, IPPROTO_TCP, 1, 3000), 0},
                    {pkt(s, d, IPPROTO_TCP, 1, 3001), 4},
                    {pkt(s, d, IPPROTO_TCP, 1, 3002), 5},
                    {pkt(s, d, IPPROTO_UDP, 1, 1500), 2},
                    {pkt(s, d, IPPROTO_TCP, 5000, 443), 1},
                    {pkt(s, d, IPPROTO_TCP, 5101, 443), 5},
                    {pkt(s, d, IPPROTO_TCP, 5100, 80), 1},
                    {pkt(s, d, IPPROTO_TCP, 5100, 81), 5},
                    {pkt(s, d, IPPROTO_TCP, 65535, 65535), 3},
                    {pkt(s, d, IPPROTO_TCP, 65534, 0), 4},
                    {pkt(s, d, IPPROTO_ICMP), 5},
                    {pkt(s, d, 47), 5},
                });
}

TEST(LanIngressBitvec, IpsetRules) {
  Classifier c;
  ASSERT_LOADED(c);
  ASSERT_EQ(c.set_set(1, {cidr("192.0.2.0/25")}), 0);
  ASSERT_EQ(c.set_set(2, {cidr("2001:db8:1::/48"), cidr("198.51.100.7/32")}), 0);
  ASSERT_EQ(c.load({
                Rule().set(1).proto(IPPROTO_TCP),  // 0
                Rule().set(3),                     // 1: a set never filled matches nothing
                Rule().set(2),                     // 2
                Rule().set(1),                     // 3
                Rule().dst({"198.51.100.0/24"}),   // 4
                Rule().set(2).proto(IPPROTO_UDP),  // 5: after 2, never first
                Rule().family(4),                  // 6
            }),
            0);
  const char* s = "10.0.0.1";
  expect_all(c, {
                    {pkt(s, "192.0.2.5", IPPROTO_TCP, 1, 2), 0},
                    {pkt(s, "192.0.2.5", IPPROTO_UDP, 1, 2), 3},
                    {pkt(s, "192.0.2.200", IPPROTO_TCP, 1, 2), 6},
                    {pkt(s, "198.51.100.7", IPPROTO_UDP, 1, 2), 2},
                    {pkt(s, "198.51.100.8", IPPROTO_UDP, 1, 2), 4},
                    {pkt("2001:db8::1", "2001:db8:1::9", IPPROTO_UDP, 1, 2), 2},
                    {pkt("2001:db8::1", "2001:db8:2::9", IPPROTO_UDP, 1, 2), -1},
                });
  // A set's contents change without a reload (nft sets change at run time): no table rewrite needed.
  ASSERT_EQ(c.set_set(1, {cidr("192.0.2.128/25")}), 0);
  expect_all(c, {{pkt(s, "192.0.2.5", IPPROTO_TCP, 1, 2), 6}, {pkt(s, "192.0.2.200", IPPROTO_TCP, 1, 2), 0}});
  ASSERT_EQ(c.clear_set(2), 0);
  expect_all(c, {{pkt(s, "198.51.100.7", IPPROTO_UDP, 1, 2), 4}});
}

// The set tries hold IPv4 as ::ffff:a.b.c.d; an IPv6 prefix over ::ffff:0:0/96 (::/0, ::/64,
// ::/80) must still match IPv6 destinations only, and IPv4 ones only by the set's IPv4 entries.
TEST(LanIngressBitvec, IpsetIpv6PrefixLeavesIpv4Alone) {
  Classifier c;
  ASSERT_LOADED(c);
  ASSERT_EQ(c.set_set(1, {cidr("::/0")}), 0);
  ASSERT_EQ(c.set_set(2, {cidr("::/80"), cidr("192.0.2.0/24")}), 0);
  ASSERT_EQ(c.set_set(3, {cidr("::/64"), cidr("0.0.0.0/0")}), 0);
  ASSERT_EQ(c.load({
                Rule().set(1),  // 0
                Rule().set(2),  // 1
                Rule().set(3),  // 2
            }),
            0);
  const char* s4 = "10.0.0.1";
  const char* s6 = "2001:db8::1";
  expect_all(c, {
                    {pkt(s4, "198.51.100.7", IPPROTO_UDP, 1, 2), 2},
                    {pkt(s4, "192.0.2.9", IPPROTO_UDP, 1, 2), 1},
                    {pkt(s4, "0.0.0.0", IPPROTO_TCP, 1, 2), 2},
                    {pkt(s6, "2001:db8:1::9", IPPROTO_UDP, 1, 2), 0},
                    // An IPv4-mapped destination (not routed on the wire) counts as its IPv4 address.
                    {pkt(s6, "::ffff:198.51.100.7", IPPROTO_UDP, 1, 2), 2},
                    {pkt(s6, "::fffe:ffff:ffff", IPPROTO_UDP, 1, 2), 0},
                    {pkt(s6, "::1", IPPROTO_UDP, 1, 2), 0},
                });
  ASSERT_EQ(c.clear_set(1), 0);
  expect_all(c, {
                    {pkt(s6, "::1", IPPROTO_UDP, 1, 2), 1},        // ::/80
                    {pkt(s6, "::1:0:0:0", IPPROTO_UDP, 1, 2), 2},  // ::/64, not ::/80
                    {pkt(s6, "2001:db8:1::9", IPPROTO_UDP, 1, 2), -1},
                    {pkt(s4, "198.51.100.7", IPPROTO_UDP, 1, 2), 2},  // 0.0.0.0/0 of set 3
                });
}

// Rule i holds 10.i.0.0/16 (and the same full port lists as every other rule): each position wins
// for its own destination, and rules past n_rules are not live.
TEST(LanIngressBitvec, TwoHundredFiftySixRules) {
  Classifier c;
  ASSERT_LOADED(c);
  std::vector<rule_entry> rules;
  for (uint32_t i = 0; i < UPLINKD_MAX_RULES; ++i) {
    Rule r;
    r.proto(IPPROTO_TCP).sport({{1, 1}, {2, 2}, {3, 3}, {4, 4}, {5, 5}, {6, 6}, {7, 7}, {1024, 65535}});
    r.dport({{1, 1}, {2, 2}, {3, 3}, {4, 4}, {5, 5}, {6, 6}, {7, 7}, {443, 443}});
    const std::string net = "10." + std::to_string(i) + ".0.0/16";
    r.e.dst[r.e.n_dst++] = cidr(net.c_str());
    rules.push_back(r);
  }
  ASSERT_EQ(c.load(rules), 0);
  for (uint32_t i : {0U, 1U, 63U, 64U, 65U, 127U, 128U, 191U, 192U, 200U, 254U, 255U}) {
    const std::string dst = "10." + std::to_string(i) + ".7.7";
    EXPECT_EQ(c.classify(pkt("192.0.2.1", dst.c_str(), IPPROTO_TCP, 40000, 443)), static_cast<int>(i)) << dst;
    EXPECT_EQ(c.classify(pkt("192.0.2.1", dst.c_str(), IPPROTO_TCP, 40000, 444)), -1) << dst;
  }
  ASSERT_EQ(c.set_n_rules(200), 0);
  EXPECT_EQ(c.classify(pkt("192.0.2.1", "10.199.7.7", IPPROTO_TCP, 40000, 443)), 199);
  EXPECT_EQ(c.classify(pkt("192.0.2.1", "10.200.7.7", IPPROTO_TCP, 40000, 443)), -1);
}

// Two rule sets that classify the same packets differently.
std::vector<rule_entry> rules_a() {
  return {Rule().proto(IPPROTO_TCP).dst({"10.1.0.0/16"}), Rule().proto(IPPROTO_UDP).dport({{53, 53}}),
          Rule().iif(12), Rule()};
}
std::vector<rule_entry> rules_b() {
  return {Rule().proto(IPPROTO_UDP).dst({"10.1.0.0/16"}), Rule().iif(12),
          Rule().proto(IPPROTO_TCP).dport({{80, 80}})};
}
const std::vector<Packet>& flip_packets() {
  static const std::vector<Packet> packets = {
      pkt("192.0.2.1", "10.1.0.1", IPPROTO_TCP, 1000, 80),
      pkt("192.0.2.1", "10.1.0.1", IPPROTO_UDP, 1000, 53),
      pkt("192.0.2.1", "10.2.0.1", IPPROTO_UDP, 1000, 53, 12),
      pkt("192.0.2.1", "10.2.0.1", IPPROTO_TCP, 1000, 80),
      pkt("192.0.2.1", "10.2.0.1", IPPROTO_ICMP),
  };
  return packets;
}

// A reload writes the set packets do not use, then flips: until the flip every packet sees the old
// rules; after it, the new ones. Meanwhile a second thread classifies without pause and only ever
// sees one rule set's answer or the other's.
TEST(LanIngressBitvec, ReloadFlipsTables) {
  Classifier c;
  ASSERT_LOADED(c);
  const std::vector<rule_entry> a = rules_a(), b = rules_b();
  ASSERT_EQ(c.load(a, 4), 0);
  const datapath::RuleTableFds fds = testing::rule_table_fds(c.skel());
  for (const Packet& p : flip_packets())
    ASSERT_EQ(c.classify(p), ref_first_match(a, 4, p, {})) << describe(p);

  const int written = datapath::write_inactive_rule_tables(fds, policy::compile_rule_tables(b));
  ASSERT_GE(written, 0);
  for (const Packet& p : flip_packets())
    EXPECT_EQ(c.classify(p), ref_first_match(a, 4, p, {})) << describe(p);
  ASSERT_EQ(datapath::flip_rule_tables(fds, static_cast<uint32_t>(written)), 0);
  for (const Packet& p : flip_packets())
    EXPECT_EQ(c.classify(p), ref_first_match(b, 4, p, {})) << describe(p);

  // Concurrent: the classifier thread only runs lan_ingress on its own packets; flows are per
  // 5-tuple, so it reads them back itself (a tuple per packet kind, deleted after each run).
  std::atomic<bool> stop{false};
  std::atomic<int> mixed{0}, runs{0};
  std::thread classifier([&] {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!stop.load() && std::chrono::steady_clock::now() < until && runs.load() < 200000) {
      for (const Packet& p : flip_packets()) {
        const int got = c.classify(p);
        if (got != ref_first_match(a, 4, p, {}) && got != ref_first_match(b, 4, p, {})) mixed++;
        runs++;
      }
    }
  });
  for (int flip = 0; flip < 200; ++flip) {
    ASSERT_EQ(datapath::write_rule_tables(fds, policy::compile_rule_tables(flip % 2 == 0 ? a : b)), 0);
  }
  stop = true;
  classifier.join();
  EXPECT_EQ(mixed.load(), 0) << "of " << runs.load() << " runs";
  EXPECT_GT(runs.load(), 0);
}

// ---- property test --------------------------------------------------------------------------

uint32_t env_or(const char* name, uint32_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? static_cast<uint32_t>(std::strtoul(v, nullptr, 0)) : fallback;
}

// Random rules and packets drawn from small pools, so that prefixes nest and overlap, ranges share
// boundaries and packets land on them.
class RandomWorld {
 public:
  explicit RandomWorld(uint32_t seed) : rng_(seed) {
    for (int i = 0; i < 6; ++i) {
      std::array<uint8_t, 16> v4{10, byte(), byte(), byte()};
      if (i < 3) v4[1] = 1;  // several share 10.1/16
      v4_hosts_.push_back(v4);
      std::array<uint8_t, 16> v6{0x20, 0x01, 0x0d, 0xb8};
      for (int b = 4; b < 16; ++b) v6[b] = byte();
      if (i < 3) v6[4] = v6[5] = 0;  // several share 2001:db8:0::/48
      v6_hosts_.push_back(v6);
    }
    for (int i = 0; i < 8; ++i)
      ports_.push_back(static_cast<uint16_t>(pick(0, 3) == 0 ? pick(0, 65535) : pick(0, 1100)));
    ports_.push_back(0);
    ports_.push_back(65535);
  }

  uint32_t pick(uint32_t lo, uint32_t hi) { return std::uniform_int_distribution<uint32_t>(lo, hi)(rng_); }
  uint8_t byte() { return static_cast<uint8_t>(pick(0, 255)); }

  addr_match prefix(int family) {
    addr_match m{};
    const auto& pool = family == 6 ? v6_hosts_ : v4_hosts_;
    const std::array<uint8_t, 16>& host = pool[pick(0, pool.size() - 1)];
    std::memcpy(m.addr, host.data(), 16);
    m.family = static_cast<uint8_t>(family);
    const unsigned max = family == 6 ? 128 : 32;
    const uint32_t r = pick(0, 9);
    m.prefixlen = static_cast<uint8_t>(r == 0 ? 0 : r < 3 ? max : pick(family == 6 ? 16 : 4, max));
    clear_host_bits(m);
    return m;
  }

  rule_entry rule(uint8_t max_set) {
    rule_entry r{};
    static const uint8_t kProtos[] = {0, 0, 0, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP, IPPROTO_ICMPV6, 47};
    r.family = static_cast<uint8_t>(std::array<int, 4>{0, 0, 4, 6}[pick(0, 3)]);
    r.proto = kProtos[pick(0, sizeof kProtos - 1)];
    r.src_ifindex = pick(0, 3) == 0 ? pick(11, 13) : 0;
    r.set_id = pick(0, 5) == 0 ? static_cast<uint8_t>(pick(1, max_set)) : 0;
    fill_addresses(r.src, r.n_src, r.family);
    fill_addresses(r.dst, r.n_dst, r.family);
    fill_ports(r.sport, r.n_sport);
    fill_ports(r.dport, r.n_dport);
    return r;
  }

  Packet packet() {
    Packet p;
    p.family = pick(0, 1) == 0 ? 4 : 6;
    static const uint8_t kProtos[] = {IPPROTO_TCP, IPPROTO_UDP, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP, 47};
    p.proto = kProtos[pick(0, sizeof kProtos - 1)];
    if (p.proto == IPPROTO_ICMP && p.family == 6) p.proto = IPPROTO_ICMPV6;
    p.src = host(p.family);
    p.dst = host(p.family);
    if (p.ports_known()) {
      p.sport = port();
      p.dport = port();
    }
    p.ifindex = pick(11, 14);
    return p;
  }

 private:
  static void clear_host_bits(addr_match& m) {
    for (unsigned bit = m.prefixlen; bit < 128; ++bit)
      m.addr[bit / 8] &= static_cast<uint8_t>(~(0x80U >> (bit % 8)));
  }

  void fill_addresses(addr_match* list, uint8_t& n, uint8_t family) {
    n = pick(0, 2) == 0 ? static_cast<uint8_t>(pick(1, UPLINKD_RULE_MAX_ADDRS)) : 0;
    for (unsigned k = 0; k < n; ++k) {
      const int f = family != 0 ? family : (pick(0, 1) == 0 ? 4 : 6);
      list[k] = prefix(f);
    }
  }

  void fill_ports(port_range* list, uint8_t& n) {
    n = pick(0, 3) == 0 ? static_cast<uint8_t>(pick(1, UPLINKD_RULE_MAX_PORTS)) : 0;
    for (unsigned k = 0; k < n; ++k) {
      uint16_t lo = ports_[pick(0, ports_.size() - 1)], hi = ports_[pick(0, ports_.size() - 1)];
      if (lo > hi) std::swap(lo, hi);
      if (pick(0, 2) == 0) hi = lo;
      list[k] = port_range{lo, hi};
    }
  }

  // A pool host with its last bits perturbed: inside some prefixes, outside others.
  std::array<uint8_t, 16> host(int family) {
    const auto& pool = family == 6 ? v6_hosts_ : v4_hosts_;
    std::array<uint8_t, 16> a = pool[pick(0, pool.size() - 1)];
    const unsigned len = family == 6 ? 16 : 4;
    const uint32_t r = pick(0, 3);
    if (r == 1) a[len - 1] = byte();
    if (r == 2) a[len - 2] = byte();
    if (r == 3) a[pick(1, len - 1)] ^= static_cast<uint8_t>(1U << pick(0, 7));
    return a;
  }

  uint16_t port() {
    const uint16_t base = ports_[pick(0, ports_.size() - 1)];
    const int delta = static_cast<int>(pick(0, 2)) - 1;
    return static_cast<uint16_t>(std::clamp(base + delta, 0, 65535));
  }

  std::mt19937 rng_;
  std::vector<std::array<uint8_t, 16>> v4_hosts_, v6_hosts_;
  std::vector<uint16_t> ports_;
};

TEST(LanIngressBitvec, PropertyMatchesLinearReference) {
  const uint32_t seed = env_or("UPLINKD_BITVEC_SEED", 1);
  const uint32_t n_sets = env_or("UPLINKD_BITVEC_SETS", 60);
  constexpr uint32_t kPacketsPerSet = 80;
  SCOPED_TRACE("UPLINKD_BITVEC_SEED=" + std::to_string(seed));
  Classifier c;
  ASSERT_LOADED(c);
  RandomWorld world(seed);
  uint32_t cases = 0, matched = 0, failures = 0;
  for (uint32_t s = 0; s < n_sets && failures < 5; ++s) {
    // Sets 1 and 2 are filled (from the same pools), 3 is a slot never filled.
    Sets sets;
    for (uint8_t id : {1, 2}) {
      std::vector<addr_match> prefixes;
      for (uint32_t k = world.pick(1, 4); k > 0; --k) {
        addr_match m = world.prefix(world.pick(0, 1) == 0 ? 4 : 6);
        prefixes.push_back(m);
      }
      sets[id] = prefixes;
      ASSERT_EQ(c.set_set(id, prefixes), 0);
    }
    const uint32_t size = s % 5 == 0 ? UPLINKD_MAX_RULES : world.pick(0, s % 3 == 0 ? 40 : UPLINKD_MAX_RULES);
    std::vector<rule_entry> rules;
    for (uint32_t i = 0; i < size; ++i) rules.push_back(world.rule(3));
    const uint32_t n_rules = world.pick(0, 7) == 0 ? world.pick(0, size) : size;
    ASSERT_EQ(c.load(rules, n_rules), 0) << "rule set " << s;
    for (uint32_t k = 0; k < kPacketsPerSet && failures < 5; ++k) {
      const Packet p = world.packet();
      const int want = ref_first_match(rules, n_rules, p, sets);
      const int got = c.classify(p);
      ++cases;
      matched += want >= 0 ? 1 : 0;
      if (got != want) {
        ++failures;
        ADD_FAILURE() << "UPLINKD_BITVEC_SEED=" << seed << " rule set " << s << " (" << size
                      << " rules, n_rules " << n_rules << ") packet " << k << ": " << describe(p)
                      << ": reference " << want << ", lan_ingress " << got << "\n  lan_ingress's rule: "
                      << (got >= 0 && got < static_cast<int>(rules.size()) ? describe(rules[got]) : "none")
                      << "\n  reference's rule: " << (want >= 0 ? describe(rules[want]) : "none");
      }
    }
  }
  std::printf("bitvec property: seed %u, %u cases, %u matched a rule, %u failures\n", seed, cases, matched,
              failures);
  EXPECT_GE(cases, n_sets * kPacketsPerSet);
  EXPECT_GT(matched, cases / 10) << "the pools should make rules match often";
}

}  // namespace
}  // namespace uplinkd::bpftest
