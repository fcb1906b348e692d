// Per-packet cost of the LAN classifier (lan_ingress), measured by the kernel's own timer in
// BPF_PROG_TEST_RUN (opts.duration: nanoseconds per run, averaged over `repeat` runs), each figure
// beside an empty tc program (`return TC_ACT_UNSPEC`) timed the same way in the same run and
// quoted as cost above it: the run loop's own cost moves with the machine, the difference less.
//
//   empty tc program: the floor of both methods below, the repeat one and the one-call-per-packet
//                     one (the same packet each call).
//   established flow: one packet of a known flow, repeat = 1e6 on the same skb (every run is a
//                     `flows` hit: lookup, stale check, mark). 15 rounds interleaved with the empty
//                     program (e a e a ...): quoted as the median of the per-round differences, with
//                     their min..max, beside the absolute medians. With --compare-object, a second
//                     lan_ingress object is timed in the same rounds (e a b e a b ...) and the
//                     per-round difference between the two is printed as well.
//   new flow, N rules: a test run repeats on the very same packet and the first run files the flow,
//                     so repeat > 1 would measure hits. Instead repeat = 1 per call, each call a new
//                     5-tuple (distinct source port), averaging the kernel-reported durations over
//                     10000 calls; median of 3 rounds. Rules 0 .. N-2 are full (8 source CIDRs,
//                     8 destination CIDRs, 8 source and 8 destination port ranges) and fail only at
//                     their destination list, the most expensive place to fail; rule N-1 matches.
//                     The cost includes the `flows` insert and the policy pick.
//   new flow, default rule only: the same method with one rule that matches every IPv4 packet
//                     (mwan3's `default_rule`): the base cost of a new flow, whatever the rules.
//   stale flows:      a flow whose uplink's generation moved, filed from user space before each
//                     call (outside the timed run), then one packet, repeat = 1: a TCP data segment
//                     answered with a RST (parse again, rewrite, trim, two checksums, two map
//                     deletes), or a UDP datagram classified again (8 TCP-only rules: UDP fails each
//                     at its protocol). 10000 calls, median of 3; compare with the one-run-per-call row.
//   lan_egress:       a remote's data segment toward a client whose flow is pinned to an uplink,
//                     repeat = 1e6 (tcp_seen updated in place each run); and a UDP datagram it passes
//                     without a map lookup. Interleaved with the empty program like the established
//                     flow.
//
// Run as root: sudo build/classifier_bench [--object lan_ingress.bpf.o] [--compare-object
// lan_ingress.bpf.o] [--object-egress lan_egress.bpf.o] [--quick]. Pinned to one CPU; numbers vary
// with the CPU and kernel. --object times another build of the programs (an older commit's
// build/bpf/*.bpf.o, or a variant compiled with some step left out) with the same packets and maps;
// --compare-object times a second lan_ingress beside the first in the same rounds, for before/after
// figures of the established flow from one run;
// --quick leaves out the 64 and 256 rule rows and the stale and egress rows; --established leaves
// out every row but the empty program and the established flow (for timing variants).
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <netinet/in.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "bench/bench_object.h"
#include "bench/bench_util.h"
#include "bench/classifier_rules.h"
#include "datapath/rule_table_maps.h"
#include "lan_egress.skel.h"
#include "lan_ingress.skel.h"
#include "maps/uplinkd_maps.h"
#include "policy/rule_tables.h"
#include "tests/bpf/packet_builder.h"

