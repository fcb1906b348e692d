// BPF_PROG_TEST_RUN fixtures for the XDP program uplink_ingress.
//
// Each fixture is a data row: a description, the setup (outstanding probes, limiter settings,
// l3_only), the packets to run with the verdict and metadata each must produce, and the effects
// expected afterwards (ring buffer events, counter totals). Every probe a row inserts must be
// gone afterwards exactly when the row expects an event for it. Adding a case is adding a row to
// AllCases(). Runs as root: loading BPF needs CAP_BPF and CAP_NET_ADMIN.
//
// The packet builders live in packet_builder.h (namespace uplinkd::bpftest), shared with the other
// BPF test files.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <gtest/gtest.h>
#include <linux/if_ether.h>
#include <net/if.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "loader/datapath/kernel_features.h"
#include "maps/uplinkd_maps.h"
#include "packet_builder.h"
#include "test_run.h"
#include "uplink_ingress.skel.h"

namespace {

using namespace uplinkd::bpftest;

constexpr uint16_t kUplinkId = 7;
constexpr const char* kTarget4 = "192.0.2.1";
constexpr const char* kLocal4 = "192.0.2.2";
constexpr const char* kOther4 = "198.51.100.9";
constexpr const char* kTarget6 = "2001:db8::1";
constexpr const char* kLocal6 = "2001:db8::2";
constexpr uint64_t kNonce = 0x0123456789abcdefull;
constexpr uint16_t kEchoId = 0x4242;
constexpr uint16_t kEchoSeq = 7;
constexpr uint16_t kOurPort = 50000;
constexpr uint32_t kIsn = 0x11223344;
constexpr uint16_t kDnsId = 0xbeef;
constexpr uint64_t kProbeAgeNs = 1'000'000;  // probes are inserted as sent 1 ms ago
constexpr uint64_t kSecondNs = 1'000'000'000;
constexpr int kIcmpV6EchoRequest = 128, kIcmpV6EchoReply = 129;
constexpr int kNdNeighbourSolicit = 135, kNdNeighbourAdvert = 136;

// ---- row vocabulary ---------------------------------------------------------------------------

probe_key icmp_key(const char* target = kTarget4, uint16_t id = kEchoId, uint16_t seq = kEchoSeq) {
  return make_probe_key(kUplinkId, target, PROBE_KIND_ICMP, id, seq);
}
probe_key icmp6_key(uint16_t id = kEchoId, uint16_t seq = kEchoSeq) {
  return make_probe_key(kUplinkId, kTarget6, PROBE_KIND_ICMPV6, id, seq);
}
probe_key tcp_key() { return make_probe_key(kUplinkId, kTarget4, PROBE_KIND_TCP, kOurPort, 443); }
probe_key dns_key() { return make_probe_key(kUplinkId, kTarget4, PROBE_KIND_DNS, kOurPort, kDnsId); }
probe_key arp_key() { return make_probe_key(kUplinkId, kTarget4, PROBE_KIND_ARP, 0, 0); }
// nping-udp: our port from the probe range, the target's port (nping's default 40125).
constexpr uint16_t kUdpProbePort = UPLINKD_UDP_PROBE_PORT_MIN + 17;
constexpr uint16_t kUdpTargetPort = 40125;
probe_key udp_key(const char* target = kTarget4) {
  return make_probe_key(kUplinkId, target, PROBE_KIND_UDP, kUdpProbePort, kUdpTargetPort);
}

Bytes echo_v4(uint8_t type, uint64_t nonce = kNonce, uint16_t id = kEchoId, uint16_t seq = kEchoSeq,
              const char* from = kTarget4, const Ipv4Options& o = {}) {
  return ipv4(from, kLocal4, IPPROTO_ICMP, icmp_echo(type, id, seq, nonce_payload(nonce)), o);
}
Bytes echo_v6(uint8_t type, uint64_t nonce = kNonce, uint16_t id = kEchoId, uint16_t seq = kEchoSeq) {
  return ipv6(kTarget6, kLocal6, IPPROTO_ICMPV6, icmp_echo(type, id, seq, nonce_payload(nonce)));
}
Bytes eth4(const Bytes& l3, const std::vector<VlanTag>& tags = {}) { return ethernet(ETH_P_IP, l3, tags); }
Bytes eth6(const Bytes& l3) { return ethernet(ETH_P_IPV6, l3); }

Bytes reply_v4(uint64_t nonce = kNonce, uint16_t id = kEchoId) { return eth4(echo_v4(0, nonce, id)); }
Bytes request_v4() { return eth4(echo_v4(8)); }
Bytes reply_v6(uint64_t nonce = kNonce) { return eth6(echo_v6(kIcmpV6EchoReply, nonce)); }

Bytes tcp_from_target(uint32_t ack, uint8_t flags) {
  return eth4(ipv4(kTarget4, kLocal4, IPPROTO_TCP, tcp(443, kOurPort, 0x55667788, ack, flags)));
}
Bytes dns_from_target(const Bytes& dns_payload) {
  return eth4(ipv4(kTarget4, kLocal4, IPPROTO_UDP, udp(53, kOurPort, dns_payload)));
}
// The echo server's answer: from target:port back to our probe port, the nonce first in the payload.
Bytes udp_echo_from_target(uint64_t nonce = kNonce, uint16_t to_port = kUdpProbePort,
                           uint16_t from_port = kUdpTargetPort) {
  return eth4(ipv4(kTarget4, kLocal4, IPPROTO_UDP, udp(from_port, to_port, nonce_payload(nonce, 8))));
}
Bytes udp_echo_from_target6(uint64_t nonce = kNonce) {
  return eth6(
      ipv6(kTarget6, kLocal6, IPPROTO_UDP, udp(kUdpTargetPort, kUdpProbePort, nonce_payload(nonce, 8))));
}
// Our probe as an ICMP error quotes it: IP header (ours) + UDP header + the nonce.
Bytes quoted_probe4(uint64_t nonce, const char* to = kTarget4, size_t quoted_payload = 8) {
  return ipv4(kLocal4, to, IPPROTO_UDP,
              udp(kUdpProbePort, kUdpTargetPort, truncated(nonce_payload(nonce, 8), quoted_payload)));
}
Bytes icmp_error4(uint8_t type, uint8_t code, const Bytes& quoted, const char* from = kTarget4) {
  Bytes icmp{type, code, 0, 0, 0, 0, 0, 0};
  return eth4(ipv4(from, kLocal4, IPPROTO_ICMP, concat(icmp, quoted)));
}
Bytes port_unreachable6(uint64_t nonce = kNonce) {
  Bytes icmp{1, 4, 0, 0, 0, 0, 0, 0};
  const Bytes quoted =
      ipv6(kLocal6, kTarget6, IPPROTO_UDP, udp(kUdpProbePort, kUdpTargetPort, nonce_payload(nonce, 8)));
  return eth6(ipv6(kTarget6, kLocal6, IPPROTO_ICMPV6, concat(icmp, quoted)));
}
Bytes arp_from_target(uint16_t op) {
  return ethernet(ETH_P_ARP, arp_ipv4(op, kGatewayMac, kTarget4, kUplinkMac, kLocal4));
}

struct ProbeSetup {
  probe_key key;
  uint64_t nonce = kNonce;
};

struct LimiterSetup {
  uint64_t interval_ns;  // 1e9 / rate
  uint32_t burst;
};

struct Step {
  Bytes packet;
  int verdict = XDP_PASS;
  bool meta = false;  // a probe_reply_meta in front of the packet
};

struct Case {
  const char* name;
  const char* description;
  bool l3_only = false;
  std::vector<ProbeSetup> probes;
  std::optional<LimiterSetup> limiter;
  std::vector<Step> steps;
  std::vector<probe_key> events;  // in order; these probes must be gone, all others kept
  uplink_counters counters{};     // totals after all steps
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name << ": " << c.description; }

Step pass(Bytes p) { return Step{std::move(p), XDP_PASS, false}; }
Step pass_tagged(Bytes p) { return Step{std::move(p), XDP_PASS, true}; }
Step drop(Bytes p) { return Step{std::move(p), XDP_DROP, false}; }

// Limiter settings used by the limiter rows: a rate of 1/s, so nothing refills during a test.
LimiterSetup limit_burst(uint32_t burst) { return LimiterSetup{kSecondNs, burst}; }

std::vector<Case> AllCases() {
  const Ipv4Options more_fragments{.frag_off = 0x2000};
  const Ipv4Options later_fragment{.frag_off = 0x0010};
  const Ipv4Options with_options{.ihl = 6};
  const Ipv4Options ihl_four{.ihl = 4};
  const Ipv4Options version_five{.version = 5};
  const Ipv4Options total_below_header{.total_length = 10};
  const VlanTag q{ETH_P_8021Q, 100}, ad{ETH_P_8021AD, 200};

  return {
      // ---- matched replies ----
      {.name = "IcmpV4Matched",
       .description = "IPv4 echo reply with the right id, seq and nonce: reported, deleted, tagged",
       .probes = {{icmp_key()}},
       .steps = {pass_tagged(reply_v4())},
       .events = {icmp_key()},
       .counters = {.probe_replies = 1}},
      {.name = "IcmpV6Matched",
       .description = "ICMPv6 echo reply: reported with the full IPv6 source as key",
       .probes = {{icmp6_key()}},
       .steps = {pass_tagged(reply_v6())},
       .events = {icmp6_key()},
       .counters = {.probe_replies = 1}},
      {.name = "IcmpV4WithOptionsMatched",
       .description = "IPv4 header with options (ihl 6): L4 found past them",
       .probes = {{icmp_key()}},
       .steps = {pass_tagged(eth4(echo_v4(0, kNonce, kEchoId, kEchoSeq, kTarget4, with_options)))},
       .events = {icmp_key()},
       .counters = {.probe_replies = 1}},
      {.name = "VlanTaggedMatched",
       .description = "802.1Q-tagged echo reply",
       .probes = {{icmp_key()}},
       .steps = {pass_tagged(eth4(echo_v4(0), {q}))},
       .events = {icmp_key()},
       .counters = {.probe_replies = 1}},
      {.name = "QinQTaggedMatched",
       .description = "802.1ad + 802.1Q double-tagged echo reply",
       .probes = {{icmp_key()}},
       .steps = {pass_tagged(eth4(echo_v4(0), {ad, q}))},
       .events = {icmp_key()},
       .counters = {.probe_replies = 1}},
      {.name = "L3OnlyIpv4Matched",
       .description = "l3_only instance: the frame starts at the IPv4 header",
       .l3_only = true,
       .probes = {{icmp_key()}},
       .steps = {pass_tagged(echo_v4(0))},
       .events = {icmp_key()},
       .counters = {.probe_replies = 1}},
      {.name = "L3OnlyIpv6Matched",
       .description = "l3_only instance: the frame starts at the IPv6 header",
       .l3_only = true,
       .probes = {{icmp6_key()}},
       .steps = {pass_tagged(echo_v6(kIcmpV6EchoReply))},
       .events = {icmp6_key()},
       .counters = {.probe_replies = 1}},
      {.name = "TcpSynAckMatched",
       .description = "SYN+ACK acknowledging ISN + 1",
       .probes = {{tcp_key(), kIsn}},
       .steps = {pass_tagged(tcp_from_target(kIsn + 1, kTcpSyn | kTcpAck))},
       .events = {tcp_key()},
       .counters = {.probe_replies = 1}},
      {.name = "TcpRstAckMatched",
       .description = "RST+ACK (closed port) acknowledging ISN + 1: the path works",
       .probes = {{tcp_key(), kIsn}},
       .steps = {pass_tagged(tcp_from_target(kIsn + 1, kTcpRst | kTcpAck))},
       .events = {tcp_key()},
       .counters = {.probe_replies = 1}},
      {.name = "TcpNonceWrapsMatched",
       .description = "ISN 0xffffffff: the reply acknowledges 0",
       .probes = {{tcp_key(), 0xffffffffull}},
       .steps = {pass_tagged(tcp_from_target(0, kTcpSyn | kTcpAck))},
       .events = {tcp_key()},
       .counters = {.probe_replies = 1}},
      {.name = "DnsReplyMatched",
       .description = "UDP from port 53 with QR set and our query id",
       .probes = {{dns_key(), 0}},
       .steps = {pass_tagged(dns_from_target(concat(dns_header(kDnsId, true), Bytes(16, 0))))},
       .events = {dns_key()},
       .counters = {.probe_replies = 1}},
      {.name = "ArpReplyMatched",
       .description = "ARP reply from the gateway: keyed by its sender IP",
       .probes = {{arp_key(), 0}},
       .steps = {pass_tagged(arp_from_target(2))},
       .events = {arp_key()},
       .counters = {.probe_replies = 1}},

      {.name = "UdpEchoMatched",
       .description = "nping-udp: the echo server returns our nonce from target:port to our probe port",
       .probes = {{udp_key()}},
       .steps = {pass_tagged(udp_echo_from_target())},
       .events = {udp_key()},
       .counters = {.probe_replies = 1}},
      {.name = "UdpEchoMatchedV6",
       .description = "nping-udp over IPv6: the same echo",
       .probes = {{udp_key(kTarget6)}},
       .steps = {pass_tagged(udp_echo_from_target6())},
       .events = {udp_key(kTarget6)},
       .counters = {.probe_replies = 1}},
      {.name = "UdpPortUnreachableMatched",
       .description = "nping-udp: the target's ICMP port unreachable quoting our probe counts, as nping "
                      "counts it",
       .probes = {{udp_key()}},
       .steps = {pass_tagged(icmp_error4(3, 3, quoted_probe4(kNonce)))},
       .events = {udp_key()},
       .counters = {.probe_replies = 1}},
      {.name = "UdpPortUnreachableMatchedV6",
       .description = "nping-udp over IPv6: ICMPv6 port unreachable quoting our probe",
       .probes = {{udp_key(kTarget6)}},
       .steps = {pass_tagged(port_unreachable6())},
       .events = {udp_key(kTarget6)},
       .counters = {.probe_replies = 1}},
      {.name = "UdpPortUnreachableUnderLimiter",
       .description = "a matched port unreachable is never dropped by the limiter, and is counted as exempt",
       .probes = {{udp_key()}},
       .limiter = limit_burst(1),
       .steps = {pass(request_v4()), pass_tagged(icmp_error4(3, 3, quoted_probe4(kNonce)))},
       .events = {udp_key()},
       .counters = {.probe_replies = 1, .icmp_passed = 1, .probe_replies_exempted = 1}},

      // ---- near misses: kept, not reported ----
      {.name = "UdpEchoWrongNonce",
       .description = "nping-udp: right ports, wrong nonce: kept, counted",
       .probes = {{udp_key()}},
       .steps = {pass(udp_echo_from_target(kNonce ^ 1))},
       .counters = {.nonce_mismatch = 1}},
      {.name = "UdpEchoWrongProbePort",
       .description = "to another port of the probe range: no such probe",
       .probes = {{udp_key()}},
       .steps = {pass(udp_echo_from_target(kNonce, kUdpProbePort + 1))}},
      {.name = "UdpEchoWrongTargetPort",
       .description = "from another port of the target: not the port we asked",
       .probes = {{udp_key()}},
       .steps = {pass(udp_echo_from_target(kNonce, kUdpProbePort, kUdpTargetPort + 1))}},
      {.name = "UdpOutsideProbeRange",
       .description = "to a port below the probe range: ordinary UDP, untouched (and not a DNS reply)",
       .probes = {{udp_key()}},
       .steps = {pass(udp_echo_from_target(kNonce, UPLINKD_UDP_PROBE_PORT_MIN - 1)),
                 pass(udp_echo_from_target(kNonce,
                                           UPLINKD_UDP_PROBE_PORT_MIN + UPLINKD_UDP_PROBE_PORT_COUNT))}},
      {.name = "UdpEchoNoNonce",
       .description = "an empty datagram (nping's own probe shape) carries no nonce: not ours",
       .probes = {{udp_key()}},
       .steps = {pass(eth4(ipv4(kTarget4, kLocal4, IPPROTO_UDP, udp(kUdpTargetPort, kUdpProbePort, {}))))}},
      {.name = "UdpPortUnreachableWrongNonce",
       .description = "a port unreachable quoting another nonce: kept, counted",
       .probes = {{udp_key()}},
       .steps = {pass(icmp_error4(3, 3, quoted_probe4(~kNonce)))},
       .counters = {.nonce_mismatch = 1}},
      {.name = "UdpUnreachableFromRouter",
       .description = "an unreachable sent by a router on the way (not the target): the path is broken",
       .probes = {{udp_key()}},
       .steps = {pass(icmp_error4(3, 3, quoted_probe4(kNonce), kOther4))}},
      {.name = "UdpHostUnreachable",
       .description = "host unreachable (code 1), even from the target's address, is not port unreachable",
       .probes = {{udp_key()}},
       .steps = {pass(icmp_error4(3, 1, quoted_probe4(kNonce)))}},
      {.name = "UdpTimeExceeded",
       .description = "time exceeded quoting our probe (nping would count it): the probe never arrived",
       .probes = {{udp_key()}},
       .steps = {pass(icmp_error4(11, 0, quoted_probe4(kNonce)))}},
      {.name = "UdpUnreachableQuoteTooShort",
       .description = "a quote without the nonce (only the 8 bytes RFC 792 asks for) proves nothing",
       .probes = {{udp_key()}},
       .steps = {pass(icmp_error4(3, 3, quoted_probe4(kNonce, kTarget4, 4)))}},
      {.name = "IcmpV4WrongNonce",
       .description = "right key, wrong nonce: kept for the genuine reply, counted",
       .probes = {{icmp_key()}},
       .steps = {pass(reply_v4(kNonce ^ 1))},
       .counters = {.nonce_mismatch = 1}},
      {.name = "IcmpV6WrongNonce",
       .description = "ICMPv6 with a wrong nonce",
       .probes = {{icmp6_key()}},
       .steps = {pass(reply_v6(~kNonce))},
       .counters = {.nonce_mismatch = 1}},
      {.name = "IcmpUnknownId",
       .description = "echo id nobody is waiting for",
       .probes = {{icmp_key()}},
       .steps = {pass(reply_v4(kNonce, kEchoId + 1))}},
      {.name = "IcmpUnknownSource",
       .description = "right id and nonce but from another address",
       .probes = {{icmp_key()}},
       .steps = {pass(eth4(echo_v4(0, kNonce, kEchoId, kEchoSeq, kOther4)))}},
      {.name = "ProbeOfAnotherUplink",
       .description = "the probe went out on uplink 8: this instance (uplink 7) does not take it",
       .probes = {{make_probe_key(8, kTarget4, PROBE_KIND_ICMP, kEchoId, kEchoSeq)}},
       .steps = {pass(reply_v4())}},
      {.name = "DuplicateReply",
       .description = "the same reply twice: the second finds no entry, no second event",
       .probes = {{icmp_key()}},
       .steps = {pass_tagged(reply_v4()), pass(reply_v4())},
       .events = {icmp_key()},
       .counters = {.probe_replies = 1}},
      {.name = "EchoRequestNotReply",
       .description = "an echo request carrying our id is not a reply",
       .probes = {{icmp_key()}},
       .steps = {pass(request_v4())}},
      {.name = "TcpSynAckWrongAck",
       .description = "SYN+ACK acknowledging ISN (not ISN + 1): nonce mismatch",
       .probes = {{tcp_key(), kIsn}},
       .steps = {pass(tcp_from_target(kIsn, kTcpSyn | kTcpAck))},
       .counters = {.nonce_mismatch = 1}},
      {.name = "TcpRstWithoutAck",
       .description = "RST without ACK carries no usable ack number",
       .probes = {{tcp_key(), kIsn}},
       .steps = {pass(tcp_from_target(kIsn + 1, kTcpRst))}},
      {.name = "TcpPlainAck",
       .description = "ordinary TCP data/ACK segment: untouched",
       .probes = {{tcp_key(), kIsn}},
       .steps = {pass(tcp_from_target(kIsn + 1, kTcpAck))}},
      {.name = "DnsQueryNotReply",
       .description = "UDP from port 53 with QR clear",
       .probes = {{dns_key(), 0}},
       .steps = {pass(dns_from_target(dns_header(kDnsId, false)))}},
      {.name = "DnsHeaderTooShort",
       .description = "UDP from port 53 with 11 bytes of DNS header",
       .probes = {{dns_key(), 0}},
       .steps = {pass(dns_from_target(truncated(dns_header(kDnsId, true), 11)))}},
      {.name = "ArpRequestNotReply",
       .description = "ARP request (op 1) from the gateway",
       .probes = {{arp_key(), 0}},
       .steps = {pass(arp_from_target(1))}},
      {.name = "ArpTruncated",
       .description = "ARP reply cut inside the sender address",
       .probes = {{arp_key(), 0}},
       .steps = {pass(truncated(arp_from_target(2), 14 + 8 + 6 + 2))}},

      // ---- truncated and malformed: pass untouched ----
      {.name = "Ipv4HeaderCut",
       .description = "frame ends 10 bytes into the IPv4 header",
       .probes = {{icmp_key()}},
       .steps = {pass(truncated(reply_v4(), 14 + 10))}},
      {.name = "IcmpHeaderCut",
       .description = "frame ends 4 bytes into the ICMP header",
       .probes = {{icmp_key()}},
       .steps = {pass(truncated(reply_v4(), 14 + 20 + 4))}},
      {.name = "EchoPayloadShort",
       .description = "echo reply with 7 payload bytes: cannot hold the nonce",
       .probes = {{icmp_key()}},
       .steps = {pass(eth4(ipv4(kTarget4, kLocal4, IPPROTO_ICMP,
                                icmp_echo(0, kEchoId, kEchoSeq, nonce_payload(kNonce, 7)))))}},
      {.name = "EchoNonceInPaddingOnly",
       .description = "empty echo reply whose Ethernet padding happens to hold the nonce",
       .probes = {{icmp_key()}},
       .steps = {pass(concat(eth4(ipv4(kTarget4, kLocal4, IPPROTO_ICMP, icmp_echo(0, kEchoId, kEchoSeq, {}))),
                             nonce_payload(kNonce, 18)))}},
      {.name = "Ipv4IhlBelowFive",
       .description = "IPv4 ihl 4",
       .probes = {{icmp_key()}},
       .steps = {pass(eth4(echo_v4(0, kNonce, kEchoId, kEchoSeq, kTarget4, ihl_four)))}},
      {.name = "Ipv4BadVersion",
       .description = "ethertype IPv4, version nibble 5",
       .probes = {{icmp_key()}},
       .steps = {pass(eth4(echo_v4(0, kNonce, kEchoId, kEchoSeq, kTarget4, version_five)))}},
      {.name = "Ipv4TotalLengthBelowHeader",
       .description = "IPv4 total length 10",
       .probes = {{icmp_key()}},
       .steps = {pass(eth4(echo_v4(0, kNonce, kEchoId, kEchoSeq, kTarget4, total_below_header)))}},
      {.name = "Ipv4FirstFragment",
       .description = "echo reply in a fragment with MF set",
       .probes = {{icmp_key()}},
       .steps = {pass(eth4(echo_v4(0, kNonce, kEchoId, kEchoSeq, kTarget4, more_fragments)))}},
      {.name = "Ipv4LaterFragment",
       .description = "echo-reply-shaped bytes in a fragment with non-zero offset",
       .probes = {{icmp_key()}},
       .steps = {pass(eth4(echo_v4(0, kNonce, kEchoId, kEchoSeq, kTarget4, later_fragment)))}},
      {.name = "Ipv6HeaderCut",
       .description = "frame ends 30 bytes into the IPv6 header",
       .probes = {{icmp6_key()}},
       .steps = {pass(truncated(reply_v6(), 14 + 30))}},
      {.name = "Ipv6ExtensionHeader",
       .description = "ICMPv6 behind a hop-by-hop header is not matchable",
       .probes = {{icmp6_key()}},
       .steps = {pass(
           eth6(ipv6(kTarget6, kLocal6, 0 /* hop-by-hop */,
                     concat(Bytes{IPPROTO_ICMPV6, 0, 1, 4, 0, 0, 0, 0},
                            icmp_echo(kIcmpV6EchoReply, kEchoId, kEchoSeq, nonce_payload(kNonce))))))}},
      {.name = "IcmpV6TypeInIpv4",
       .description = "ICMPv6 next-header number inside IPv4 is not ICMPv6",
       .probes = {{icmp6_key()}},
       .steps = {pass(eth4(ipv4(kTarget4, kLocal4, IPPROTO_ICMPV6,
                                icmp_echo(kIcmpV6EchoReply, kEchoId, kEchoSeq, nonce_payload(kNonce)))))}},
      {.name = "ThreeVlanTags",
       .description = "a third VLAN tag is beyond the parser: passed unparsed",
       .probes = {{icmp_key()}},
       .steps = {pass(eth4(echo_v4(0), {ad, q, q}))}},
      {.name = "EthernetHeaderOnly", .description = "14-byte frame", .steps = {pass(ethernet(ETH_P_IP, {}))}},
      {.name = "L3OnlyGarbage",
       .description = "l3_only frame whose version nibble is 0",
       .l3_only = true,
       .probes = {{icmp_key()}},
       .steps = {pass(Bytes(40, 0x00))}},
      {.name = "L3OnlyEthernetFrame",
       .description = "an Ethernet frame on an l3_only uplink is not parsed as IP",
       .l3_only = true,
       .probes = {{icmp_key()}},
       .steps = {pass(reply_v4())}},

      // ---- other traffic: untouched ----
      {.name = "PlainUdp",
       .description = "UDP 40000 -> 5000",
       .probes = {{icmp_key()}},
       .steps = {pass(eth4(ipv4(kTarget4, kLocal4, IPPROTO_UDP, udp(40000, 5000, Bytes(32, 1)))))}},
      {.name = "PlainTcpV6",
       .description = "TCP over IPv6",
       .steps = {pass(eth6(ipv6(kTarget6, kLocal6, IPPROTO_TCP, tcp(443, kOurPort, 1, 2, kTcpAck))))}},
      {.name = "NonIpEthertype",
       .description = "LLDP frame",
       .steps = {pass(ethernet(0x88cc, Bytes(40, 0)))}},

      // ---- ICMP limiter ----
      {.name = "LimiterUnderRate",
       .description = "burst 3: three unmatched ICMP packets back to back pass",
       .limiter = limit_burst(3),
       .steps = {pass(request_v4()), pass(request_v4()), pass(reply_v4())},
       .counters = {.icmp_passed = 3}},
      {.name = "LimiterOverRate",
       .description = "burst 3: the fourth and fifth are dropped",
       .limiter = limit_burst(3),
       .steps = {pass(request_v4()), pass(request_v4()), pass(request_v4()), drop(request_v4()),
                 drop(reply_v4())},
       .counters = {.icmp_passed = 3, .icmp_dropped = 2}},
      {.name = "LimiterSparesMatchedReply",
       .description = "bucket exhausted: a matched reply passes, is tagged and counted as exempted",
       .probes = {{icmp_key()}},
       .limiter = limit_burst(2),
       .steps = {pass(request_v4()), pass(request_v4()), drop(request_v4()), pass_tagged(reply_v4()),
                 drop(request_v4())},
       .events = {icmp_key()},
       .counters = {.probe_replies = 1, .icmp_passed = 2, .icmp_dropped = 2, .probe_replies_exempted = 1}},
      {.name = "LimiterMatchedReplyFree",
       .description = "a matched reply with budget left is not charged and not counted as exempted",
       .probes = {{icmp_key()}},
       .limiter = limit_burst(2),
       .steps = {pass(request_v4()), pass_tagged(reply_v4()), pass(request_v4()), drop(request_v4())},
       .events = {icmp_key()},
       .counters = {.probe_replies = 1, .icmp_passed = 2, .icmp_dropped = 1}},
      {.name = "LimiterChargesWrongNonce",
       .description = "a reply with a wrong nonce is ordinary ICMP to the limiter",
       .probes = {{icmp_key()}},
       .limiter = limit_burst(1),
       .steps = {pass(reply_v4(kNonce + 1)), drop(reply_v4(kNonce + 1))},
       .counters = {.nonce_mismatch = 2, .icmp_passed = 1, .icmp_dropped = 1}},
      {.name = "LimiterIcmpV6",
       .description = "ICMPv6 echo requests share the uplink's budget with ICMP",
       .limiter = limit_burst(2),
       .steps = {pass(request_v4()), pass(eth6(echo_v6(kIcmpV6EchoRequest))),
                 drop(eth6(echo_v6(kIcmpV6EchoRequest)))},
       .counters = {.icmp_passed = 2, .icmp_dropped = 1}},
      {.name = "LimiterSparesNeighbourDiscovery",
       .description = "NS/NA bypass the limiter (they keep the IPv6 next hop reachable)",
       .limiter = limit_burst(1),
       .steps = {pass(eth6(echo_v6(kIcmpV6EchoRequest))),
                 pass(eth6(ipv6(kTarget6, kLocal6, IPPROTO_ICMPV6, icmp_message(kNdNeighbourSolicit, 20)))),
                 pass(eth6(ipv6(kTarget6, kLocal6, IPPROTO_ICMPV6, icmp_message(kNdNeighbourAdvert, 20)))),
                 drop(eth6(echo_v6(kIcmpV6EchoRequest)))},
       .counters = {.icmp_passed = 1, .icmp_dropped = 1}},
      {.name = "LimiterCountsIcmpFragments",
       .description = "ICMP fragments are ICMP to the limiter, odd or not",
       .limiter = limit_burst(1),
       .steps = {pass(eth4(echo_v4(8, kNonce, kEchoId, kEchoSeq, kTarget4, more_fragments))),
                 drop(eth4(echo_v4(8, kNonce, kEchoId, kEchoSeq, kTarget4, later_fragment))),
                 drop(truncated(request_v4(), 14 + 20 + 2))},
       .counters = {.icmp_passed = 1, .icmp_dropped = 2}},
      {.name = "LimiterIgnoresOtherProtocols",
       .description = "UDP and TCP are never limited",
       .limiter = limit_burst(1),
       .steps = {pass(request_v4()), drop(request_v4()),
                 pass(eth4(ipv4(kTarget4, kLocal4, IPPROTO_UDP, udp(1, 2, Bytes(8, 0))))),
                 pass(tcp_from_target(1, kTcpAck))},
       .counters = {.icmp_passed = 1, .icmp_dropped = 1}},
      {.name = "LimiterBurstZeroMeansOne",
       .description = "burst 0 is read as 1 rather than refusing everything",
       .limiter = limit_burst(0),
       .steps = {pass(request_v4()), drop(request_v4())},
       .counters = {.icmp_passed = 1, .icmp_dropped = 1}},
      {.name = "LimiterOff",
       .description = "interval 0: nothing dropped, nothing counted",
       .limiter = LimiterSetup{0, 1},
       .steps = {pass(request_v4()), pass(request_v4()), pass(request_v4()), pass(request_v4()),
                 pass(reply_v4()), pass(eth6(echo_v6(kIcmpV6EchoRequest)))}},

      // ---- path MTU probes: big echo replies, as the daemon's DF probes get back ----
      {.name = "IcmpV4BigDfReplyMatched",
       .description = "1400-byte IPv4 echo reply with DF set: matched like a small one",
       .probes = {{icmp_key()}},
       .steps = {pass_tagged(eth4(ipv4(kTarget4, kLocal4, IPPROTO_ICMP,
                                       icmp_echo(0, kEchoId, kEchoSeq, nonce_payload(kNonce, 1400 - 20 - 8)),
                                       Ipv4Options{.frag_off = 0x4000 /* DF */})))},
       .events = {icmp_key()},
       .counters = {.probe_replies = 1}},
      {.name = "IcmpV6BigReplyMatched",
       .description = "1400-byte ICMPv6 echo reply (IPv6 routers never fragment): matched",
       .probes = {{icmp6_key()}},
       .steps = {pass_tagged(
           eth6(ipv6(kTarget6, kLocal6, IPPROTO_ICMPV6,
                     icmp_echo(kIcmpV6EchoReply, kEchoId, kEchoSeq, nonce_payload(kNonce, 1400 - 40 - 8)))))},
       .events = {icmp6_key()},
       .counters = {.probe_replies = 1}},
  };
}

// ---- the tester -------------------------------------------------------------------------------

struct RunResult {
  int err = 0;
  uint32_t verdict = 0;
  uint32_t meta_len = 0;  // bytes in front of the packet in data_out
  Bytes data_out;         // metadata followed by the packet
};

// Loads a fresh instance (so every map starts empty) and runs packets through it.
class IngressProgram {
 public:
  explicit IngressProgram(bool l3_only) {
    skel_ = uplink_ingress__open();
    if (skel_ == nullptr) {
      return;
    }
    skel_->rodata->uplink_id = kUplinkId;
    skel_->rodata->l3_only = l3_only ? 1 : 0;
    skel_->rodata->tag_replies = uplinkd::datapath::xdp_metadata_supported() ? 1 : 0;
    load_err_ = uplink_ingress__load(skel_);
    if (load_err_ != 0) {
      return;
    }
    ring_ = ring_buffer__new(bpf_map__fd(skel_->maps.probe_events), &IngressProgram::on_event, this, nullptr);
  }
  ~IngressProgram() {
    if (ring_ != nullptr) {
      ring_buffer__free(ring_);
    }
    if (skel_ != nullptr) {
      uplink_ingress__destroy(skel_);
    }
  }
  IngressProgram(const IngressProgram&) = delete;
  IngressProgram& operator=(const IngressProgram&) = delete;

