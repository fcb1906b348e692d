// New-flow cost of the bit-vector classifier (bpf/lib/rule_match.h) at 0, 8, 64 and 256 rules, beside an
// empty tc program measured the same way in the same run.
//
// Method: BPF_PROG_TEST_RUN with repeat = 1 per call (a repeat would see the flow the first run filed),
// every call a fresh 5-tuple (source port and source address advance), the kernel-reported duration
// averaged over 10000 calls; the configurations are interleaved (empty, 0, 8, 64, 256, empty, 0, ...)
// for 5 rounds and each row is the median of its rounds. Rules 0 .. N-2 are full (8 source CIDRs,
// 8 destination CIDRs, 8 source and 8 destination port ranges) and fail at their destination list;
// rule N-1 matches. The tables are written as the daemon writes them (policy/rule_tables.h,
// datapath/rule_table_maps.h). The cost includes the `flows` insert and the policy pick.
//
// Run as root: sudo ./bitvec_bench [--rounds N] [--object lan_ingress.bpf.o]... Pinned to one CPU; numbers
// vary with the CPU and kernel. Each --object (a variant of lan_ingress, e.g. an experiment) is timed beside
// the built-in one, interleaved in the same rounds, so their rows compare on equal terms.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <netinet/in.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "bench/bench_object.h"
#include "bench/bench_util.h"
#include "bench/classifier_rules.h"
#include "datapath/rule_table_maps.h"
#include "lan_ingress.skel.h"
#include "maps/uplinkd_maps.h"
#include "policy/rule_tables.h"
#include "tests/bpf/packet_builder.h"

namespace {

using namespace uplinkd::bpftest;
using namespace uplinkd::bench;

constexpr int kCalls = 10000;
int g_rounds = 5;  // --rounds

// A fresh 5-tuple per call: 60000 source ports per source address.
Bytes syn_of_call(int call) {
  const std::string src = "10.0." + std::to_string(call / 60000 % 250) + ".10";
  const auto sport = static_cast<uint16_t>(1024 + call % 60000);
  return ethernet(ETH_P_IP, ipv4(src.c_str(), "203.0.113.80", IPPROTO_TCP, tcp(sport, 443, 1, 0, kTcpSyn)));
}

class Classifier {
 public:
  Classifier(const std::string& object, uint32_t n_rules)
      : obj_(
            object, [this] { return (skel_ = lan_ingress__open_and_load()) ? skel_->obj : nullptr; },
            [this] { lan_ingress__destroy(skel_); }, "lan_ingress"),
        n_rules_(n_rules) {
    write_uplinks_and_policies(obj_.map("uplinks"), obj_.map("policies"));
    std::vector<rule_entry> rules;
    rules.reserve(n_rules);
    for (uint32_t i = 0; i < n_rules; i++) {
      rules.push_back(full_rule(i + 1 == n_rules));
      check(bpf_map_update_elem(obj_.map("rules"), &i, &rules.back(), BPF_ANY), "rules");
    }
    const uplinkd::datapath::RuleTableFds fds{obj_.map("rule_tbl_sel"),   obj_.map("rule_tbl"),
                                              obj_.map("rule_tbl_ports"), obj_.map("rule_tbl_addr"),
                                              obj_.map("rule_tbl_iface"), obj_.map_or_none("rule_tbl_ext")};
    check(uplinkd::datapath::write_rule_tables(fds, uplinkd::policy::compile_rule_tables(rules)), "tables");
    const classifier_cfg cfg{kMmxMask, n_rules, kMmxMask, 600, 600, 600, UPLINKD_CFG_RESET_STALE_TCP, 0};
    uint32_t zero = 0;
    check(bpf_map_update_elem(obj_.map("classifier_cfg"), &zero, &cfg, BPF_ANY), "classifier_cfg");
    prog_fd_ = obj_.prog("lan_ingress");
  }

  uint32_t run_new_flow(int call) {
    __sk_buff ctx_in{};
    ctx_in.ingress_ifindex = 11;
    const TcRunResult r = tc_test_run(prog_fd_, syn_of_call(call), 1, ctx_in);
    const uint32_t want = n_rules_ == 0 ? 0 : static_cast<uint32_t>(kLte) << 8;
    if (r.mark != want)
      throw Failure{"new flow: the last rule did not decide (mark " + std::to_string(r.mark) + ")"};
    return r.ns_per_run;
  }
  uint32_t n_rules() const { return n_rules_; }
  const std::string& label() const { return obj_.label(); }

