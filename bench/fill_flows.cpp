// Fills a running daemon's flow table for bench/failover_scale.sh: `failing` TCP flows on one uplink,
// each with a fresh tcp_seen entry (an idle client uplinkd would reset at failover), and `other` UDP
// flows on another uplink, all of the uplinks' current generation, as lan_ingress would have left
// them. Batch updates straight into the pinned maps: a million flows in seconds, where making them
// with packets would take minutes on this machine. What the daemon does at failover with them is
// exactly what it does with flows the datapath made.
//
//   fill_flows <pin dir> <failing id> <failing count> <other id> <other count> <lan ifindex>
// Run in the daemon's mount namespace (its bpffs). Prints what it wrote.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <netinet/in.h>
#include <time.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "maps/uplinkd_maps.h"

namespace {

uint64_t monotonic_ns() {
  timespec t{};
  clock_gettime(CLOCK_MONOTONIC, &t);
  return static_cast<uint64_t>(t.tv_sec) * 1000000000ULL + static_cast<uint64_t>(t.tv_nsec);
}

int open_pinned(const std::string& dir, const char* name) {
  const std::string path = dir + "/" + name;
  const int fd = bpf_obj_get(path.c_str());
  if (fd < 0) {
    std::fprintf(stderr, "fill_flows: %s: %s\n", path.c_str(), std::strerror(errno));
    std::exit(1);
  }
  return fd;
}

uplink_record read_uplink(int fd, uint32_t id) {
  uplink_record r{};
  if (bpf_map_lookup_elem(fd, &id, &r) != 0) {
    std::fprintf(stderr, "fill_flows: uplinks[%u]: %s\n", id, std::strerror(errno));
    std::exit(1);
  }
  return r;
}

// Flow i: client 10.(64 + i / 65536 % 64).(i / 256 % 256).(i % 256) to 203.0.113.(i % 4 + 1), so
// every key differs (the LAN's own 10.10.0.0/24 is not among them).
flow_key key_of(uint32_t i, uint8_t proto) {
  flow_key k{};
  k.family = 4;
  k.proto = proto;
  const uint8_t client[4] = {10, static_cast<uint8_t>(64 + (i >> 16) % 64), static_cast<uint8_t>(i >> 8),
                             static_cast<uint8_t>(i)};
  const uint8_t server[4] = {203, 0, 113, static_cast<uint8_t>(i % 4 + 1)};
  std::memcpy(k.saddr, client, 4);
  std::memcpy(k.daddr, server, 4);
  k.sport = htons(static_cast<uint16_t>(1024 + (i >> 22)));
  k.dport = htons(proto == IPPROTO_TCP ? 443 : 53);
  return k;
}

void update_batch(int fd, const char* name, std::vector<flow_key>& keys, void* values) {
  uint32_t count = static_cast<uint32_t>(keys.size());
  if (count == 0) return;
  if (bpf_map_update_batch(fd, keys.data(), values, &count, nullptr) != 0 || count != keys.size()) {
    std::fprintf(stderr, "fill_flows: update of %s: %s (%u of %zu written)\n", name, std::strerror(errno),
                 count, keys.size());
    std::exit(1);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 7) {
    std::fprintf(stderr,
                 "usage: %s <pin dir> <failing id> <failing count> <other id> <other count> <lan ifindex>\n",
                 argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  const auto failing_id = static_cast<uint32_t>(std::strtoul(argv[2], nullptr, 10));
  const auto failing = static_cast<uint32_t>(std::strtoul(argv[3], nullptr, 10));
  const auto other_id = static_cast<uint32_t>(std::strtoul(argv[4], nullptr, 10));
  const auto other = static_cast<uint32_t>(std::strtoul(argv[5], nullptr, 10));
  const auto lan_ifindex = static_cast<uint32_t>(std::strtoul(argv[6], nullptr, 10));
  const int flows_fd = open_pinned(dir, UPLINKD_MAP_FLOWS);
  const int seen_fd = open_pinned(dir, UPLINKD_MAP_TCP_SEEN);
  const int uplinks_fd = open_pinned(dir, UPLINKD_MAP_UPLINKS);
  const uplink_record down = read_uplink(uplinks_fd, failing_id);
  const uplink_record up = read_uplink(uplinks_fd, other_id);

  constexpr uint32_t kBatch = 8192;
  const uint64_t start = monotonic_ns();
  for (uint32_t first = 0; first < failing + other; first += kBatch) {
    std::vector<flow_key> keys, tcp_keys;
    std::vector<flow_value> values;
    std::vector<tcp_seen> seen;
    const uint64_t now = monotonic_ns();
    for (uint32_t i = first; i < failing + other && i < first + kBatch; ++i) {
      const bool on_failing = i < failing;
      const uplink_record& u = on_failing ? down : up;
      flow_value v{};
      v.last_seen_ns = now;
      v.mark = u.mark;
      v.generation = u.generation;
      v.uplink_id = static_cast<uint16_t>(on_failing ? failing_id : other_id);
      v.rule_id = 1;
      v.origin = FLOW_ORIGIN_RULE;
      keys.push_back(key_of(i, on_failing ? IPPROTO_TCP : IPPROTO_UDP));
      values.push_back(v);
      if (!on_failing) continue;
      tcp_seen s{};
      s.last_seen_ns = now;
      s.next_seq = 1000 + i;
      s.ifindex = lan_ifindex;
      const uint8_t client_mac[6] = {0x02, 0, 0, 0, 0, 0x02};
      const uint8_t router_mac[6] = {0x02, 0, 0, 0, 0, 0x01};
      std::memcpy(s.client_mac, client_mac, 6);
      std::memcpy(s.router_mac, router_mac, 6);
      tcp_keys.push_back(keys.back());
      seen.push_back(s);
    }
    update_batch(flows_fd, UPLINKD_MAP_FLOWS, keys, values.data());
    update_batch(seen_fd, UPLINKD_MAP_TCP_SEEN, tcp_keys, seen.data());
  }
  std::printf(
      "fill_flows: %u TCP flows on uplink %u (generation %u, each with tcp_seen) and %u UDP flows on "
      "uplink %u (generation %u) in %.1f s\n",
      failing, failing_id, down.generation, other, other_id, up.generation,
      static_cast<double>(monotonic_ns() - start) / 1e9);
  return 0;
}