  bool ok() const { return skel_ != nullptr && load_err_ == 0 && ring_ != nullptr; }
  int load_err() const { return load_err_; }

  int insert_probe(const probe_key& key, uint64_t nonce, uint64_t sent_ns) {
    probe_value value{sent_ns, nonce};
    return bpf_map_update_elem(bpf_map__fd(skel_->maps.probes), &key, &value, BPF_NOEXIST);
  }
  bool has_probe(const probe_key& key) {
    probe_value value{};
    return bpf_map_lookup_elem(bpf_map__fd(skel_->maps.probes), &key, &value) == 0;
  }
  int set_limiter(const LimiterSetup& l) {
    uint32_t id = kUplinkId;
    uplink_record record{};
    record.icmp_limit_interval_ns = l.interval_ns;
    record.icmp_limit_burst = l.burst;
    return bpf_map_update_elem(bpf_map__fd(skel_->maps.uplinks), &id, &record, BPF_ANY);
  }

  RunResult run(const Bytes& packet) {
    RunResult r;
    xdp_md ctx_in{};
    ctx_in.data_end = static_cast<uint32_t>(packet.size());
    ctx_in.ingress_ifindex = if_nametoindex("lo");
    xdp_md ctx_out{};
    TestRun run = test_run_once(bpf_program__fd(skel_->progs.uplink_ingress), packet, ctx_in, &ctx_out);
    r.err = run.err;
    r.verdict = run.retval;
    // The kernel copies data_out from data_meta and reports data relative to it.
    r.meta_len = ctx_out.data - ctx_out.data_meta;
    r.data_out = std::move(run.data_out);
    return r;
  }