namespace {

using namespace uplinkd::bpftest;
using namespace uplinkd::bench;

// mwan3's `default_rule`: every IPv4 packet, any protocol, to the one-member policy of lte.
rule_entry match_all_rule() {
  rule_entry r{};
  r.family = 4;
  r.policy_id = kPolicyLte;
  return r;
}

std::string g_ingress_object;  // --object
std::string g_egress_object;   // --object-egress
std::string g_compare_object;  // --compare-object: a second lan_ingress timed in the same rounds

class Classifier {
 public:
  // n_rules full rules of which the last matches; `default_rule`: one rule matching everything.
  // `object`: the file to load (--object, --compare-object), empty for the built-in skeleton.
  explicit Classifier(uint32_t n_rules, bool default_rule = false,
                      const std::string& object = g_ingress_object)
      : obj_(
            object, [this] { return (skel_ = lan_ingress__open_and_load()) ? skel_->obj : nullptr; },
            [this] { lan_ingress__destroy(skel_); }, "lan_ingress") {
    write_uplinks_and_policies(obj_.map("uplinks"), obj_.map("policies"));
    std::vector<rule_entry> rules;
    for (uint32_t i = 0; i < n_rules; i++) {
      rules.push_back(default_rule ? match_all_rule() : full_rule(i + 1 == n_rules));
      check(bpf_map_update_elem(obj_.map("rules"), &i, &rules.back(), BPF_ANY), "rules");
    }
    // The bit-vector tables, as the daemon compiles and writes them. An object of a build from before
    // them (--object) walks the `rules` map instead and has no such maps.
    if (obj_.has_map("rule_tbl_sel")) {
      const uplinkd::datapath::RuleTableFds fds{obj_.map("rule_tbl_sel"),   obj_.map("rule_tbl"),
                                                obj_.map("rule_tbl_ports"), obj_.map("rule_tbl_addr"),
                                                obj_.map("rule_tbl_iface"), obj_.map_or_none("rule_tbl_ext")};
      const int err = uplinkd::datapath::write_rule_tables(fds, uplinkd::policy::compile_rule_tables(rules));
      if (err != 0) throw Failure{std::string("writing the rule tables: ") + std::strerror(-err)};
    }
    const classifier_cfg cfg{kMmxMask, n_rules, kMmxMask, 600, 600, 600, UPLINKD_CFG_RESET_STALE_TCP, 0};
    uint32_t zero = 0;
    check(bpf_map_update_elem(obj_.map("classifier_cfg"), &zero, &cfg, BPF_ANY), "classifier_cfg");
  }
  Classifier(const Classifier&) = delete;
  Classifier& operator=(const Classifier&) = delete;

  // A flow on wan filed at generation 0 while wan is at 1: stale on its next packet.
  void add_stale_flow(const flow_key& key) {
    flow_value v{};
    v.last_seen_ns = 0;
    v.mark = static_cast<uint32_t>(kWan) << 8;
    v.generation = 0;
    v.uplink_id = kWan;
    v.origin = FLOW_ORIGIN_RULE;
    check(bpf_map_update_elem(obj_.map("flows"), &key, &v, BPF_ANY), "flows");
  }

  // Kernel-reported ns per run; *mark gets the mark the last run left, *verdict the verdict.
  uint32_t run(const Bytes& frame, uint32_t repeat, uint32_t* mark = nullptr, uint32_t* verdict = nullptr) {
    __sk_buff ctx_in{};
    ctx_in.ingress_ifindex = 11;
    const TcRunResult r = tc_test_run(obj_.prog("lan_ingress"), frame, repeat, ctx_in);
    if (mark != nullptr) {
      *mark = r.mark;
    }
    if (verdict != nullptr) {
      *verdict = r.verdict;
    }
    return r.ns_per_run;
  }

 private:
  lan_ingress* skel_ = nullptr;
  Object obj_;
};

constexpr uint32_t kRepeat = 1'000'000;  // the repeat method's runs per test run
constexpr int kInterleavedRounds = 15;

constexpr const char* kClient = "10.0.0.10";
constexpr const char* kServer = "203.0.113.80";

flow_key flow_of(uint8_t proto, uint16_t sport, uint16_t dport) {
  flow_key k{};
  inet_pton(AF_INET, kClient, k.saddr);
  inet_pton(AF_INET, kServer, k.daddr);
  k.sport = htons(sport);
  k.dport = htons(dport);
  k.proto = proto;
  k.family = 4;
  return k;
}

// The client's segment on an established connection: ACK, timestamps, 100 bytes of data.
Bytes client_segment(uint16_t sport) {
  return ethernet(ETH_P_IP, ipv4(kClient, kServer, IPPROTO_TCP,
                                 tcp_segment(sport, 443, 1000, 2000, kTcpAck | kTcpPsh,
                                             TcpSegment{tcp_timestamps(1, 2), Bytes(100, 0x5a)})));
}

Bytes client_datagram(uint16_t sport) {
  return ethernet(ETH_P_IP, ipv4(kClient, kServer, IPPROTO_UDP, udp(sport, 443, Bytes(100, 0x5a))));
}

// One stale flow per call, filed outside the timed run; the kernel times the packet alone.
double stale_flows(uint8_t proto, uint32_t want_verdict) {
  Classifier c(8);
  return mean_of_single_runs(3, 10000, [&](int call) {
    const auto sport = static_cast<uint16_t>(1024 + call);
    c.add_stale_flow(flow_of(proto, sport, 443));
    uint32_t verdict = 0;
    const uint32_t ns =
        c.run(proto == IPPROTO_TCP ? client_segment(sport) : client_datagram(sport), 1, nullptr, &verdict);
    if (verdict != want_verdict) {
      throw Failure{"stale flow: verdict " + std::to_string(verdict) + ", want " +
                    std::to_string(want_verdict)};
    }
    return ns;
  });
}

// lan_egress on a loaded object with one flow pinned to wan.
class Egress {
 public:
  Egress()
      : obj_(
            g_egress_object, [this] { return (skel_ = lan_egress__open_and_load()) ? skel_->obj : nullptr; },
            [this] { lan_egress__destroy(skel_); }, "lan_egress") {
    const flow_key key = flow_of(IPPROTO_TCP, 40000, 443);
    flow_value v{};
    v.mark = static_cast<uint32_t>(kWan) << 8;
    v.generation = 1;
    v.uplink_id = kWan;
    v.origin = FLOW_ORIGIN_RULE;
    check(bpf_map_update_elem(obj_.map("flows"), &key, &v, BPF_ANY), "flows");
  }
  Egress(const Egress&) = delete;
  Egress& operator=(const Egress&) = delete;

