#include "daemon/flow_hygiene.h"

#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <set>
#include <sstream>
#include <stdexcept>
#include <unordered_map>

#include "common/log.h"
#include "health/monitor.h"
#include "netlink/conntrack.h"
#include "netlink/ct_mark.h"

namespace uplinkd {
namespace {

constexpr size_t kEthHeader = 14;
constexpr size_t kIpv4Header = 20;
constexpr size_t kIpv6Header = 40;
constexpr size_t kTcpHeader = 20;
constexpr uint8_t kTcpRst = 0x04;
constexpr uint8_t kHopLimit = 64;
constexpr int64_t kNsPerS = 1000000000LL;
// Entries of `flows` the stale-flow scan reads per batch (README, "Flows", has what one costs).
constexpr size_t kScanBatch = 512;

void put16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}

void put32(uint8_t* p, uint32_t v) {
  put16(p, static_cast<uint16_t>(v >> 16));
  put16(p + 2, static_cast<uint16_t>(v));
}

// One's-complement sum of big-endian 16-bit words (RFC 1071), not yet folded.
uint32_t sum16(const uint8_t* p, size_t n, uint32_t sum = 0) {
  for (size_t i = 0; i + 1 < n; i += 2) sum += static_cast<uint32_t>(p[i] << 8 | p[i + 1]);
  if (n % 2 != 0) sum += static_cast<uint32_t>(p[n - 1] << 8);
  return sum;
}

uint16_t fold(uint32_t sum) {
  while (sum >> 16 != 0) sum = (sum & 0xFFFF) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

// The TCP header of the RST; its checksum is filled by the caller (pseudo-header differs by family).
void write_tcp_rst(uint8_t* tcp, const flow_key& key, uint32_t seq) {
  std::memcpy(tcp, &key.dport, 2);      // from the remote's port (network order already)
  std::memcpy(tcp + 2, &key.sport, 2);  // to the client's port
  put32(tcp + 4, seq);
  put32(tcp + 8, 0);  // no ACK: RST alone, as RFC 5961 section 3.2 expects at RCV.NXT
  tcp[12] = static_cast<uint8_t>((kTcpHeader / 4) << 4);
  tcp[13] = kTcpRst;
  put16(tcp + 14, 0);  // window
  put16(tcp + 16, 0);  // checksum, below
  put16(tcp + 18, 0);  // urgent pointer
}

void build_ipv4(uint8_t* ip, const flow_key& key, uint32_t seq) {
  ip[0] = 0x45;
  ip[1] = 0;
  put16(ip + 2, static_cast<uint16_t>(kIpv4Header + kTcpHeader));
  put16(ip + 4, 0);       // id
  put16(ip + 6, 0x4000);  // DF
  ip[8] = kHopLimit;
  ip[9] = IPPROTO_TCP;
  put16(ip + 10, 0);
  std::memcpy(ip + 12, key.daddr, 4);  // from the remote
  std::memcpy(ip + 16, key.saddr, 4);  // to the client
  put16(ip + 10, fold(sum16(ip, kIpv4Header)));
  uint8_t* tcp = ip + kIpv4Header;
  write_tcp_rst(tcp, key, seq);
  uint32_t pseudo = sum16(ip + 12, 8);
  pseudo += IPPROTO_TCP + kTcpHeader;
  put16(tcp + 16, fold(sum16(tcp, kTcpHeader, pseudo)));
}

void build_ipv6(uint8_t* ip, const flow_key& key, uint32_t seq) {
  put32(ip, 0x60000000);
  put16(ip + 4, static_cast<uint16_t>(kTcpHeader));
  ip[6] = IPPROTO_TCP;
  ip[7] = kHopLimit;
  std::memcpy(ip + 8, key.daddr, 16);
  std::memcpy(ip + 24, key.saddr, 16);
  uint8_t* tcp = ip + kIpv6Header;
  write_tcp_rst(tcp, key, seq);
  uint32_t pseudo = sum16(ip + 8, 32);
  pseudo += IPPROTO_TCP + kTcpHeader;
  put16(tcp + 16, fold(sum16(tcp, kTcpHeader, pseudo)));
}

}  // namespace

size_t FlowKeyHash::operator()(const flow_key& k) const noexcept {
  // FNV-1a over the key's bytes (padding is zero in map keys).
  const auto* p = reinterpret_cast<const uint8_t*>(&k);
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < sizeof k; ++i) h = (h ^ p[i]) * 1099511628211ULL;
  return static_cast<size_t>(h);
}