  std::vector<probe_reply_event> drain_events() {
    events_.clear();
    ring_buffer__consume(ring_);
    return events_;
  }

  uplink_counters counters() {
    const int cpus = libbpf_num_possible_cpus();
    std::vector<uplink_counters> per_cpu(static_cast<size_t>(cpus));
    uint32_t id = kUplinkId;
    uplink_counters sum{};
    if (bpf_map_lookup_elem(bpf_map__fd(skel_->maps.uplink_counters), &id, per_cpu.data()) != 0) {
      return sum;
    }
    for (const auto& c : per_cpu) {
      sum.probe_replies += c.probe_replies;
      sum.nonce_mismatch += c.nonce_mismatch;
      sum.ringbuf_full += c.ringbuf_full;
      sum.icmp_passed += c.icmp_passed;
      sum.icmp_dropped += c.icmp_dropped;
      sum.probe_replies_exempted += c.probe_replies_exempted;
    }
    return sum;
  }

  uplink_ingress* skel() { return skel_; }

 private:
  static int on_event(void* self, void* data, size_t size) {
    probe_reply_event event{};
    std::memcpy(&event, data, std::min(size, sizeof event));
    static_cast<IngressProgram*>(self)->events_.push_back(event);
    return 0;
  }

  uplink_ingress* skel_ = nullptr;
  ring_buffer* ring_ = nullptr;
  int load_err_ = -1;
  std::vector<probe_reply_event> events_;
};

// Whether this kernel's XDP test run hands back the metadata area (ctx_out data - data_meta, and
// data_out starting at data_meta). Asked once, of a four-instruction program that only reserves
// 8 bytes of metadata, so a broken uplink_ingress cannot switch the rows' metadata checks off.
bool KernelReportsXdpMeta() {
  static const bool reported = [] {
    const int fd = uplinkd::datapath::load_xdp_meta_probe();
    if (fd < 0) {
      return false;
    }
    const Bytes packet = reply_v4();
    xdp_md ctx_in{}, ctx_out{};
    ctx_in.data_end = static_cast<uint32_t>(packet.size());
    const TestRun run = test_run_once(fd, packet, ctx_in, &ctx_out, 64);
    close(fd);
    return run.err == 0 && ctx_out.data - ctx_out.data_meta == 8 && run.data_out.size() == packet.size() + 8;
  }();
  return reported;
}

std::string hex(const uint8_t* p, size_t n) {
  static const char* digits = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; i++) {
    s += digits[p[i] >> 4];
    s += digits[p[i] & 15];
  }
  return s;
}

