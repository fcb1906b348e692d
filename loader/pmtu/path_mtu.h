// Measures the path MTU of one uplink with don't-fragment ICMP echoes whose replies the XDP
// program reports, like health probes, through the `probes` map and the ring buffer.
//
// Why echoes and not ICMP errors: "fragmentation needed" / "packet too big" are what broken paths
// lose (the black holes path MTU discovery fails on), so the search trusts only echo replies: a
// size counts as passing when its echo came back, as failing when it did not.
//
// The search, per measurement (all sizes are whole IP packets: IPv4 20 + 8 + payload, IPv6
// 40 + 8 + payload; every target searched in parallel, each probe one DF echo registered in
// `probes` before it leaves):
//   Round 1 per target: a small size (128 bytes: does the target answer at all?), the floor
//   (IPv4 576, IPv6 1280; the search never goes below it), the device MTU, and evenly spaced sizes
//   between floor and device MTU, probes_per_round sizes in all. Nothing above the device MTU is
//   ever sent.
//   A round ends when every probe is answered or after round_timeout_s. Then lo = the largest
//   answered size, hi = the smallest unanswered size above lo. When hi - lo > 1, the next round
//   sends evenly spaced sizes in (lo, hi) plus, once per hi, hi itself again (its failure may
//   have been a plain loss); a send refused locally (EMSGSIZE) is certain and not retried.
//   A target is done when nothing above lo failed, when hi == lo + 1, when it answered nothing,
//   or when it answered nothing from the floor up. Its figure is lo.
//   With the defaults (16 probes per round, 1500 device MTU) IPv6 needs two rounds and IPv4
//   three when some size is too big (round 1's gaps are 16 resp. 66 bytes wide); one round when
//   the device MTU passes. Each round that has a too-big size lasts round_timeout_s.
// The uplink's path MTU is the largest figure of any target: a target that drops big echoes must
// not make the uplink look small while another proves the path. It is never reported low: no
// answer at all, or a best figure below 1280 bytes (below the device MTU if that is smaller),
// leaves it unknown with a note saying why.
//
// The echoes use their own ident and their own ProbeTransport, so nothing of theirs counts
// toward the uplink's health (UplinkMonitor ignores keys it did not send, as this class does).
// A size also fails when its reply comes back fragmented (the XDP program matches no fragment),
// so the figure is that of the smaller direction for sizes whose replies are as large.
#pragma once

#include <sys/socket.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/ip_address.h"
#include "health/probe_transport.h"
#include "maps/uplinkd_maps.h"

namespace uplinkd::datapath {
class Datapath;
}

namespace uplinkd::pmtu {

// ---- the search arithmetic: pure, header-only (unit-tested without the datapath) ----------------

constexpr int kSmallSize = 128;        // round 1's "does it answer at all" size
constexpr int kFloorV4 = 576;          // every IPv4 host must accept this (RFC 791)
constexpr int kIpv6MinimumMtu = 1280;  // RFC 8200; also the least figure ever reported
constexpr int kMinProbesPerRound = 4;  // small, floor, device MTU, one between
constexpr int kMaxProbesPerRound = 64;

inline int search_floor(int family, int device_mtu) {
  return std::min(family == AF_INET ? kFloorV4 : kIpv6MinimumMtu, device_mtu);
}

// The smallest echo that carries the 8-byte nonce: IP header + ICMP header + 8.
inline int smallest_probe(int family) { return (family == AF_INET ? 20 : 40) + 8 + 8; }

// `count` sizes strictly between lo and hi, evenly spaced (all of them when count >= hi - lo - 1).
inline std::vector<int> evenly_between(int lo, int hi, int count) {
  std::vector<int> sizes;
  const int k = std::max(0, std::min(count, hi - lo - 1));
  for (int i = 1; i <= k; ++i) {
    // The step is >= 1, so the floors are distinct and stay inside (lo, hi).
    sizes.push_back(lo + static_cast<int>(int64_t{i} * (hi - lo) / (k + 1)));
  }
  return sizes;
}

// Round 1 for one target, ascending: small, floor, device MTU and evenly spaced sizes between.
inline std::vector<int> first_round_sizes(int family, int device_mtu, int probes_per_round) {
  const int n = std::clamp(probes_per_round, kMinProbesPerRound, kMaxProbesPerRound);
  const int floor = search_floor(family, device_mtu);
  std::set<int> sizes = {kSmallSize, floor, device_mtu};
  for (int s : evenly_between(floor, device_mtu, n - 3)) sizes.insert(s);
  std::vector<int> out;
  for (int s : sizes) {
    if (s >= smallest_probe(family) && s <= device_mtu) out.push_back(s);
  }
  return out;
}

// What the search knows of one target.
struct TargetSearch {
  int lo = 0;             // largest answered size; 0: nothing answered yet
  std::set<int> failed;   // unanswered sizes above lo
  std::set<int> settled;  // sizes whose failure is not retried: retried once, or refused locally

