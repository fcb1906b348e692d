// Loads, attaches and pins uplinkd's BPF programs and maps, and is the daemon's only door to them.
// Maps live under <bpffs>/uplinkd/<instance>/ so several daemons (one per namespace) can coexist and
// every per-uplink program instance shares them. A failed start leaves nothing attached or pinned.
#pragma once

#include <xdp/libxdp.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "maps/uplinkd_maps.h"

struct ring_buffer;
struct uplink_ingress;  // bpftool skeletons, global C names
struct wan_ingress;
struct lan_ingress;
struct lan_egress;

namespace uplinkd::policy {
struct RuleTables;
}

namespace uplinkd::datapath {

class RuleTableWriter;

// Thrown for anything that stops the datapath from starting: the message says what, the errno,
// and how to fix it.
class DatapathError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct UplinkCounters {
  uint64_t probe_replies = 0;
  uint64_t nonce_mismatch = 0;
  uint64_t ringbuf_full = 0;
  uint64_t icmp_passed = 0;
  uint64_t icmp_dropped = 0;
  uint64_t probe_replies_exempted = 0;
};

// The classifier's stale-flow counters (flow_counters summed over CPUs).
struct FlowCounters {
  uint64_t created = 0;
  uint64_t stale_tcp_reset = 0;
  uint64_t stale_tcp_refused = 0;
  uint64_t reclassified = 0;
  uint64_t idle_reclassified = 0;
};

// Where a walk over a hash map resumes: the kernel's batch cursor (a bucket index for hash maps).
struct MapCursor {
  bool started = false;
  bool done = false;
  uint32_t token = 0;
};

// Reads about `max_entries` entries (at most one chunk more) of the hash map `fd` from `cursor` with
// batch lookups, handing each to `visit` (key, value; false stops). The batch cursor of a hash map is
// a bucket index, so entries the visitor deletes or rewrites (they are in buckets already read)
// never disturb the walk. Returns the entries visited.
size_t walk_hash(int fd, size_t key_size, size_t value_size, MapCursor& cursor, size_t max_entries,
                 const std::function<bool(const void*, const void*)>& visit);

struct AttachOptions {
  uint32_t uplink_id = 0;
  std::string device;
  int ifindex = 0;
  bool l3_only = false;     // device without an Ethernet header
  uint32_t reply_mark = 0;  // 0: no tc marker
  uint32_t reply_mark_mask = 0xFFFFFFFF;
};

class Datapath {
 public:
  using ReplyHandler = std::function<void(const probe_reply_event&)>;

  // Checks bpffs at `bpffs_root`, creates the pin directory and loads the maps (through an
  // unattached instance of the XDP program, which also proves the kernel accepts it).
  // flow_entries: size of the per-flow LRU maps (flows, tcp_seen; sticky and inbound a quarter of
  // it); 0 keeps the programs' compiled sizes.
  Datapath(const std::string& bpffs_root, const std::string& instance, ReplyHandler on_reply,
           uint32_t flow_entries = 0);
  ~Datapath();  // detaches everything, unpins, removes the pin directory
  Datapath(const Datapath&) = delete;
  Datapath& operator=(const Datapath&) = delete;

  // Attaches the XDP program (native, else generic) and, if a reply mark is set, the tc marker.
  // Throws DatapathError naming the device, the errno and the fix.
  void attach(const AttachOptions& options);
  void detach(uint32_t uplink_id);
  [[nodiscard]] bool attached(uint32_t uplink_id) const { return uplinks_.count(uplink_id) != 0; }
  [[nodiscard]] std::string attach_mode(uint32_t uplink_id) const;

  // The LAN classifier (tc ingress) and the sequence learner lan_egress (tc egress) on a LAN-side
  // device; idempotent. Throws DatapathError (nothing stays attached then).
  void attach_lan(int ifindex, const std::string& device, bool l3_only);
  void detach_lan(int ifindex);
  [[nodiscard]] bool lan_attached(int ifindex) const { return lan_.count(ifindex) != 0; }

  void write_uplink(uint32_t uplink_id, const uplink_record& record);
  void write_classifier_cfg(const classifier_cfg& cfg);
  void write_rule(uint32_t index, const rule_entry& rule);
  // A rule set: its bit-vector tables (rule_table_maps.h) written into the inactive table set (only
  // what differs from what that set holds: a reload that changes one rule is a few map writes), then
  // each rule's entry (its actions: policy, sticky) into `rules`, then the flip. The entries are
  // written last, just before the flip, because the active tables' rule i reads entry i: the instant
  // in which a new flow can meet an old rule's tables with a new rule's actions is the few hundred
  // microseconds of those writes, not the milliseconds of the tables'. Throws DatapathError before any
  // entry is written when the tables cannot be (the previous rules stay in force).
  void write_rules(const std::vector<rule_entry>& rules, const policy::RuleTables& tables);
  void write_policy(uint32_t slot, const policy_entry& entry);
  // Makes the connected-networks trie hold exactly `prefixes`.
  void set_connected(const std::vector<lpm_key>& prefixes);
  [[nodiscard]] rule_counter rule_counters(uint32_t index) const;
  int insert_probe(const probe_key& key, const probe_value& value);  // 0 or -errno
  // Deletes an outstanding probe. Returns true if it was still there (nobody answered it).
  bool remove_probe(const probe_key& key);
  void clear_probes();
  UplinkCounters counters(uint32_t uplink_id) const;