std::string key_text(const probe_key& k) {
  return "{addr " + hex(k.addr, 16) + " uplink " + std::to_string(k.uplink_id) + " kind " +
         std::to_string(k.kind) + " ident " + std::to_string(k.ident) + " seq " + std::to_string(k.seq) + "}";
}

bool same_key(const probe_key& a, const probe_key& b) { return std::memcmp(&a, &b, sizeof a) == 0; }

class UplinkIngressTest : public ::testing::TestWithParam<Case> {};

TEST_P(UplinkIngressTest, Fixture) {
  const Case& c = GetParam();
  SCOPED_TRACE(c.description);
  IngressProgram prog(c.l3_only);
  ASSERT_TRUE(prog.ok()) << "loading uplink_ingress: " << strerror(-prog.load_err()) << " (run as root)";

  const uint64_t sent_ns = monotonic_ns() - kProbeAgeNs;
  for (const ProbeSetup& p : c.probes) {
    ASSERT_EQ(prog.insert_probe(p.key, p.nonce, sent_ns), 0);
  }
  if (c.limiter) {
    ASSERT_EQ(prog.set_limiter(*c.limiter), 0);
  }
  const bool check_meta = KernelReportsXdpMeta();

  std::vector<probe_reply_event> events;
  for (size_t i = 0; i < c.steps.size(); i++) {
    SCOPED_TRACE("step " + std::to_string(i));
    const Step& step = c.steps[i];
    RunResult r = prog.run(step.packet);
    ASSERT_EQ(r.err, 0) << strerror(errno);
    EXPECT_EQ(r.verdict, static_cast<uint32_t>(step.verdict));
    if (check_meta) {
      if (step.meta) {
        ASSERT_EQ(r.meta_len, sizeof(probe_reply_meta));
        probe_reply_meta meta{};
        std::memcpy(&meta, r.data_out.data(), sizeof meta);
        EXPECT_EQ(meta.magic, UPLINKD_META_MAGIC);
        EXPECT_EQ(meta.uplink_id, kUplinkId);
      } else {
        EXPECT_EQ(r.meta_len, 0u);
      }
    }
    // Never rewritten: whatever passes is the input, byte for byte, behind the metadata.
    if (step.verdict == XDP_PASS && r.meta_len <= r.data_out.size()) {
      Bytes out(r.data_out.begin() + r.meta_len, r.data_out.end());
      EXPECT_EQ(out, step.packet);
    }
    for (const auto& e : prog.drain_events()) {
      events.push_back(e);
    }
  }

  ASSERT_EQ(events.size(), c.events.size());
  const uint32_t lo = if_nametoindex("lo");
  for (size_t i = 0; i < events.size(); i++) {
    const probe_reply_event& e = events[i];
    EXPECT_TRUE(same_key(e.key, c.events[i])) << key_text(e.key) << " != " << key_text(c.events[i]);
    EXPECT_EQ(e.sent_ns, sent_ns);
    EXPECT_GE(e.rtt_ns, kProbeAgeNs);
    EXPECT_LT(e.rtt_ns, 60 * kSecondNs);
    EXPECT_EQ(e.ifindex, lo);
    EXPECT_EQ(e.pad, 0u);
  }
  for (const ProbeSetup& p : c.probes) {
    const bool reported =
        std::any_of(c.events.begin(), c.events.end(), [&](const probe_key& k) { return same_key(k, p.key); });
    EXPECT_EQ(prog.has_probe(p.key), !reported) << key_text(p.key);
  }

  const uplink_counters got = prog.counters();
  EXPECT_EQ(got.probe_replies, c.counters.probe_replies);
  EXPECT_EQ(got.nonce_mismatch, c.counters.nonce_mismatch);
  EXPECT_EQ(got.ringbuf_full, c.counters.ringbuf_full);
  EXPECT_EQ(got.icmp_passed, c.counters.icmp_passed);
  EXPECT_EQ(got.icmp_dropped, c.counters.icmp_dropped);
  EXPECT_EQ(got.probe_replies_exempted, c.counters.probe_replies_exempted);
}

