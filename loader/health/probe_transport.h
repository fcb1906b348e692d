// Sends health-check probes out of one uplink. Never waits and never reads replies: the XDP
// program on the uplink catches replies before netfilter and reports them through the ring buffer,
// so a firewall drop cannot fake a loss. Every socket is bound to the uplink's device and carries
// the uplink's mark, so policy routing sends it through that uplink's table.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/ip_address.h"

namespace uplinkd::health {

class ProbeTransport {
 public:
  ProbeTransport(std::string device, uint32_t fwmark, int ttl);
  ~ProbeTransport();
  ProbeTransport(const ProbeTransport&) = delete;
  ProbeTransport& operator=(const ProbeTransport&) = delete;

  // Each send returns 0 or a negative errno. Sockets are opened lazily and reopened after errors
  // (the device may come and go).

  // ICMP echo (IPv4) or ICMPv6 echo (by target family): id, seq, and a payload of `payload_size`
  // bytes whose first 8 bytes are `nonce` (in memory order of the uint64_t, i.e. host order).
  int send_echo(const IpAddress& target, uint16_t ident, uint16_t seq, uint64_t nonce, int payload_size);

  // As send_echo, but sized by the whole IP packet (IPv4: 20 + 8 + payload, IPv6: 40 + 8 +
  // payload) and never fragmented: DF is set, the route's cached path MTU is ignored (path MTU
  // probing must not trust what an earlier "fragmentation needed" said), and a packet larger
  // than the device MTU fails at once with -EMSGSIZE. Separate sockets from send_echo's.
  int send_echo_df(const IpAddress& target, uint16_t ident, uint16_t seq, uint64_t nonce, int packet_size);

  // A TCP SYN from local port `local_port` to target:`target_port` with sequence number `isn`.
  // The reply (SYN-ACK or RST) acknowledges isn + 1.
  int send_tcp_syn(const IpAddress& target, uint16_t target_port, uint16_t local_port, uint32_t isn);

  // A DNS query (type A for IPv4 targets, AAAA for IPv6) for `qname` with id `query_id`, sent from a
  // UDP socket bound to `local_port` (-EADDRINUSE: pick another port). The socket stays open until
  // release_dns(local_port), so the port is not reused while the reply may still come.
  int send_dns_query(const IpAddress& target, uint16_t local_port, uint16_t query_id,
                     const std::string& qname);
  // release_dns also releases a send_udp_probe port (both hold UDP sockets by local port).
  void release_dns(uint16_t local_port);

  // nping-udp: a datagram from `local_port` to target:`target_port` whose 8-byte payload is
  // `nonce` (memory order). The socket is held like send_dns_query's until release_dns.
  int send_udp_probe(const IpAddress& target, uint16_t target_port, uint16_t local_port, uint64_t nonce);

  // An ARP request (who-has `target`, an IPv4 gateway) from the device's MAC and IPv4 address.
  int send_arp_request(const IpAddress& target);

  // The device's current primary address of a family, for the nexthop-facing side (nullopt: none).
  std::optional<IpAddress> source_address(int family) const;

  const std::string& device() const { return device_; }

 private:
  int icmp_socket(int family);
  int icmp_df_socket(int family);
  int open_icmp_socket(int& fd, int family, bool dont_fragment);
  int tcp_socket(int family);
  int send_held_udp(const IpAddress& target, uint16_t target_port, uint16_t local_port,
                    const std::vector<uint8_t>& payload);
  std::optional<IpAddress> arp_sender_address(int ifindex, const IpAddress& target) const;
  void close_all();

  std::string device_;
  uint32_t fwmark_;
  int ttl_;
  int icmp4_fd_ = -1;
  int icmp6_fd_ = -1;
  int icmp4_df_fd_ = -1;  // send_echo_df's: don't-fragment, device MTU
  int icmp6_df_fd_ = -1;
  int tcp4_fd_ = -1;
  int tcp6_fd_ = -1;
  int arp_fd_ = -1;
  std::map<uint16_t, int> dns_fds_;
};

}  // namespace uplinkd::health