bool FlowKeyEqual::operator()(const flow_key& a, const flow_key& b) const noexcept {
  return std::memcmp(&a, &b, sizeof a) == 0;
}

namespace {

int family_of(const flow_key& key) { return key.family == 6 ? AF_INET6 : AF_INET; }

std::string hex(uint32_t v) {
  char b[16];
  std::snprintf(b, sizeof b, "0x%x", v);
  return b;
}

}  // namespace

std::vector<uint8_t> build_client_reset(const flow_key& key, const tcp_seen& seen) {
  if (key.proto != IPPROTO_TCP || (key.family != 4 && key.family != 6)) return {};
  const size_t l2 = seen.l3_only != 0 ? 0 : kEthHeader;
  const size_t l3 = key.family == 4 ? kIpv4Header : kIpv6Header;
  std::vector<uint8_t> packet(l2 + l3 + kTcpHeader, 0);
  if (l2 != 0) {
    std::memcpy(packet.data(), seen.client_mac, 6);
    std::memcpy(packet.data() + 6, seen.router_mac, 6);
    put16(packet.data() + 12, key.family == 4 ? ETH_P_IP : ETH_P_IPV6);
  }
  if (key.family == 4) {
    build_ipv4(packet.data() + l2, key, seen.next_seq);
  } else {
    build_ipv6(packet.data() + l2, key, seen.next_seq);
  }
  return packet;
}

ResetSender::~ResetSender() {
  for (int fd : {raw_fd_, dgram_fd_}) {
    if (fd >= 0) close(fd);
  }
}

int ResetSender::send(const std::vector<uint8_t>& packet, const tcp_seen& seen, int family) {
  if (packet.empty()) return -EINVAL;
  const bool l3 = seen.l3_only != 0;
  int& fd = l3 ? dgram_fd_ : raw_fd_;
  if (fd < 0) {
    // Protocol 0: a send-only socket, it never receives a copy of the LAN's traffic.
    fd = socket(AF_PACKET, (l3 ? SOCK_DGRAM : SOCK_RAW) | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
  }
  sockaddr_ll to{};
  to.sll_family = AF_PACKET;
  to.sll_ifindex = static_cast<int>(seen.ifindex);
  to.sll_protocol = htons(family == AF_INET6 ? ETH_P_IPV6 : ETH_P_IP);
  to.sll_halen = 6;
  std::memcpy(to.sll_addr, seen.client_mac, 6);
  ssize_t sent =
      sendto(fd, packet.data(), packet.size(), MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&to), sizeof to);
  return sent == static_cast<ssize_t>(packet.size()) ? 0 : -errno;
}

std::string ct_mark_table_name(const std::string& instance) {
  if (instance.empty() || instance == "default") return "uplinkd";
  std::string name = "uplinkd_";
  for (char c : instance) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                    c == '-' || c == '.';
    name += ok ? c : '_';
  }
  return name;
}

FlowHygiene::FlowHygiene(const config::Config& cfg, datapath::Datapath& dp, Options options)
    : cfg_(cfg), dp_(dp), options_(std::move(options)) {
  if (!options_.ct_table.empty()) {
    try {
      ct_marks_ =
          std::make_unique<netlink::CtMarkRules>(options_.ct_table, cfg_.globals.mmx_mask, enabled_uplinks());
    } catch (const std::exception& e) {
      throw std::runtime_error("installing nft table inet " + options_.ct_table +
                               " (copies the uplink mark into the conntrack mark): " + e.what());
    }
  }
}

FlowHygiene::~FlowHygiene() = default;

// With their devices, so that connections arriving on an uplink are answered by it (ct_mark.h).
std::vector<netlink::UplinkMark> FlowHygiene::enabled_uplinks() const {
  std::vector<netlink::UplinkMark> uplinks;
  for (const auto& i : cfg_.interfaces) {
    const uint32_t mark = config::mark_for_id(i.id, cfg_.globals.mmx_mask);
    if (i.enabled && mark != 0) uplinks.push_back({mark, i.device});
  }
  return uplinks;
}