INSTANTIATE_TEST_SUITE_P(Rows, UplinkIngressTest, ::testing::ValuesIn(AllCases()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return std::string(info.param.name);
                         });

// ---- properties outside the rows --------------------------------------------------------------

TEST(UplinkIngressProgram, TestRunReportsMetadata) {
  if (!KernelReportsXdpMeta()) {
    GTEST_SKIP() << "this kernel's BPF_PROG_TEST_RUN for XDP does not return the metadata area "
                    "(ctx_out data - data_meta); the rows cannot check the tag";
  }
  SUCCEED();
}

TEST(UplinkIngressProgram, MapsMatchTheAbi) {
  IngressProgram prog(false);
  ASSERT_TRUE(prog.ok());
  struct Expected {
    bpf_map* map;
    const char* name;
    bpf_map_type type;
    uint32_t max_entries;
    uint32_t value_size;
  };
  const Expected maps[] = {
      {prog.skel()->maps.uplinks, UPLINKD_MAP_UPLINKS, BPF_MAP_TYPE_ARRAY, UPLINKD_MAX_UPLINKS,
       sizeof(uplink_record)},
      {prog.skel()->maps.probes, UPLINKD_MAP_PROBES, BPF_MAP_TYPE_HASH, UPLINKD_MAX_PROBES,
       sizeof(probe_value)},
      {prog.skel()->maps.probe_events, UPLINKD_MAP_PROBE_EVENTS, BPF_MAP_TYPE_RINGBUF, UPLINKD_RINGBUF_BYTES,
       0},
      {prog.skel()->maps.uplink_counters, UPLINKD_MAP_COUNTERS, BPF_MAP_TYPE_PERCPU_ARRAY,
       UPLINKD_MAX_UPLINKS, sizeof(uplink_counters)},
      {prog.skel()->maps.icmp_limiter, UPLINKD_MAP_ICMP_LIMITER, BPF_MAP_TYPE_ARRAY, UPLINKD_MAX_UPLINKS,
       sizeof(icmp_limiter_state)},
  };
  for (const Expected& m : maps) {
    SCOPED_TRACE(m.name);
    EXPECT_STREQ(bpf_map__name(m.map), m.name);
    EXPECT_EQ(bpf_map__type(m.map), m.type);
    EXPECT_EQ(bpf_map__max_entries(m.map), m.max_entries);
    EXPECT_EQ(bpf_map__value_size(m.map), m.value_size);
    EXPECT_EQ(bpf_map__pin_path(m.map), nullptr) << "maps carry no pinning attribute";
  }
  EXPECT_EQ(bpf_map__key_size(prog.skel()->maps.probes), sizeof(probe_key));
}

