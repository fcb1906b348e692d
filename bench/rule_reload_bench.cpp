// What a rule reload costs the daemon's event loop: compiling the bit-vector classifier's tables
// (policy/rule_tables.h) and writing them into the inactive table set, then the flip
// (datapath/rule_table_maps.h, RuleTableWriter), as policy_runtime.cpp does on a reload and when a
// rule's src_iface changes ifindex. Both run on the event loop, so together they must stay well under
// the loop's 10 ms budget (issue 14 item 7: probes keep their schedule).
//
// Worst case by construction: N rules, each with full lists of its own (8 source and 8 destination
// IPv4 /24s no other rule shares, 8 source and 8 destination port ranges, an input interface), so
// the address tries hold 16 × N prefixes plus their closure and every field's table is as large as
// the rule count allows. The maps are a loaded lan_ingress's own, both table sets full before timing.
//
// The writer writes only what differs from what the inactive set holds, so what a reload costs
// depends on what changed. Four cases, each on its own loaded lan_ingress:
//   first  — a writer that knows nothing (the daemon's first write after start or adoption): it reads
//            the set's entries from the address trie and interface hash first; "all changed" then
//            replaces every entry, "same rules" (an upgrade over the same configuration) none;
//   all    — every entry differs from the inactive set's (three variants of the N rules in turn, each
//            with other /24s and ports): deletes and writes everything, the most a known set costs;
//   one    — one rule changed from the previous reload (the inactive set, two reloads old, differs
//            in two rules);
//   same   — the same rules again (a reload that changed nothing the tables hold).
// Rounds interleave the cases, so a burst of load on this shared machine hits them all alike.
//
// Method: for each N in 8, 64, 256: 11 rounds; per case, compile and write + flip timed (median and
// max), and for N = 256 the write's split by phase (RuleWriteStats, medians) and elements touched.
// Wall-clock time (steady clock), pinned to CPU 0.
//
// Run as root: sudo ./rule_reload_bench
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <netinet/in.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "bench/classifier_rules.h"
#include "lan_ingress.skel.h"
#include "maps/uplinkd_maps.h"
#include "tests/bpf/rule_tables_helper.h"

namespace {

using namespace uplinkd::bench;
using uplinkd::datapath::RuleTableWriter;
using uplinkd::datapath::RuleWriteStats;
using Clock = std::chrono::steady_clock;

constexpr int kRounds = 11;

// Rule i's own /24s in variant v: sources 10.<i/4>.<(i%4)*64 + 8v + k>.0, destinations the same
// under 10.<128 + i/4>.
addr_match own_prefix(uint32_t rule, uint32_t variant, int k, bool destination) {
  const uint32_t second = (destination ? 128 : 0) + rule / 4;
  const uint32_t third = (rule % 4) * 64 + 8 * variant + static_cast<uint32_t>(k);
  return v4_cidr("10." + std::to_string(second) + "." + std::to_string(third) + ".0", 24);
}

rule_entry worst_case_rule(uint32_t i, uint32_t variant) {
  rule_entry r{};
  r.family = 4;
  r.proto = IPPROTO_TCP;
  r.policy_id = i % 2 == 0 ? kPolicyWan : kPolicyLte;
  r.src_ifindex = 2 + i % 4;
  r.n_src = r.n_dst = r.n_sport = r.n_dport = 8;
  for (int k = 0; k < 8; k++) {
    r.src[k] = own_prefix(i, variant, k, false);
    r.dst[k] = own_prefix(i, variant, k, true);
    // every rule's ranges its own; a variant shifts them by 0..2, inside the rule's 10-port step
    const auto base = static_cast<uint16_t>(1000 + 80 * i + 10 * k + variant);
    r.sport[k] = port_range{base, static_cast<uint16_t>(base + 3)};
    r.dport[k] = port_range{static_cast<uint16_t>(base + 5), static_cast<uint16_t>(base + 7)};
  }
  return r;
}

std::vector<rule_entry> worst_case_rules(uint32_t n, uint32_t variant) {
  std::vector<rule_entry> rules;
  rules.reserve(n);
  for (uint32_t i = 0; i < n; i++) rules.push_back(worst_case_rule(i, variant));
  return rules;
}

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

struct Reload {
  double compile_ms, write_ms;
  RuleWriteStats stats;
};

enum class Case { First, FirstSame, All, One, Same };
constexpr std::array kCases = {Case::First, Case::FirstSame, Case::All, Case::One, Case::Same};

const char* name(Case c) {
  switch (c) {
    case Case::First:
      return "first, all changed";
    case Case::FirstSame:
      return "first, same rules";
    case Case::All:
      return "all changed";
    case Case::One:
      return "one rule changed";
    case Case::Same:
      return "same rules";
  }
  return "?";
}

// One case's maps, writer and reload sequence.
class Scenario {
 public:
  Scenario(Case c, uint32_t n) : case_(c), n_(n), skel_(lan_ingress__open_and_load()) {
    if (skel_ == nullptr)
      throw Failure{std::string("loading lan_ingress: ") + std::strerror(errno) + " (run as root)"};
    fds_ = uplinkd::testing::rule_table_fds(skel_);
    for (uint32_t v = 0; v < 3; v++) variants_.push_back(worst_case_rules(n, v));
    reload();  // both table sets full from here on
    reload();
  }
  ~Scenario() { lan_ingress__destroy(skel_); }
  Scenario(const Scenario&) = delete;
  Scenario& operator=(const Scenario&) = delete;