void FlowHygiene::reconfigure() {
  // A move's rules are the old config's (rule ids, policies): a reload ends it where it is.
  for (const FailbackMove& m : moves_) {
    log::notice("interface " + name_of(m.uplink_id) + ": failback 'move' ended by the reload after " +
                std::to_string(m.moved) + " flow(s)");
    finish_move(m);
  }
  moves_.clear();
  if (!ct_marks_) return;
  try {
    // A changed mmx_mask needs a new table: the rules' mask is fixed at construction.
    ct_marks_.reset();
    ct_marks_ =
        std::make_unique<netlink::CtMarkRules>(options_.ct_table, cfg_.globals.mmx_mask, enabled_uplinks());
  } catch (const std::exception& e) {
    log::error("nft table inet " + options_.ct_table + ": " + e.what() +
               "; conntrack entries are not marked, so deleting them by mark finds none");
  }
}

std::string FlowHygiene::name_of(uint32_t id) const {
  for (const auto& i : cfg_.interfaces) {
    if (i.id == id) return i.name;
  }
  return "id " + std::to_string(id);
}

uint32_t FlowHygiene::timeout_s(uint8_t proto) const {
  if (proto == IPPROTO_TCP) return cfg_.globals.flow_timeout_tcp_s;
  if (proto == IPPROTO_UDP) return cfg_.globals.flow_timeout_udp_s;
  return cfg_.globals.flow_timeout_s;
}

// A tcp_seen entry older than the TCP flow timeout describes a connection conntrack has likely
// forgotten; its sequence number is no longer worth a RST.
bool FlowHygiene::seen_is_fresh(const tcp_seen& seen, int64_t now_ns) const {
  const uint64_t timeout = cfg_.globals.flow_timeout_tcp_s;
  const auto now = static_cast<uint64_t>(now_ns);
  return timeout == 0 || now <= seen.last_seen_ns || now - seen.last_seen_ns < timeout * kNsPerS;
}

bool FlowHygiene::reset_one(const flow_key& key, int64_t now_ns) {
  const std::optional<tcp_seen> seen = dp_.lookup_tcp_seen(key);
  return seen && reset_with(key, *seen, now_ns);
}

bool FlowHygiene::reset_with(const flow_key& key, const tcp_seen& seen, int64_t now_ns) {
  if (!seen_is_fresh(seen, now_ns) || seen.ifindex == 0) return false;
  // The flow goes first, so lan_egress does not record the RST itself as the flow's latest segment.
  dp_.delete_flow(key);
  const int err = sender_.send(build_client_reset(key, seen), seen, family_of(key));
  dp_.delete_tcp_seen(key);
  if (err != 0) {
    ++proactive_failed_;
    log::debug("reset toward a LAN client on ifindex " + std::to_string(seen.ifindex) + ": " +
               std::strerror(-err));
    return false;
  }
  return true;
}

void FlowHygiene::start_scan(uint32_t uplink_id, uint32_t generation, int64_t now_ns) {
  for (StaleScan& scan : scans_) {
    if (scan.uplink_id != uplink_id) continue;
    // Down again before the last scan ended: one scan, from the start, for the newest generation
    // (flows of every older one differ from it too).
    scan.generation = generation;
    scan.cursor = {};
    scan.pending.clear();
    scan.next = 0;
    return;
  }
  StaleScan scan;
  scan.uplink_id = uplink_id;
  scan.generation = generation;
  scan.started_ns = now_ns;
  scans_.push_back(scan);
}

bool FlowHygiene::scan_until(StaleScan& scan, int64_t now_ns, int64_t deadline_ns) {
  ++scan.steps;
  do {
    // A reset (packet socket send, two map deletes) costs tens of microseconds: a batch's worth
    // would hold the loop far longer than a read, so the clock is checked after each one.
    if (scan.next < scan.pending.size()) {
      scan.resets += reset_one(scan.pending[scan.next++], now_ns) ? 1 : 0;
      continue;
    }
    if (scan.cursor.done) return true;
    // tcp_seen holds only TCP flows with an uplink that the remote has sent on: a lookup for each
    // stale TCP flow of the uplink, instead of reading the whole of tcp_seen alongside.
    scan.pending.clear();
    scan.next = 0;
    scan.read += dp_.walk_flows(scan.cursor, kScanBatch, [&](const flow_key& key, const flow_value& value) {
      if (key.proto == IPPROTO_TCP && value.uplink_id == scan.uplink_id &&
          value.generation != scan.generation)
        scan.pending.push_back(key);
      return true;
    });
  } while (health::monotonic_ns() < deadline_ns);
  return scan.cursor.done && scan.next >= scan.pending.size();
}

