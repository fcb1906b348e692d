// Failover hygiene, the daemon's half (issue 5): what the datapath cannot do on a packet of its own.
//
// - At `disconnected` (the daemon has bumped the uplink's generation and written its record, so
//   every flow of it is stale already): the LAN client of every stale TCP flow whose sequence
//   lan_egress has seen gets a RST at once (proactive: a socket that only waits for data fails now,
//   not at its next send), and the uplink's conntrack entries are deleted by its mark (never a
//   global flush; never for mark 0), on a thread of their own (ConntrackWorker).
// - Failback (`option failback 'move'` of a policy): when a better member comes back, the policy's
//   flows on the others are made stale, their TCP clients reset and their conntrack entries deleted
//   by tuple, so new connections go by the returning uplink.
// - A periodic sweep, bounded per call: flows idle beyond their protocol's timeout and tcp_seen
//   entries whose flow is gone are deleted.
// - The nft table copying the uplink mark into the conntrack mark (CtMarkRules), which the delete
//   by mark needs.
//
// Everything else runs on the daemon's loop; costs are in the README section "Flows".
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"
#include "daemon/conntrack_worker.h"
#include "datapath/datapath.h"
#include "maps/uplinkd_maps.h"
#include "policy/policy_table.h"

namespace uplinkd {

namespace netlink {
class CtMarkRules;
struct UplinkMark;
}  // namespace netlink

// The RST that resets a LAN client's end of `key` (client = saddr): from the remote (daddr) to the
// client, ports swapped, seq = seen.next_seq (the client's RCV.NXT, accepted at once per RFC 5961),
// RST only, window 0, IP and TCP checksums complete. With an Ethernet header (destination
// seen.client_mac, source seen.router_mac) unless seen.l3_only. Empty for a key that is not TCP
// or has an unknown family.
std::vector<uint8_t> build_client_reset(const flow_key& key, const tcp_seen& seen);

// Sends `packet` (from build_client_reset) out of `ifindex` through a packet socket, so no
// firewall rule (`ct state invalid drop`) can swallow it. Returns 0 or -errno.
class ResetSender {
 public:
  ResetSender() = default;
  ~ResetSender();
  ResetSender(const ResetSender&) = delete;
  ResetSender& operator=(const ResetSender&) = delete;
  int send(const std::vector<uint8_t>& packet, const tcp_seen& seen, int family);

 private:
  int raw_fd_ = -1;    // SOCK_RAW: frames with their Ethernet header
  int dgram_fd_ = -1;  // SOCK_DGRAM: bare IP packets on devices without a link-layer header
};

struct FlowKeyHash {
  size_t operator()(const flow_key& k) const noexcept;
};
struct FlowKeyEqual {
  bool operator()(const flow_key& a, const flow_key& b) const noexcept;
};

// The table name for an instance: "uplinkd", or "uplinkd_<instance>" (nft identifier characters).
std::string ct_mark_table_name(const std::string& instance);

// `uplinkctl flows` text from the daemon's "flows" JSON.
std::string format_flows(const nlohmann::json& flows);

class FlowHygiene {
 public:
  struct Options {
    std::string ct_table;       // "" : no CtMarkRules (tests); else created now, removed at destruction
    size_t sweep_batch = 1024;  // entries of each map the sweep reads per batch (a call reads batches
                                // until its time budget is spent)
  };

  // `cfg` is read at each call (a reload may change it in place). Throws std::runtime_error when the
  // ct mark table cannot be installed.
  FlowHygiene(const config::Config& cfg, datapath::Datapath& dp, Options options);
  ~FlowHygiene();
  FlowHygiene(const FlowHygiene&) = delete;
  FlowHygiene& operator=(const FlowHygiene&) = delete;

  // Uplink `id` (mark `mark`, generation now `generation`) went down: proactive resets, then its
  // conntrack entries by mark, queued for the worker thread. Logs one line with the resets; the
  // worker logs the deletes when done.
  void on_disconnected(uint32_t id, uint32_t mark, uint32_t generation, int64_t now_ns);
  // Uplink `id` is online; `online` is every online interface now. Moves flows of `failback 'move'`
  // policies to it when it is one of their best members.
  void on_connected(uint32_t id, const policy::OnlineInterfaces& online, int64_t now_ns);
  // mwan3's hotplug events (ifup, ifdown, connected, disconnected): an event listed in the
  // interface's `flush_conntrack` deletes that uplink's conntrack entries by mark (on
  // `disconnected` that is done anyway while conntrack_by_mark is on).
  void on_event(uint32_t id, uint32_t mark, std::string_view event);
  // Bounded upkeep: batches of each map until `budget_ns` has passed (at least one of each). Returns
  // true when a pass over both maps has just ended: call again soon while it returns false, then
  // rest a few seconds.
  bool sweep(int64_t now_ns, int64_t budget_ns = kScanSliceNs);
  // The marks of the enabled interfaces may have changed (reload): rewrites the ct mark rules.
  void reconfigure();

  [[nodiscard]] nlohmann::json counters_json() const;
  // For tests and benchmarks: true once every queued conntrack delete is done.
  bool wait_conntrack_idle(std::chrono::milliseconds limit) { return ct_worker_.wait_idle(limit); }

  // Proactive resets of the stale TCP flows of `uplink_id` (flows whose generation is not
  // `generation`), the scan on_disconnected() starts, run to its end at once (for tests and
  // benchmarks); deletes each reset flow and its tcp_seen entry. Returns the resets sent.
  size_t reset_stale_tcp(uint32_t uplink_id, uint32_t generation, int64_t now_ns);