  Reload reload() {
    const std::vector<rule_entry> rules = next_rules();
    if (case_ == Case::First || case_ == Case::FirstSame) writer_ = std::make_unique<RuleTableWriter>();
    const auto start = Clock::now();
    const uplinkd::policy::RuleTables tables = uplinkd::policy::compile_rule_tables(rules);
    const double compile_ms = ms_since(start);
    const auto write_start = Clock::now();
    check(writer_->write(fds_, tables), "writing the rule tables");
    const double write_ms = ms_since(write_start);
    ++count_;
    return {compile_ms, write_ms, writer_->last_stats()};
  }

 private:
  std::vector<rule_entry> next_rules() const {
    switch (case_) {
      case Case::First:
      case Case::All:
        return variants_[count_ % 3];
      case Case::One: {
        std::vector<rule_entry> rules = variants_[0];
        rules[(count_ * 37) % n_] = variants_[1][(count_ * 37) % n_];
        return rules;
      }
      case Case::FirstSame:
      case Case::Same:
        return variants_[0];
    }
    return {};
  }

  Case case_;
  uint32_t n_;
  lan_ingress* skel_;
  uplinkd::datapath::RuleTableFds fds_{};
  std::vector<std::vector<rule_entry>> variants_;
  std::unique_ptr<RuleTableWriter> writer_ = std::make_unique<RuleTableWriter>();
  uint32_t count_ = 0;
};

template <typename Pick>
std::pair<double, double> median_max(const std::vector<Reload>& reloads, Pick pick) {
  std::vector<double> v;
  v.reserve(reloads.size());
  for (const auto& r : reloads) v.push_back(pick(r));
  std::sort(v.begin(), v.end());
  return {v[v.size() / 2], v.back()};
}

void report(uint32_t n, Case c, const std::vector<Reload>& reloads) {
  const auto [compile_med, compile_max] = median_max(reloads, [](const Reload& r) { return r.compile_ms; });
  const auto [write_med, write_max] = median_max(reloads, [](const Reload& r) { return r.write_ms; });
  const auto [total_med, total_max] =
      median_max(reloads, [](const Reload& r) { return r.compile_ms + r.write_ms; });
  std::printf("| %u | %s | %.2f / %.2f | %.2f / %.2f | %.2f / %.2f |\n", n, name(c), compile_med, compile_max,
              write_med, write_max, total_med, total_max);
}

void report_split(Case c, const std::vector<Reload>& reloads) {
  auto med = [&](auto pick) { return median_max(reloads, pick).first; };
  const RuleWriteStats& s = reloads.back().stats;
  std::printf("| %s | %.2f | %.2f | %.2f (%u) | %.2f (%u) | %.2f (%u) | %.2f (%u + %u) | %.3f |\n", name(c),
              med([](const Reload& r) { return r.stats.walk_ms; }),
              med([](const Reload& r) { return r.stats.addr_plan_ms; }),
              med([](const Reload& r) { return r.stats.addr_delete_ms; }), s.addr_deleted,
              med([](const Reload& r) { return r.stats.addr_write_ms; }), s.addr_written,
              med([](const Reload& r) { return r.stats.ports_ms; }), s.ports_written,
              med([](const Reload& r) { return r.stats.iface_ms; }), s.iface_deleted, s.iface_written,
              med([](const Reload& r) { return r.stats.arrays_ms; }));
}

}  // namespace

int main() {
  quiet_libbpf_and_pin_to_cpu0();
  try {
    std::printf(
        "| rules | case | compile ms (median / max) | write + flip ms | whole reload ms |\n"
        "|---|---|---|---|---|\n");
    std::vector<std::pair<Case, std::vector<Reload>>> splits;
    for (uint32_t n : {8U, 64U, 256U}) {
      std::vector<std::unique_ptr<Scenario>> scenarios;
      scenarios.reserve(kCases.size());
      for (Case c : kCases) scenarios.push_back(std::make_unique<Scenario>(c, n));
      std::vector<std::vector<Reload>> reloads(kCases.size());
      for (int round = 0; round < kRounds; round++) {
        for (size_t c = 0; c < kCases.size(); c++) reloads[c].push_back(scenarios[c]->reload());
      }
      for (size_t c = 0; c < kCases.size(); c++) report(n, kCases[c], reloads[c]);
      if (n == 256U) {
        for (size_t c = 0; c < kCases.size(); c++) splits.emplace_back(kCases[c], reloads[c]);
      }
    }
    std::printf(
        "\nwrite split at 256 rules, ms (medians; elements touched in the last reload)\n"
        "| case | learn set | trie diff | trie deletes | trie writes | port slots | iface del + write | "
        "rule_tbl + "
        "ext |\n|---|---|---|---|---|---|---|---|\n");
    for (const auto& [c, reloads] : splits) report_split(c, reloads);
    std::printf(
        "\n%d interleaved rounds per row after two untimed reloads; each rule with 8 source and 8 "
        "destination /24s of its own, 8 + 8 port ranges, an input interface\n",
        kRounds);
  } catch (const Failure& f) {
    std::fprintf(stderr, "rule_reload_bench: %s\n", f.what.c_str());
    return 1;
  }
  return 0;
}