  uint32_t run(const Bytes& frame, uint32_t repeat) {
    __sk_buff ctx_in{};
    ctx_in.ifindex = 1;  // the loopback: a test run needs an existing device
    return tc_test_run(obj_.prog("lan_egress"), frame, repeat, ctx_in).ns_per_run;
  }
  bool learnt() {
    const flow_key key = flow_of(IPPROTO_TCP, 40000, 443);
    tcp_seen seen{};
    return bpf_map_lookup_elem(obj_.map("tcp_seen"), &key, &seen) == 0 && seen.next_seq == 5100;
  }

 private:
  lan_egress* skel_ = nullptr;
  Object obj_;
};

// lan_egress's packet: a remote's data segment toward the client of the pinned flow, or a UDP
// datagram it passes without a lookup.
class EgressCase {
 public:
  explicit EgressCase(bool tcp_known_flow)
      : frame_(tcp_known_flow
                   ? ethernet(ETH_P_IP, ipv4(kServer, kClient, IPPROTO_TCP,
                                             tcp_segment(443, 40000, 5000, 1000, kTcpAck,
                                                         TcpSegment{tcp_timestamps(3, 4), Bytes(100, 0x42)})))
                   : ethernet(ETH_P_IP,
                              ipv4(kServer, kClient, IPPROTO_UDP, udp(443, 40000, Bytes(100, 0x42))))) {
    e_.run(frame_, 1);
    if (tcp_known_flow && !e_.learnt()) {
      throw Failure{"lan_egress: tcp_seen did not learn next_seq 5100"};
    }
  }
  double timed_round() { return e_.run(frame_, kRepeat); }

 private:
  Egress e_;
  Bytes frame_;
};

Bytes syn_from_port(uint16_t sport) {
  return ethernet(ETH_P_IP, ipv4("10.0.0.10", "203.0.113.80", IPPROTO_TCP, tcp(sport, 443, 1, 0, kTcpSyn)));
}

// A lan_ingress with one flow filed, ready to time its established packet.
class EstablishedFlow {
 public:
  // `compared`: --compare-object's, which may be a variant cut short to time a part of the path
  // (it need not mark): a wrong mark is reported, not fatal.
  EstablishedFlow(const std::string& object, bool compared)
      : c_(8, false, object), frame_(syn_from_port(40000)) {
    uint32_t mark = 0;
    c_.run(frame_, 1, &mark);  // files the flow
    if (mark != (static_cast<uint32_t>(kLte) << 8)) {
      const std::string what = "established flow" + std::string(compared ? " (--compare-object)" : "") +
                               ": unexpected mark " + std::to_string(mark);
      if (!compared) throw Failure{what};
      std::fprintf(stderr, "%s\n", what.c_str());
    }
  }
  double timed_round() { return c_.run(frame_, kRepeat); }