void FlowHygiene::finish_scan(const StaleScan& scan, int64_t now_ns) {
  proactive_resets_ += scan.resets;
  per_uplink_[scan.uplink_id].proactive_resets += scan.resets;
  log::notice("interface " + name_of(scan.uplink_id) + ": " + std::to_string(scan.resets) +
              " idle TCP client(s) reset; " + std::to_string(scan.read) + " flows read in " +
              std::to_string(scan.steps) + " step(s), " + std::to_string(scan.busy_ns / 1000) +
              " us of work over " + std::to_string((now_ns - scan.started_ns) / 1000000) + " ms");
}

void FlowHygiene::continue_scans(int64_t now_ns, int64_t budget_ns) {
  const int64_t start = health::monotonic_ns();
  int64_t spent = 0;
  while (!scans_.empty()) {
    StaleScan& scan = scans_.front();
    const int64_t t0 = health::monotonic_ns();
    const bool done = scan_until(scan, now_ns, start + budget_ns);
    const int64_t t1 = health::monotonic_ns();
    scan.busy_ns += t1 - t0;
    spent = t1 - start;
    if (done) {
      finish_scan(scan, t1);
      scans_.pop_front();
    }
    if (spent >= budget_ns) return;
  }
  // Resets of stale flows first (their clients wait on a dead uplink); moves only improve routing.
  while (!moves_.empty()) {
    const bool done = move_until(moves_.front(), now_ns, start + budget_ns);
    if (done) {
      finish_move(moves_.front());
      moves_.pop_front();
    }
    if (health::monotonic_ns() - start >= budget_ns) return;
  }
}

size_t FlowHygiene::reset_stale_tcp(uint32_t uplink_id, uint32_t generation, int64_t now_ns) {
  if (!cfg_.globals.reset_stale_tcp || uplink_id == 0) return 0;
  const uint64_t before = proactive_resets_;
  start_scan(uplink_id, generation, now_ns);
  finish_scans(now_ns);
  return proactive_resets_ - before;
}

bool FlowHygiene::queue_conntrack_delete(uint32_t id, uint32_t mark, const std::string& why) {
  // Mark 0 or an unknown id would match every unmarked entry: a global flush in disguise.
  if (id == 0 || mark == 0 || (mark & cfg_.globals.mmx_mask) == 0) return false;
  ct_worker_.submit({id, name_of(id), mark, cfg_.globals.mmx_mask, why});
  return true;
}

void FlowHygiene::on_disconnected(uint32_t id, uint32_t mark, uint32_t generation, int64_t now_ns) {
  const bool queued = cfg_.globals.conntrack_by_mark && queue_conntrack_delete(id, mark, "disconnected");
  log::notice("interface " + name_of(id) + " offline: " +
              (cfg_.globals.reset_stale_tcp ? "looking for its idle TCP clients to reset, "
                                            : "idle TCP clients left alone (reset_stale_tcp 0), ") +
              (queued ? "conntrack entries with mark " + hex(mark) + " being deleted in the background"
                      : std::string("conntrack left alone (conntrack_by_mark 0)")));
  // A move to it that has not ended would send flows to an uplink that is down again.
  moves_.erase(
      std::remove_if(moves_.begin(), moves_.end(), [&](const FailbackMove& m) { return m.uplink_id == id; }),
      moves_.end());
  if (!cfg_.globals.reset_stale_tcp || id == 0) return;
  start_scan(id, generation, now_ns);
  // The first slice now: a small table is done before the next probe; a large one goes on in the
  // loop's next turns (Daemon::run), a slice each, so probes keep their schedule.
  continue_scans(now_ns, kScanSliceNs);
}

void FlowHygiene::on_event(uint32_t id, uint32_t mark, std::string_view event) {
  const config::InterfaceConfig* iface = nullptr;
  for (const auto& i : cfg_.interfaces) {
    if (i.id == id) iface = &i;
  }
  if (iface == nullptr) return;
  const auto& events = iface->flush_conntrack;
  if (std::find(events.begin(), events.end(), event) == events.end()) return;
  // on_disconnected() has done it already.
  if (event == "disconnected" && cfg_.globals.conntrack_by_mark) return;
  const std::string why = "flush_conntrack " + std::string(event);
  if (queue_conntrack_delete(id, mark, why)) {
    log::info("interface " + iface->name + ": " + why + ": deleting the conntrack entries with its mark " +
              "in the background (uplinkd never flushes the whole table)");
  }
}