  // ---- flows and tcp_seen (failover hygiene) ----
  // A visitor returns false to stop the walk. It may delete or update the entry it is given.
  using FlowVisitor = std::function<bool(const flow_key&, const flow_value&)>;
  using TcpSeenVisitor = std::function<bool(const flow_key&, const tcp_seen&)>;
  // Visits up to `max_entries` flows from `cursor` on (batch lookups of a few thousand entries, so
  // about a microsecond per entry) and moves the cursor; cursor.done once the map was walked.
  // Entries added or deleted meanwhile may be seen or missed, never visited twice in one walk.
  size_t walk_flows(MapCursor& cursor, size_t max_entries, const FlowVisitor& visit) const;
  size_t walk_tcp_seen(MapCursor& cursor, size_t max_entries, const TcpSeenVisitor& visit) const;
  size_t for_each_flow(const FlowVisitor& visit) const;  // the whole map
  [[nodiscard]] std::optional<flow_value> lookup_flow(const flow_key& key) const;
  bool delete_flow(const flow_key& key);  // true if it was there
  // Rewrites an existing flow's generation (makes it stale when != its uplink's); false if gone.
  bool set_flow_generation(const flow_key& key, uint32_t generation);
  [[nodiscard]] std::optional<tcp_seen> lookup_tcp_seen(const flow_key& key) const;
  bool delete_tcp_seen(const flow_key& key);
  [[nodiscard]] FlowCounters flow_counters() const;

  int ring_fd() const;  // epoll-able
  void poll_replies();  // consumes every pending reply event without blocking

  const std::string& pin_dir() const { return pin_dir_; }

  // ---- lifecycle (DESIGN.md, "Lifecycle") ----
  // True when this start found a predecessor's pins and reuses or replaces what it left.
  [[nodiscard]] bool adopting() const { return adopting_; }
  // The predecessor's record of uplink `id` when its maps were adopted with this build's layout.
  [[nodiscard]] std::optional<uplink_record> previous_record(uint32_t uplink_id) const;
  // The start succeeded: daemon_state names this daemon, set-aside maps are dropped. Until then a
  // failed start in keep mode puts the predecessor's pins back as they were.
  void commit_start();

 private:
  struct Attached;
  int open_and_attach_xdp(Attached& a, const AttachOptions& o);
  struct LanAttached;
  void load_maps();
  ::lan_ingress* lan_object(bool l3_only);
  ::lan_egress* lan_egress_object(bool l3_only);
  void unpin_all();
  void survey_predecessor();
  void read_previous_records();
  void open_lifecycle_maps();
  void release_userspace();
  void note_qdisc(int ifindex, bool* created);
  void remember_qdisc(int ifindex, bool created);
  [[nodiscard]] bool qdisc_is_ours(int ifindex) const;
  struct XdpHolder {
    enum Kind { None, Ours, OursInDispatcher, Foreign } kind = None;
    uint32_t prog_id = 0;
    enum xdp_attach_mode mode = XDP_MODE_UNSPEC;
  };
  [[nodiscard]] XdpHolder xdp_holder(int ifindex) const;
  [[nodiscard]] bool pinned_here(uint32_t prog_id) const;
  int replace_xdp(Attached& a, const AttachOptions& o, const XdpHolder& holder);
  bool adopting_ = false;
  bool fresh_layout_ = false;  // the predecessor's maps are of another layout version: none carried over
  bool committed_ = false;
  std::map<uint32_t, uplink_record> previous_records_;
  int state_fd_ = -1, qdiscs_fd_ = -1;

  std::string pin_dir_;
  uint32_t flow_entries_ = 0;
  ReplyHandler on_reply_;
  ::uplink_ingress* master_ = nullptr;
  ::lan_ingress* lan_eth_ = nullptr;  // one loaded classifier per header kind, attached to many devices
  ::lan_ingress* lan_l3_ = nullptr;
  ::lan_egress* lan_egress_eth_ = nullptr;  // the same per header kind, on the LAN devices' egress
  ::lan_egress* lan_egress_l3_ = nullptr;
  int flows_fd_ = -1, tcp_seen_fd_ = -1, flow_counters_fd_ = -1;
  int rule_tbl_sel_fd_ = -1, rule_tbl_fd_ = -1, rule_tbl_ports_fd_ = -1, rule_tbl_addr_fd_ = -1,
      rule_tbl_iface_fd_ = -1, rule_tbl_ext_fd_ = -1;
  // Remembers what each rule table set holds, so a reload writes only the difference
  // (rule_table_maps.h); it knows nothing at start, so an adopted datapath's sets are walked once.
  std::unique_ptr<RuleTableWriter> rule_writer_;
  int cfg_fd_ = -1, rules_fd_ = -1, rule_counters_fd_ = -1, policies_fd_ = -1, connected_fd_ = -1;
  std::vector<lpm_key> connected_;
  struct ring_buffer* ring_ = nullptr;
  int uplinks_fd_ = -1, probes_fd_ = -1, counters_fd_ = -1, events_fd_ = -1, limiter_fd_ = -1;
  std::map<uint32_t, std::unique_ptr<Attached>> uplinks_;
  std::map<int, std::unique_ptr<LanAttached>> lan_;  // by ifindex
};

// The registry of clsact qdiscs uplinkd created (map tc_qdiscs in `pin_dir`), for components that attach
// tc programs of their own (WireGuard steering): `set` records (true) or forgets (false); without it,
// returns whether `ifindex`'s qdisc is recorded as uplinkd's.
bool qdisc_created_by_uplinkd(const std::string& pin_dir, int ifindex,
                              std::optional<bool> set = std::nullopt);

// True when `path` is a mounted BPF filesystem.
bool is_bpffs(const std::string& path);

}  // namespace uplinkd::datapath