 private:
  Classifier c_;
  Bytes frame_;
};

// The floor of the repeat=1 method: the same known-flow packet, one run per call.
double established_flow_single_runs() {
  constexpr int kCalls = 10000;
  Classifier c(8);
  const Bytes frame = syn_from_port(40000);
  c.run(frame, 1);
  return mean_of_single_runs(3, kCalls, [&](int) { return c.run(frame, 1); });
}

double new_flows(uint32_t n_rules, bool default_rule = false) {
  Classifier c(n_rules, default_rule);
  const uint32_t want = n_rules == 0 ? 0 : static_cast<uint32_t>(kLte) << 8;
  return mean_of_single_runs(3, 10000, [&](int call) {
    uint32_t mark = 0;
    const uint32_t ns = c.run(syn_from_port(static_cast<uint16_t>(1024 + call)), 1, &mark);
    if (mark != want) {
      throw Failure{"new flow: the last rule did not decide (mark " + std::to_string(mark) + ")"};
    }
    return ns;
  });
}

// The interleaved repeat method: each round runs the empty program, then every case, one test run
// of kRepeat each (e a b e a b ...), so that a case and its floor see the same moment of a noisy
// machine. A case is quoted by the median of its per-round differences from the empty program,
// with their min..max: a burst of load moves a round's pair together and drops out of the
// difference, where it would move a median of separate runs by tens of ns.
struct Spread {
  double median = 0, min = 0, max = 0;
};

Spread spread_of(const std::vector<double>& v) {
  return Spread{median(v), *std::min_element(v.begin(), v.end()), *std::max_element(v.begin(), v.end())};
}

struct Interleaved {
  std::vector<double> empty;               // ns per run, one per round
  std::vector<std::vector<double>> cases;  // [case][round]

  [[nodiscard]] Spread absolute(size_t i) const { return spread_of(cases[i]); }
  // Case i minus case j (or the empty program, j < 0), round by round.
  [[nodiscard]] Spread difference(size_t i, int j = -1) const {
    std::vector<double> d;
    for (size_t r = 0; r < empty.size(); r++) {
      d.push_back(cases[i][r] - (j < 0 ? empty[r] : cases[static_cast<size_t>(j)][r]));
    }
    return spread_of(d);
  }
};

Interleaved interleave(int empty_fd, const std::vector<std::function<double()>>& cases) {
  const Bytes frame = syn_from_port(40000);
  Interleaved out;
  out.cases.resize(cases.size());
  for (int round = 0; round < kInterleavedRounds; round++) {
    out.empty.push_back(tc_test_run(empty_fd, frame, kRepeat, __sk_buff{}).ns_per_run);
    for (size_t i = 0; i < cases.size(); i++) {
      out.cases[i].push_back(cases[i]());
    }
  }
  return out;
}

double empty_single_runs(int fd) {
  const Bytes frame = syn_from_port(40000);
  return mean_of_single_runs(3, 10000,
                             [&](int) { return tc_test_run(fd, frame, 1, __sk_buff{}).ns_per_run; });
}

struct Options {
  bool quick = false;
  bool established_only = false;  // --established: the empty and established rows alone
};

Options parse_options(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; i++) {
    const std::string arg = argv[i];
    if (arg == "--quick") {
      o.quick = true;
    } else if (arg == "--established") {
      o.established_only = true;
    } else if (arg == "--object" && i + 1 < argc) {
      g_ingress_object = argv[++i];
    } else if (arg == "--compare-object" && i + 1 < argc) {
      g_compare_object = argv[++i];
    } else if (arg == "--object-egress" && i + 1 < argc) {
      g_egress_object = argv[++i];
    } else {
      throw Failure{
          "usage: classifier_bench [--object lan_ingress.bpf.o] [--compare-object lan_ingress.bpf.o] "
          "[--object-egress lan_egress.bpf.o] [--quick] [--established]"};
    }
  }
  return o;
}

}  // namespace

namespace {

// One row of the table. `above` is the figure above the empty program of the row's method; for the
// interleaved repeat rows, the median of the per-round differences with their min..max.
struct Row {
  std::string what;
  double ns;
  std::string above;  // empty for the empty programs themselves
  std::string how;
};

std::string format_ns(double ns) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.0f", ns);
  return buf;
}

std::string format_spread(const Spread& s) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.0f (%.0f..%.0f)", s.median, s.min, s.max);
  return buf;
}