  // The smallest failed size above lo.
  [[nodiscard]] std::optional<int> hi() const {
    auto it = failed.upper_bound(lo);
    return it == failed.end() ? std::nullopt : std::optional<int>(*it);
  }

  // A failed size sent again is the one retry its failure gets.
  void sending(int size) {
    if (failed.count(size) != 0) settled.insert(size);
  }

  void answered(int size) {
    lo = std::max(lo, size);
    failed.erase(failed.begin(), failed.upper_bound(lo));  // all at or below lo passed, in effect
  }

  // `certain`: refused before it left (EMSGSIZE), so a retry would only fail the same way.
  void unanswered(int size, bool certain) {
    if (size <= lo) return;  // a loss below a size that passed says nothing
    failed.insert(size);
    if (certain) settled.insert(size);
  }

  // Nothing left to learn (see the header comment), given the search's floor.
  [[nodiscard]] bool done(int floor) const {
    const std::optional<int> high = hi();
    return lo == 0 || lo < floor || !high || *high == lo + 1;
  }
};

// The next round's sizes of a target that is not done: evenly spaced in (lo, hi), and hi again
// unless it was already retried or refused locally (sending() marks it so).
inline std::vector<int> next_round_sizes(const TargetSearch& t, int probes_per_round) {
  const std::optional<int> hi = t.hi();
  if (!hi) return {};
  const int n = std::clamp(probes_per_round, kMinProbesPerRound, kMaxProbesPerRound);
  const bool retry = t.settled.count(*hi) == 0;
  std::vector<int> sizes = evenly_between(t.lo, *hi, retry ? n - 1 : n);
  if (retry) sizes.push_back(*hi);
  return sizes;
}

// The uplink's figure from its targets' figures (largest answered size per target; targets that
// answered nothing are absent), or nullopt with the reason.
struct Verdict {
  std::optional<int> mtu;
  std::string note;
};

inline Verdict judge(const std::map<std::string, int>& per_target, int device_mtu) {
  int best = 0;
  for (const auto& [_, size] : per_target) best = std::max(best, size);
  if (best == 0) return {std::nullopt, "no target answered"};
  // Below 1280 a host that drops big ICMP is far likelier than such a path; a target that
  // answered a device MTU below 1280 proves the path all the same.
  if (best < std::min(kIpv6MinimumMtu, device_mtu)) {
    return {std::nullopt, "targets answer no echo above " + std::to_string(best) +
                              " bytes (some hosts drop big ICMP); path MTU not known"};
  }
  // Nothing above the device MTU is sent, so a path as wide as the device needs no note.
  if (best >= device_mtu) return {device_mtu, ""};
  return {best, ""};
}

// ---- the prober ---------------------------------------------------------------------------------

// One uplink's path MTU, measured when the uplink comes up, when its device MTU changes, on
// request, and every interval_s. Driven like UplinkMonitor: on_reply() for every reply event of
// the datapath id, run() after draining replies and when next_wakeup() is due. All times are
// CLOCK_MONOTONIC ns (health::monotonic_ns()).
class PathMtuProber {
 public:
  struct Options {
    double interval_s = 600;  // re-measure period, 0 = off
    double round_timeout_s = 0.5;
    int probes_per_round = 16;  // per target, clamped to 4..64
    int max_ttl = 60;
  };