void FlowHygiene::on_connected(uint32_t id, const policy::OnlineInterfaces& online, int64_t now_ns) {
  const policy::PolicyTable table = policy::resolve_policies(cfg_, online);
  // Per move policy: the uplinks that carry its new flows now, per family, when `id` is one of them.
  std::map<std::string, FailbackMove::Members> moving;
  for (const auto& p : cfg_.policies) {
    if (!p.failback_move) continue;
    const policy::PolicyState* state = table.find(p.name);
    if (state == nullptr) continue;
    FailbackMove::Members members;
    for (const auto& m : state->ipv4.members) members.ipv4.insert(m.id);
    for (const auto& m : state->ipv6.members) members.ipv6.insert(m.id);
    if (members.ipv4.count(id) != 0 || members.ipv6.count(id) != 0) moving[p.name] = members;
  }
  if (moving.empty()) return;
  FailbackMove move;
  move.uplink_id = id;
  // rules[i] is cfg.rules[i] (rule_id = i + 1).
  move.by_rule.resize(cfg_.rules.size());
  for (size_t i = 0; i < cfg_.rules.size(); ++i) {
    auto it = moving.find(cfg_.rules[i].use_policy);
    if (it != moving.end()) move.by_rule[i] = it->second;
  }
  // Back again before an earlier move to it ended: one move, from the start, for today's members.
  moves_.erase(
      std::remove_if(moves_.begin(), moves_.end(), [&](const FailbackMove& m) { return m.uplink_id == id; }),
      moves_.end());
  moves_.push_back(std::move(move));
  // The first slice now, as for a stale-flow scan: a small table is done before the next probe, a
  // million flows go on in the loop's next turns (about a second of work in one go otherwise).
  continue_scans(now_ns, kScanSliceNs);
}

bool FlowHygiene::moves_away(const FailbackMove& move, const flow_key& key, const flow_value& value) const {
  if (value.origin != FLOW_ORIGIN_RULE || value.rule_id == 0 || value.rule_id > move.by_rule.size() ||
      value.uplink_id == 0) {
    return false;
  }
  const auto& members = move.by_rule[value.rule_id - 1];
  if (!members) return false;
  const auto& ids = key.family == 6 ? members->ipv6 : members->ipv4;
  // Only flows of the family the returning uplink serves move; others stay where they are.
  return ids.count(move.uplink_id) != 0 && ids.count(value.uplink_id) == 0;
}

void FlowHygiene::move_one(FailbackMove& move, const flow_key& key, const flow_value& value, int64_t now_ns) {
  // A generation from the past never becomes current again (generations only grow).
  dp_.set_flow_generation(key, value.generation - 1);
  if (key.proto == IPPROTO_TCP && cfg_.globals.reset_stale_tcp && reset_one(key, now_ns)) ++move.resets;
  try {
    // Masquerade keeps the original tuple: it is the LAN-side key.
    const int family = key.family == 6 ? AF_INET6 : AF_INET;
    if (netlink::conntrack_delete_tuple(family, key.proto, key.saddr, key.daddr, key.sport, key.dport))
      ++move.conntrack_deleted;
  } catch (const std::invalid_argument&) {
    // ICMP and other protocols without ports: nothing to delete by tuple.
  } catch (const std::exception& e) {
    log::debug(std::string("failback conntrack delete: ") + e.what());
  }
  ++move.moved;
  ++per_uplink_[value.uplink_id].failback_moved;
}

bool FlowHygiene::move_until(FailbackMove& move, int64_t now_ns, int64_t deadline_ns) {
  do {
    // A move costs a map write, maybe a reset, and a conntrack delete (a netlink round trip): the
    // clock is checked after each one.
    if (move.next < move.pending.size()) {
      const auto& [key, value] = move.pending[move.next++];
      move_one(move, key, value, now_ns);
      continue;
    }
    if (move.cursor.done) return true;
    move.pending.clear();
    move.next = 0;
    dp_.walk_flows(move.cursor, kScanBatch, [&](const flow_key& key, const flow_value& value) {
      if (moves_away(move, key, value)) move.pending.emplace_back(key, value);
      return true;
    });
  } while (health::monotonic_ns() < deadline_ns);
  return move.cursor.done && move.next >= move.pending.size();
}