class Table {
 public:
  void add(const std::string& what, double ns, const std::string& above, const std::string& how) {
    std::printf("%s: %.1f ns/packet%s%s (%s)\n", what.c_str(), ns, above.empty() ? "" : ", above empty ",
                above.c_str(), how.c_str());
    std::fflush(stdout);
    rows_.push_back(Row{what, ns, above, how});
  }
  void print() const {
    std::printf("\n| case | ns/packet | above empty | method |\n|---|---|---|---|\n");
    for (const Row& r : rows_) {
      std::printf("| %s | %.0f | %s | %s |\n", r.what.c_str(), r.ns, r.above.c_str(), r.how.c_str());
    }
  }

 private:
  std::vector<Row> rows_;
};

const std::string kInterleavedHow = "repeat=1000000 on one packet, kernel-reported mean; " +
                                    std::to_string(kInterleavedRounds) +
                                    " rounds interleaved with the empty program: medians, above empty "
                                    "= median (min..max) of the per-round differences";
const std::string kSingleHow =
    "repeat=1 per call, 10000 calls, mean of kernel-reported durations, median of 3";

// The empty program and the established flow (and --compare-object's), interleaved round by round.
void established_rows(Table& table, int empty) {
  EstablishedFlow current(g_ingress_object, false);
  std::vector<std::function<double()>> cases{[&] { return current.timed_round(); }};
  std::unique_ptr<EstablishedFlow> compare;
  if (!g_compare_object.empty()) {
    compare = std::make_unique<EstablishedFlow>(g_compare_object, true);
    cases.emplace_back([&] { return compare->timed_round(); });
  }
  const Interleaved run = interleave(empty, cases);
  table.add("empty tc program", spread_of(run.empty).median, "", kInterleavedHow);
  table.add("established flow (flows hit)", run.absolute(0).median, format_spread(run.difference(0)),
            kInterleavedHow);
  if (compare) {
    table.add("established flow, --compare-object " + g_compare_object, run.absolute(1).median,
              format_spread(run.difference(1)), kInterleavedHow);
    std::printf("established flow, this object minus --compare-object, per round: %s ns\n",
                format_spread(run.difference(0, 1)).c_str());
  }
}

void egress_rows(Table& table, int empty) {
  EgressCase tcp(true);
  EgressCase udp(false);
  const Interleaved run =
      interleave(empty, {[&] { return tcp.timed_round(); }, [&] { return udp.timed_round(); }});
  table.add("lan_egress, TCP toward a client of a pinned flow", run.absolute(0).median,
            format_spread(run.difference(0)), kInterleavedHow + "; tcp_seen updated in place");
  table.add("lan_egress, UDP (passed untouched)", run.absolute(1).median, format_spread(run.difference(1)),
            kInterleavedHow);
}

}  // namespace

int main(int argc, char** argv) {
  quiet_libbpf_and_pin_to_cpu0();
  Table table;
  try {
    const Options opt = parse_options(argc, argv);
    const int empty = load_empty_tc();
    established_rows(table, empty);
    if (opt.established_only) {
      table.print();
      return 0;
    }
    // The one-run-per-call rows are quoted above the empty program timed the same way.
    const double empty_single = empty_single_runs(empty);
    auto single_row = [&](const std::string& what, double ns, const std::string& how) {
      table.add(what, ns, format_ns(ns - empty_single), how);
    };
    table.add("empty tc program, one run per call", empty_single, "",
              kSingleHow + ", the same packet each call");
    single_row("established flow, one run per call", established_flow_single_runs(),
               kSingleHow + ": the floor of the new-flow and stale-flow methods");
    single_row("new flow, no rules (unmatched)", new_flows(0), kSingleHow + ", distinct source ports");
    single_row("new flow, default rule only (matches everything)", new_flows(1, true),
               kSingleHow + ", distinct source ports");
    for (uint32_t n : {8u, 64u, 256u}) {
      if (opt.quick && n > 8) continue;
      single_row("new flow, " + std::to_string(n) + " rules, last matches", new_flows(n),
                 kSingleHow + ", distinct source ports");
    }
    if (!opt.quick) {
      single_row("stale TCP flow -> RST to the client", stale_flows(IPPROTO_TCP, TC_ACT_REDIRECT),
                 kSingleHow + ", a stale flow filed before each call");
      single_row("stale UDP flow -> classified again (8 rules)", stale_flows(IPPROTO_UDP, TC_ACT_OK),
                 kSingleHow + ", a stale flow filed before each call");
      egress_rows(table, empty);
    }
    close(empty);
    table.print();
  } catch (const Failure& f) {
    std::fprintf(stderr, "classifier_bench: %s\n", f.what.c_str());
    return 1;
  }
  return 0;
}