// The limiter's state is shared by every CPU: under a real multi-CPU flood it must still admit
// exactly its budget. The interval is long enough that nothing refills during the test, so the
// budget is the burst. A read-modify-write without atomics admits more here.
TEST(UplinkIngressProgram, LimiterBudgetHoldsAcrossCpus) {
  const int cpus = std::min(4, static_cast<int>(std::thread::hardware_concurrency()));
  if (cpus < 2) {
    GTEST_SKIP() << "needs two CPUs to race";
  }
  // Contention only happens while budget is left, so the budget is large and spent by all CPUs at once.
  constexpr uint32_t kBurst = 100000;
  constexpr uint32_t kPerCpu = 100000;
  IngressProgram prog(false);
  ASSERT_TRUE(prog.ok());
  ASSERT_EQ(prog.set_limiter({600 * kSecondNs, kBurst}), 0);
  const Bytes packet = request_v4();
  const int fd = bpf_program__fd(prog.skel()->progs.uplink_ingress);

  std::vector<std::thread> threads;
  threads.reserve(static_cast<size_t>(cpus));
  std::vector<int> errors(static_cast<size_t>(cpus), 0);
  std::atomic<int> ready{0};
  for (int cpu = 0; cpu < cpus; cpu++) {
    threads.emplace_back([&, cpu] {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(cpu, &set);
      pthread_setaffinity_np(pthread_self(), sizeof set, &set);
      ready.fetch_add(1);
      while (ready.load() < cpus) {
      }
      bpf_test_run_opts opts{};
      opts.sz = sizeof opts;
      opts.data_in = packet.data();
      opts.data_size_in = static_cast<uint32_t>(packet.size());
      opts.repeat = kPerCpu;
      errors[static_cast<size_t>(cpu)] = bpf_prog_test_run_opts(fd, &opts);
    });
  }
  for (auto& t : threads) {
    t.join();
  }
  for (int err : errors) {
    ASSERT_EQ(err, 0);
  }

  const uplink_counters got = prog.counters();
  EXPECT_EQ(got.icmp_passed, kBurst);
  EXPECT_EQ(got.icmp_dropped, static_cast<uint64_t>(cpus) * kPerCpu - kBurst);
}