 private:
  lan_ingress* skel_ = nullptr;  // before obj_, which sets it
  Object obj_;
  uint32_t n_rules_;
  int prog_fd_ = -1;
};

// The floor of a tc test run (bench_util.h's empty program).
class EmptyTc {
 public:
  EmptyTc() : fd_(load_empty_tc()) {}
  ~EmptyTc() { close(fd_); }
  EmptyTc(const EmptyTc&) = delete;
  EmptyTc& operator=(const EmptyTc&) = delete;

  uint32_t run(int call) {
    __sk_buff ctx_in{};
    ctx_in.ingress_ifindex = 11;
    return tc_test_run(fd_, syn_of_call(call), 1, ctx_in).ns_per_run;
  }

 private:
  int fd_ = -1;
};

double mean_of_calls(int first_call, const std::function<uint32_t(int)>& one_call) {
  uint64_t total = 0;
  for (int i = 0; i < kCalls; i++) total += one_call(first_call + i);
  return static_cast<double>(total) / kCalls;
}

}  // namespace

int main(int argc, char** argv) {
  quiet_libbpf_and_pin_to_cpu0();
  std::vector<std::string> objects = {""};  // "": the built-in object
  for (int i = 1; i < argc; i++) {
    const std::string arg = argv[i];
    if (arg == "--object" && i + 1 < argc) {
      objects.emplace_back(argv[++i]);
    } else if (arg == "--rounds" && i + 1 < argc) {
      g_rounds = std::max(1, std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr, "usage: bitvec_bench [--rounds N] [--object lan_ingress.bpf.o]...\n");
      return 2;
    }
  }
  try {
    const std::vector<uint32_t> counts = {0, 8, 64, 256};
    EmptyTc empty;
    std::vector<std::unique_ptr<Classifier>> classifiers;
    for (const std::string& object : objects) {
      for (uint32_t n : counts) classifiers.push_back(std::make_unique<Classifier>(object, n));
    }
    std::vector<double> empty_rounds;
    std::vector<std::vector<double>> rounds(classifiers.size());
    for (int round = 0; round < g_rounds; round++) {
      const int first = round * kCalls;  // every call of a classifier a new 5-tuple
      empty_rounds.push_back(mean_of_calls(first, [&](int call) { return empty.run(call); }));
      for (size_t k = 0; k < classifiers.size(); k++) {
        rounds[k].push_back(
            mean_of_calls(first, [&](int call) { return classifiers[k]->run_new_flow(call); }));
      }
    }
    const double floor = median(empty_rounds);
    std::printf("| case | ns/packet | above the empty tc program | spread of rounds |\n|---|---|---|---|\n");
    std::printf("| empty tc program | %.0f | - | %.0f-%.0f |\n", floor,
                *std::min_element(empty_rounds.begin(), empty_rounds.end()),
                *std::max_element(empty_rounds.begin(), empty_rounds.end()));
    for (size_t k = 0; k < classifiers.size(); k++) {
      const Classifier& c = *classifiers[k];
      const double ns = median(rounds[k]);
      const auto [lo, hi] = std::minmax_element(rounds[k].begin(), rounds[k].end());
      std::printf("| %snew flow, %u rules%s | %.0f | %.0f | %.0f-%.0f |\n",
                  c.label().empty() ? "" : (c.label() + ": ").c_str(), c.n_rules(),
                  c.n_rules() == 0 ? " (unmatched)" : ", last matches", ns, ns - floor, *lo - floor,
                  *hi - floor);
    }
    std::printf(
        "\nrepeat=1 per call, a fresh 5-tuple per call, %d calls per round, %d interleaved rounds, median;\n"
        "spread: the rounds' lowest and highest, above the empty program's median\n",
        kCalls, g_rounds);
  } catch (const Failure& f) {
    std::fprintf(stderr, "bitvec_bench: %s\n", f.what.c_str());
    return 1;
  }
  return 0;
}
