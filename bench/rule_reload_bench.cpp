// What a rule reload costs the daemon's event loop: compiling the bit-vector classifier's tables
// (policy/rule_tables.h) and writing them into the inactive table set, then the flip
// (datapath/rule_table_maps.h), as policy_runtime.cpp does on a reload and when a rule's src_iface
// changes ifindex. Both run on the event loop, so together they must stay well under the loop's
// 10 ms budget (issue 14 item 7: probes keep their schedule).
//
// Worst case by construction: N rules, each with full lists of its own (8 source and 8 destination
// IPv4 /24s no other rule shares, 8 source and 8 destination port ranges, an input interface), so
// the address tries hold 16 × N prefixes plus their closure and every field's table is as large as
// the rule count allows. The maps are a loaded lan_ingress's own, and the write empties the previous
// set first, as every reload after the first does (two writes before timing, so both sets are full).
//
// Method: for each N in 8, 64, 256: 11 reloads, each timed as compile, write + flip, and the whole;
// median and max. Wall-clock time (CLOCK_MONOTONIC), pinned to CPU 0.
//
// Run as root: sudo ./rule_reload_bench
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <netinet/in.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "bench/classifier_rules.h"
#include "lan_ingress.skel.h"
#include "maps/uplinkd_maps.h"
#include "tests/bpf/rule_tables_helper.h"

namespace {

using namespace uplinkd::bench;
using Clock = std::chrono::steady_clock;

constexpr int kReloads = 11;

// Rule i's own /24s: sources 10.<i/4>.<(i%4)*64 + k>.0, destinations 10.<128 + i/4>.<(i%4)*64 + k>.0.
addr_match own_prefix(uint32_t rule, int k, bool destination) {
  const uint32_t second = (destination ? 128 : 0) + rule / 4;
  const uint32_t third = (rule % 4) * 64 + static_cast<uint32_t>(k);
  return v4_cidr("10." + std::to_string(second) + "." + std::to_string(third) + ".0", 24);
}

rule_entry worst_case_rule(uint32_t i) {
  rule_entry r{};
  r.family = 4;
  r.proto = IPPROTO_TCP;
  r.policy_id = i % 2 == 0 ? kPolicyWan : kPolicyLte;
  r.src_ifindex = 2 + i % 4;
  r.n_src = r.n_dst = r.n_sport = r.n_dport = 8;
  for (int k = 0; k < 8; k++) {
    r.src[k] = own_prefix(i, k, false);
    r.dst[k] = own_prefix(i, k, true);
    const auto base = static_cast<uint16_t>(1000 + 80 * i + 10 * k);  // every rule's ranges its own
    r.sport[k] = port_range{base, static_cast<uint16_t>(base + 3)};
    r.dport[k] = port_range{static_cast<uint16_t>(base + 5), static_cast<uint16_t>(base + 7)};
  }
  return r;
}

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

struct Reload {
  double compile_ms, write_ms;
};

Reload one_reload(const uplinkd::datapath::RuleTableFds& fds, const std::vector<rule_entry>& rules) {
  const auto start = Clock::now();
  const uplinkd::policy::RuleTables tables = uplinkd::policy::compile_rule_tables(rules);
  const double compile_ms = ms_since(start);
  const auto write_start = Clock::now();
  check(uplinkd::datapath::write_rule_tables(fds, tables), "writing the rule tables");
  return {compile_ms, ms_since(write_start)};
}

void report(uint32_t n, std::vector<Reload> reloads) {
  auto column = [&](auto pick) {
    std::vector<double> v;
    v.reserve(reloads.size());
    for (const auto& r : reloads) v.push_back(pick(r));
    std::sort(v.begin(), v.end());
    return std::pair{v[v.size() / 2], v.back()};
  };
  const auto [compile_med, compile_max] = column([](const Reload& r) { return r.compile_ms; });
  const auto [write_med, write_max] = column([](const Reload& r) { return r.write_ms; });
  const auto [total_med, total_max] = column([](const Reload& r) { return r.compile_ms + r.write_ms; });
  std::printf("| %u | %.2f / %.2f | %.2f / %.2f | %.2f / %.2f |\n", n, compile_med, compile_max, write_med,
              write_max, total_med, total_max);
}

}  // namespace

int main() {
  quiet_libbpf_and_pin_to_cpu0();
  try {
    std::printf(
        "| rules | compile ms (median / max) | write + flip ms | whole reload ms |\n|---|---|---|---|\n");
    for (uint32_t n : {8U, 64U, 256U}) {
      lan_ingress* skel = lan_ingress__open_and_load();
      if (skel == nullptr)
        throw Failure{std::string("loading lan_ingress: ") + std::strerror(errno) + " (run as root)"};
      std::vector<rule_entry> rules;
      rules.reserve(n);
      for (uint32_t i = 0; i < n; i++) rules.push_back(worst_case_rule(i));
      const auto fds = uplinkd::testing::rule_table_fds(skel);
      one_reload(fds, rules);  // both table sets full from here on
      one_reload(fds, rules);
      std::vector<Reload> reloads;
      reloads.reserve(kReloads);
      for (int k = 0; k < kReloads; k++) reloads.push_back(one_reload(fds, rules));
      report(n, reloads);
      lan_ingress__destroy(skel);
    }
    std::printf(
        "\n%d reloads per row after two untimed ones; each rule with 8 source and 8 destination /24s of "
        "its own, 8 + 8 port ranges, an input interface\n",
        kReloads);
  } catch (const Failure& f) {
    std::fprintf(stderr, "rule_reload_bench: %s\n", f.what.c_str());
    return 1;
  }
  return 0;
}