// Kernels on architectures without efficient unaligned access (MIPS OpenWrt routers) check every
// packet load against NET_IP_ALIGN; BPF_F_STRICT_ALIGNMENT applies the same check here.
TEST(UplinkIngressProgram, LoadsUnderStrictAlignment) {
  for (uint32_t l3_only : {0u, 1u}) {
    SCOPED_TRACE("l3_only " + std::to_string(l3_only));
    uplink_ingress* skel = uplink_ingress__open();
    ASSERT_NE(skel, nullptr);
    skel->rodata->uplink_id = kUplinkId;
    skel->rodata->l3_only = l3_only;
    skel->rodata->tag_replies = uplinkd::datapath::xdp_metadata_supported() ? 1 : 0;
    bpf_program__set_flags(skel->progs.uplink_ingress,
                           bpf_program__flags(skel->progs.uplink_ingress) | BPF_F_STRICT_ALIGNMENT);
    EXPECT_EQ(uplink_ingress__load(skel), 0) << "the verifier log above names the misaligned access";
    uplink_ingress__destroy(skel);
  }
}

// A kernel that refuses bpf_xdp_adjust_meta must still get the program: with tag_replies 0 the call
// is pruned before the verifier checks it. Holds on every kernel, so it is checked on every kernel.
TEST(UplinkIngressProgram, LoadsWithReplyTaggingOff) {
  uplink_ingress* skel = uplink_ingress__open();
  ASSERT_NE(skel, nullptr);
  skel->rodata->uplink_id = kUplinkId;
  skel->rodata->tag_replies = 0;
  EXPECT_EQ(uplink_ingress__load(skel), 0) << "the verifier log above names the refused instruction";
  uplink_ingress__destroy(skel);
}

// The loader's probe agrees with the kernel: tagging on loads exactly where the probe says so.
TEST(UplinkIngressProgram, MetadataProbeAgreesWithTheKernel) {
  uplink_ingress* skel = uplink_ingress__open();
  ASSERT_NE(skel, nullptr);
  skel->rodata->uplink_id = kUplinkId;
  skel->rodata->tag_replies = 1;
  libbpf_print_fn_t old = libbpf_set_print(nullptr);  // a refusal's verifier log is expected here
  const int err = uplink_ingress__load(skel);
  libbpf_set_print(old);
  EXPECT_EQ(err == 0, uplinkd::datapath::xdp_metadata_supported()) << "load: " << strerror(-err);
  uplink_ingress__destroy(skel);
}

}  // namespace