  struct Result {
    enum class State { Unknown, Measuring, Measured };
    State state = State::Unknown;
    std::optional<int> mtu;  // while Measuring: the previous measurement's, if any
    int device_mtu = 0;
    int64_t measured_at_ns = 0;             // 0: never
    std::string note;                       // why unknown or capped, e.g. "no target answered"
    std::map<std::string, int> per_target;  // largest answered size per target (answering ones)
  };

  // Targets of another family than `family` (AF_INET or AF_INET6) are ignored.
  PathMtuProber(std::string uplink_name, std::string device, uint32_t fwmark, int family,
                std::vector<IpAddress> targets, datapath::Datapath& dp, Options opt);
  ~PathMtuProber();  // withdraws its outstanding probes: `dp` must outlive it
  PathMtuProber(const PathMtuProber&) = delete;
  PathMtuProber& operator=(const PathMtuProber&) = delete;

  // The uplink came up (or tracking started): measure now. `datapath_id` is the uplink id of the
  // XDP program on the device, as for UplinkMonitor::start.
  void start(int ifindex, uint32_t datapath_id, int device_mtu, int64_t now);
  // The device went down or vanished: withdraw outstanding probes; the last result stays.
  void stop();
  // The device MTU changed (a PPPoE renegotiation, say): measure again at once.
  void set_device_mtu(int mtu, int64_t now);
  // Measure again now (restarts a measurement in flight).
  void request(int64_t now);

  // Replies to keys this prober did not send are ignored.
  void on_reply(const probe_reply_event& event, int64_t now);
  // Ends the round when due, starts the next one or the periodic re-measurement.
  void run(int64_t now);
  // When run() next has something to do (INT64_MAX: idle).
  [[nodiscard]] int64_t next_wakeup() const;

  [[nodiscard]] const Result& result() const { return result_; }
  // {"state":"measured|measuring|unknown","mtu":N|null,"device_mtu":N,"measured_ago_s":x|null,
  //  "note":"..","targets":{ip:N}}
  [[nodiscard]] nlohmann::json json(int64_t now) const;
  [[nodiscard]] bool running() const { return running_; }

 private:
  struct Pending {
    probe_key key{};
    size_t target = 0;
    int size = 0;
  };

  void begin_measurement(int64_t now);
  void begin_round(const std::vector<std::vector<int>>& sizes, int64_t now);
  void send_probe(size_t target, int size, int64_t now);
  void end_round(int64_t now);
  void finish(int64_t now);
  void forget_pending();
  void log_result(int64_t now) const;
  [[nodiscard]] static std::string key_bytes(const probe_key& key);

  std::string uplink_name_;
  std::string device_;
  uint32_t fwmark_;
  int family_;
  std::vector<IpAddress> targets_;
  datapath::Datapath& dp_;
  Options opt_;
  std::unique_ptr<health::ProbeTransport> transport_;
  bool running_ = false;
  int ifindex_ = 0;
  uint32_t datapath_id_ = 0;
  uint16_t ident_ = 0;
  uint16_t seq_ = 0;

  // The measurement in flight (measuring_), its round and what each target's search knows.
  bool measuring_ = false;
  int64_t measurement_started_ = 0;
  int rounds_ = 0;
  int64_t round_started_ = 0;
  int64_t round_deadline_ = 0;
  std::vector<TargetSearch> searches_;
  std::map<std::string, Pending> pending_;
  int last_send_error_ = 0;  // the latest failed send's -errno, for the note

  int64_t next_measurement_at_ = INT64_MAX;
  Result result_;
  // The previous measurement's figure, for the log (result_.mtu may have been capped since).
  bool measured_before_ = false;
  std::optional<int> measured_mtu_;
};

}  // namespace uplinkd::pmtu