  // The loop time one slice of the stale-flow scans may take: well under the 10 ms a probe may be
  // held up, with room for the loop's other work.
  static constexpr int64_t kScanSliceNs = 3 * 1000000LL;

  // Whether a stale-flow scan begun by on_disconnected(), or a failback move begun by
  // on_connected(), has flows left to read.
  [[nodiscard]] bool scanning() const { return !scans_.empty() || !moves_.empty(); }
  // Continues the pending scans, then the pending moves, until `budget_ns` has passed: the clock is
  // read after each reset or move and each batch of `flows` read, so a slice overruns its budget by
  // at most one of those. Call from the loop while scanning().
  void continue_scans(int64_t now_ns, int64_t budget_ns);
  // For tests and benchmarks, which have no loop: the pending scans to their end, slice by slice as
  // the loop would (each slice reads or resets something, so this ends).
  void finish_scans(int64_t now_ns) {
    while (scanning()) continue_scans(now_ns, kScanSliceNs);
  }

 private:
  struct PerUplink {
    uint64_t proactive_resets = 0;
    uint64_t conntrack_deleted = 0;
    uint64_t failback_moved = 0;
    uint64_t tracked = 0;  // from the last complete sweep pass
  };

  // One uplink's stale TCP flows being looked for: `flows` read a batch per step, each stale TCP
  // flow of the uplink with a fresh tcp_seen entry reset.
  struct StaleScan {
    uint32_t uplink_id = 0;
    uint32_t generation = 0;  // the uplink's current one: flows with another are stale
    datapath::MapCursor cursor;
    std::vector<flow_key> pending;  // stale TCP flows of the last batch read, reset from `next` on
    size_t next = 0;
    size_t read = 0;
    size_t resets = 0;
    size_t steps = 0;
    int64_t started_ns = 0;
    int64_t busy_ns = 0;  // time spent in its steps
  };
  // Resets the scan's pending flows and reads further batches until `deadline_ns` (monotonic) has
  // passed, checking after every reset and batch; true when the scan is done.
  bool scan_until(StaleScan& scan, int64_t now_ns, int64_t deadline_ns);

  // A failback 'move' to uplink `uplink_id`: `flows` read a batch per step, each flow of a moving
  // policy's rule that is on an uplink no longer among that policy's members made stale (its TCP
  // client reset, its conntrack entry deleted by tuple), so its next packet is classified again.
  struct FailbackMove {
    struct Members {
      std::set<uint32_t> ipv4, ipv6;  // the policy's members now, per family
    };
    uint32_t uplink_id = 0;
    std::vector<std::optional<Members>> by_rule;  // [rule_id - 1]: set when that rule's policy moves
    datapath::MapCursor cursor;
    std::vector<std::pair<flow_key, flow_value>> pending;  // of the last batch read, moved from `next` on
    size_t next = 0;
    size_t moved = 0;
    size_t resets = 0;
    size_t conntrack_deleted = 0;
  };
  // The move's flows of the batch just read, then further batches, until `deadline_ns` has passed;
  // true when the move is done.
  bool move_until(FailbackMove& move, int64_t now_ns, int64_t deadline_ns);
  [[nodiscard]] bool moves_away(const FailbackMove& move, const flow_key& key, const flow_value& value) const;
  void move_one(FailbackMove& move, const flow_key& key, const flow_value& value, int64_t now_ns);
  void finish_move(const FailbackMove& move);
  void finish_scan(const StaleScan& scan, int64_t now_ns);
  void start_scan(uint32_t uplink_id, uint32_t generation, int64_t now_ns);

  bool reset_one(const flow_key& key, int64_t now_ns);
  bool reset_with(const flow_key& key, const tcp_seen& seen, int64_t now_ns);
  bool queue_conntrack_delete(uint32_t id, uint32_t mark, const std::string& why);
  [[nodiscard]] bool seen_is_fresh(const tcp_seen& seen, int64_t now_ns) const;
  [[nodiscard]] uint32_t timeout_s(uint8_t proto) const;
  [[nodiscard]] std::vector<netlink::UplinkMark> enabled_uplinks() const;
  [[nodiscard]] std::string name_of(uint32_t id) const;
  // One batch each; true when that map's pass has ended.
  bool sweep_flows(int64_t now_ns);
  bool sweep_tcp_seen();

  const config::Config& cfg_;
  datapath::Datapath& dp_;
  Options options_;
  std::unique_ptr<netlink::CtMarkRules> ct_marks_;
  ResetSender sender_;

  uint64_t proactive_resets_ = 0;
  uint64_t proactive_failed_ = 0;
  uint64_t expired_ = 0;
  uint64_t tcp_seen_pruned_ = 0;
  uint64_t conntrack_deleted_ = 0;
  uint64_t failback_moved_ = 0;
  std::map<uint32_t, PerUplink> per_uplink_;
  ConntrackWorker ct_worker_;  // last: destroyed first, finishing its deletes while the rest exists

  std::deque<StaleScan> scans_;     // oldest first; one per uplink
  std::deque<FailbackMove> moves_;  // oldest first; one per uplink

  // The sweep: one pass over each map, a batch per call.
  datapath::MapCursor flow_cursor_;
  datapath::MapCursor seen_cursor_;
  uint64_t pass_tracked_ = 0;
  std::map<uint32_t, uint64_t> pass_per_uplink_;
  uint64_t tracked_ = 0;
  bool tracked_known_ = false;
  int64_t tracked_at_ns_ = 0;
};

}  // namespace uplinkd