void FlowHygiene::finish_move(const FailbackMove& move) {
  failback_moved_ += move.moved;
  proactive_resets_ += move.resets;
  per_uplink_[move.uplink_id].proactive_resets += move.resets;
  conntrack_deleted_ += move.conntrack_deleted;
  log::notice("interface " + name_of(move.uplink_id) +
              " online: failback 'move': " + std::to_string(move.moved) + " flow(s) moved back, " +
              std::to_string(move.resets) + " TCP client(s) reset, " +
              std::to_string(move.conntrack_deleted) + " conntrack entries deleted");
}

bool FlowHygiene::sweep(int64_t now_ns, int64_t budget_ns) {
  const int64_t start = health::monotonic_ns();
  bool flows_done = false;
  bool seen_done = false;
  // Both maps advance together, so neither waits for the other's whole pass.
  while (!(flows_done && seen_done)) {
    if (!flows_done) flows_done = sweep_flows(now_ns);
    if (!seen_done) seen_done = sweep_tcp_seen();
    if (health::monotonic_ns() - start >= budget_ns) break;
  }
  return flows_done && seen_done;
}

bool FlowHygiene::sweep_flows(int64_t now_ns) {
  const auto now = static_cast<uint64_t>(now_ns);
  std::vector<flow_key> idle;
  dp_.walk_flows(flow_cursor_, options_.sweep_batch, [&](const flow_key& key, const flow_value& value) {
    ++pass_tracked_;
    if (value.uplink_id != 0) ++pass_per_uplink_[value.uplink_id];
    const uint64_t timeout = timeout_s(key.proto);
    if (timeout != 0 && now > value.last_seen_ns && now - value.last_seen_ns >= timeout * kNsPerS) {
      idle.push_back(key);
    }
    return true;
  });
  for (const auto& key : idle) {
    // Read again: a packet may have refreshed the flow since the batch was read.
    const std::optional<flow_value> value = dp_.lookup_flow(key);
    if (!value || now <= value->last_seen_ns || now - value->last_seen_ns < timeout_s(key.proto) * kNsPerS)
      continue;
    if (dp_.delete_flow(key)) ++expired_;
  }
  if (flow_cursor_.done) {
    tracked_ = pass_tracked_;
    tracked_known_ = true;
    tracked_at_ns_ = now_ns;
    for (auto& [id, u] : per_uplink_) u.tracked = 0;
    for (const auto& [id, n] : pass_per_uplink_) per_uplink_[id].tracked = n;
    pass_tracked_ = 0;
    pass_per_uplink_.clear();
    flow_cursor_ = {};
    return true;
  }
  return false;
}

bool FlowHygiene::sweep_tcp_seen() {
  std::vector<flow_key> orphans;
  dp_.walk_tcp_seen(seen_cursor_, options_.sweep_batch, [&](const flow_key& key, const tcp_seen&) {
    orphans.push_back(key);
    return true;
  });
  for (const auto& key : orphans) {
    if (dp_.lookup_flow(key)) continue;
    if (dp_.delete_tcp_seen(key)) ++tcp_seen_pruned_;
  }
  if (!seen_cursor_.done) return false;
  seen_cursor_ = {};
  return true;
}

nlohmann::json FlowHygiene::counters_json() const {
  const datapath::FlowCounters dp = dp_.flow_counters();
  const int64_t now = health::monotonic_ns();
  // By tuple (failback) here, by mark on the worker.
  const ConntrackWorker::Totals by_mark = ct_worker_.totals();
  nlohmann::json uplinks = nlohmann::json::array();
  for (const auto& i : cfg_.interfaces) {
    if (!i.enabled) continue;
    auto it = per_uplink_.find(i.id);
    const PerUplink u = it != per_uplink_.end() ? it->second : PerUplink{};
    auto marked = by_mark.deleted_by_uplink.find(i.id);
    const uint64_t marked_deleted = marked != by_mark.deleted_by_uplink.end() ? marked->second : 0;
    uplinks.push_back({{"name", i.name},
                       {"id", i.id},
                       {"tracked", u.tracked},
                       {"proactive_resets", u.proactive_resets},
                       {"conntrack_deleted", u.conntrack_deleted + marked_deleted},
                       {"failback_moved", u.failback_moved}});
  }
  return {{"tracked", tracked_},
          {"tracked_known", tracked_known_},
          {"tracked_age_s", tracked_known_ ? static_cast<double>(now - tracked_at_ns_) / 1e9 : 0.0},
          {"created", dp.created},
          {"stale_resets", {{"active", dp.stale_tcp_reset}, {"proactive", proactive_resets_}}},
          {"proactive_failed", proactive_failed_},
          {"refused", dp.stale_tcp_refused},
          {"reclassified", dp.reclassified},
          {"idle_reclassified", dp.idle_reclassified},
          {"expired", expired_},
          {"tcp_seen_pruned", tcp_seen_pruned_},
          {"conntrack_deleted", conntrack_deleted_ + by_mark.deleted},
          {"conntrack_failed", by_mark.failed},
          {"conntrack_pending", by_mark.pending},
          {"failback_moved", failback_moved_},
          {"reset_stale_tcp", cfg_.globals.reset_stale_tcp},
          {"conntrack_by_mark", cfg_.globals.conntrack_by_mark},
          {"timeouts_s",
           {{"tcp", cfg_.globals.flow_timeout_tcp_s},
            {"udp", cfg_.globals.flow_timeout_udp_s},
            {"other", cfg_.globals.flow_timeout_s}}},
          {"interfaces", uplinks}};
}

std::string format_flows(const nlohmann::json& f) {
  std::ostringstream out;
  char buf[256];
  out << "Flows:\n";
  if (f.value("tracked_known", false)) {
    std::snprintf(buf, sizeof buf, " tracked %llu (counted by the sweep %.0f s ago)\n",
                  f.value("tracked", 0ULL), f.value("tracked_age_s", 0.0));
  } else {
    std::snprintf(buf, sizeof buf, " tracked: not counted yet (the first sweep pass is under way)\n");
  }
  out << buf;
  const auto resets = f.value("stale_resets", nlohmann::json::object());
  std::snprintf(buf, sizeof buf, " stale TCP resets: %llu active, %llu proactive, %llu refused\n",
                resets.value("active", 0ULL), resets.value("proactive", 0ULL), f.value("refused", 0ULL));
  out << buf;
  std::snprintf(buf, sizeof buf,
                " decided %llu, reclassified %llu (uplink down), %llu (idle), expired %llu\n",
                f.value("created", 0ULL), f.value("reclassified", 0ULL), f.value("idle_reclassified", 0ULL),
                f.value("expired", 0ULL));
  out << buf;
  std::snprintf(
      buf, sizeof buf, " conntrack entries deleted %llu (%llu failed), moved back by failback %llu\n",
      f.value("conntrack_deleted", 0ULL), f.value("conntrack_failed", 0ULL), f.value("failback_moved", 0ULL));
  out << buf;
  if (f.value("conntrack_pending", 0ULL) != 0) {
    std::snprintf(buf, sizeof buf, " conntrack deletes under way: %llu\n",
                  f.value("conntrack_pending", 0ULL));
    out << buf;
  }
  const auto t = f.value("timeouts_s", nlohmann::json::object());
  std::snprintf(
      buf, sizeof buf,
      " idle timeouts: tcp %llus, udp %llus, other %llus; reset_stale_tcp %s, conntrack_by_mark %s\n",
      t.value("tcp", 0ULL), t.value("udp", 0ULL), t.value("other", 0ULL),
      f.value("reset_stale_tcp", false) ? "on" : "off", f.value("conntrack_by_mark", false) ? "on" : "off");
  out << buf << "\nPer interface:\n";
  for (const auto& i : f.value("interfaces", nlohmann::json::array())) {
    std::snprintf(buf, sizeof buf,
                  " %s: tracked %llu, proactive resets %llu, conntrack deleted %llu, moved back %llu\n",
                  i.value("name", "?").c_str(), i.value("tracked", 0ULL), i.value("proactive_resets", 0ULL),
                  i.value("conntrack_deleted", 0ULL), i.value("failback_moved", 0ULL));
    out << buf;
  }
  out << "\n";
  return out.str();
}

}  // namespace uplinkd
