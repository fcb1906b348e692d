// Packet builders for the BPF_PROG_TEST_RUN fixtures and the veth tests: Ethernet (with VLAN
// tags), IPv4 (options, fragments), IPv6 (extension headers), ICMP/ICMPv6, TCP, UDP, DNS and ARP,
// every checksum filled in. Inside out: an L4 builder returns its header and payload with a zero
// checksum, the IP builder fills in every checksum, the Ethernet builder adds the link layer.
// Header-only (inline) so each test file of the one bpf_tests binary can include it.
#pragma once

#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <netinet/in.h>
#include <time.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "maps/uplinkd_maps.h"

namespace uplinkd::bpftest {

using Bytes = std::vector<uint8_t>;

struct Mac {
  uint8_t bytes[6];
};
constexpr Mac kUplinkMac{{0x02, 0x00, 0x00, 0x00, 0x00, 0x01}};
constexpr Mac kGatewayMac{{0x02, 0x00, 0x00, 0x00, 0x00, 0xfe}};

struct VlanTag {
  uint16_t tpid;  // ETH_P_8021Q or ETH_P_8021AD
  uint16_t vid;
};

struct Ipv4Options {
  uint8_t version = 4;
  uint8_t ihl = 5;                       // > 5 adds NOP options
  uint16_t frag_off = 0;                 // host order: flags and offset
  std::optional<uint16_t> total_length;  // default: header + L4
  bool l4_checksum = true;               // false: the payload is sent as given (a later fragment)
};

inline void put16(Bytes& b, uint16_t v) {
  b.push_back(static_cast<uint8_t>(v >> 8));
  b.push_back(static_cast<uint8_t>(v));
}

inline void put32(Bytes& b, uint32_t v) {
  put16(b, static_cast<uint16_t>(v >> 16));
  put16(b, static_cast<uint16_t>(v));
}

inline void write16(Bytes& b, size_t at, uint16_t v) {
  b[at] = static_cast<uint8_t>(v >> 8);
  b[at + 1] = static_cast<uint8_t>(v);
}

inline Bytes concat(Bytes head, const Bytes& tail) {
  head.insert(head.end(), tail.begin(), tail.end());
  return head;
}

namespace detail {

inline uint32_t sum16(const uint8_t* p, size_t n, uint32_t sum) {
  for (size_t i = 0; i + 1 < n; i += 2) {
    sum += static_cast<uint32_t>(p[i] << 8 | p[i + 1]);
  }
  if (n % 2 != 0) {
    sum += static_cast<uint32_t>(p[n - 1] << 8);
  }
  return sum;
}

inline uint16_t fold(uint32_t sum) {
  while (sum >> 16) {
    sum = (sum & 0xffff) + (sum >> 16);
  }
  return static_cast<uint16_t>(~sum);
}

inline std::optional<size_t> checksum_offset(uint8_t proto) {
  switch (proto) {
    case IPPROTO_ICMP:
    case IPPROTO_ICMPV6:
      return 2;
    case IPPROTO_TCP:
      return 16;
    case IPPROTO_UDP:
      return 6;
    default:
      return std::nullopt;
  }
}

inline void fill_l4_checksum(Bytes& l4, uint8_t proto, uint32_t pseudo_sum) {
  auto at = checksum_offset(proto);
  if (!at || l4.size() < *at + 2) {
    return;
  }
  write16(l4, *at, 0);
  uint16_t csum = fold(sum16(l4.data(), l4.size(), pseudo_sum));
  if (proto == IPPROTO_UDP && csum == 0) {
    csum = 0xffff;
  }
  write16(l4, *at, csum);
}

template <size_t N>
inline void parse_address(int family, const char* text, uint8_t (&out)[N]) {
  if (inet_pton(family, text, out) != 1) {
    throw std::invalid_argument(std::string("bad address ") + text);
  }
}

}  // namespace detail

inline Bytes ethernet(uint16_t ethertype, const Bytes& payload, const std::vector<VlanTag>& tags = {},
                      Mac dst = kUplinkMac, Mac src = kGatewayMac) {
  // memcpy rather than vector::insert: GCC 12 warns falsely (-Warray-bounds) about the inlined insert.
  Bytes frame(12);
  std::memcpy(frame.data(), dst.bytes, 6);
  std::memcpy(frame.data() + 6, src.bytes, 6);
  for (const VlanTag& tag : tags) {
    put16(frame, tag.tpid);
    put16(frame, tag.vid);
  }
  put16(frame, ethertype);
  return concat(std::move(frame), payload);
}

inline Bytes ipv4(const char* src, const char* dst, uint8_t proto, Bytes l4, const Ipv4Options& o = {}) {
  uint8_t s[4], d[4];
  detail::parse_address(AF_INET, src, s);
  detail::parse_address(AF_INET, dst, d);
  // A header that claims ihl < 5 still occupies the fixed 20 bytes on the wire.
  const size_t header_len = o.ihl > 5 ? o.ihl * 4u : 20u;
  Bytes h(header_len, 0x01 /* NOP option */);
  h[0] = static_cast<uint8_t>(o.version << 4 | (o.ihl & 0x0f));
  h[1] = 0;
  write16(h, 2, o.total_length.value_or(static_cast<uint16_t>(header_len + l4.size())));
  write16(h, 4, 0x1234);
  write16(h, 6, o.frag_off);
  h[8] = 64;
  h[9] = proto;
  write16(h, 10, 0);
  std::memcpy(&h[12], s, 4);
  std::memcpy(&h[16], d, 4);
  write16(h, 10, detail::fold(detail::sum16(h.data(), h.size(), 0)));

  uint32_t pseudo = detail::sum16(s, 4, 0);
  pseudo = detail::sum16(d, 4, pseudo);
  pseudo += proto + static_cast<uint32_t>(l4.size());
  if (o.l4_checksum) {
    detail::fill_l4_checksum(l4, proto, proto == IPPROTO_ICMP ? 0 : pseudo);
  }
  return concat(std::move(h), l4);
}

inline Bytes ipv6(const char* src, const char* dst, uint8_t next_header, Bytes l4) {
  uint8_t s[16], d[16];
  detail::parse_address(AF_INET6, src, s);
  detail::parse_address(AF_INET6, dst, d);
  Bytes h;
  put32(h, 6u << 28);
  put16(h, static_cast<uint16_t>(l4.size()));
  h.push_back(next_header);
  h.push_back(64);
  h.insert(h.end(), s, s + 16);
  h.insert(h.end(), d, d + 16);

  uint32_t pseudo = detail::sum16(s, 16, 0);
  pseudo = detail::sum16(d, 16, pseudo);
  pseudo += static_cast<uint32_t>(l4.size()) + next_header;
  detail::fill_l4_checksum(l4, next_header, pseudo);
  return concat(std::move(h), l4);
}

// An IPv6 extension header: its type and the bytes after its next-header field. The builder
// chains the next-header fields and pads nothing: hop-by-hop, routing and destination options
// bodies must be 8n - 1 bytes long, a fragment header's 7.
struct Ipv6Ext {
  uint8_t type;
  Bytes body;
};

// Hop-by-hop options holding one PadN option: the smallest valid one.
inline Ipv6Ext ipv6_hop_by_hop() { return Ipv6Ext{0, Bytes{0, 1, 4, 0, 0, 0, 0}}; }

// A fragment header: offset in 8-byte units, M flag, identification.
inline Ipv6Ext ipv6_fragment(uint16_t offset_units, bool more, uint32_t id) {
  Bytes body{0};
  put16(body, static_cast<uint16_t>(offset_units << 3 | (more ? 1 : 0)));
  put32(body, id);
  return Ipv6Ext{44, body};
}

// upper: the upper-layer datagram's protocol; its checksum is computed over `l4` whole (for a
// fragment, pass the whole datagram as l4 and cut it with ipv6_fragments instead).
inline Bytes ipv6_ext(const char* src, const char* dst, const std::vector<Ipv6Ext>& ext, uint8_t upper,
                      Bytes l4) {
  uint8_t s[16], d[16];
  detail::parse_address(AF_INET6, src, s);
  detail::parse_address(AF_INET6, dst, d);
  uint32_t pseudo = detail::sum16(s, 16, 0);
  pseudo = detail::sum16(d, 16, pseudo);
  pseudo += static_cast<uint32_t>(l4.size()) + upper;
  detail::fill_l4_checksum(l4, upper, pseudo);
  Bytes chain;
  for (size_t i = 0; i < ext.size(); i++) {
    chain.push_back(i + 1 < ext.size() ? ext[i + 1].type : upper);
    chain.insert(chain.end(), ext[i].body.begin(), ext[i].body.end());
  }
  Bytes h;
  put32(h, 6u << 28);
  put16(h, static_cast<uint16_t>(chain.size() + l4.size()));
  h.push_back(ext.empty() ? upper : ext[0].type);
  h.push_back(64);
  h.insert(h.end(), s, s + 16);
  h.insert(h.end(), d, d + 16);
  return concat(concat(std::move(h), chain), l4);
}

// An IPv4 packet from ipv4() with another identification (header checksum made again).
inline Bytes ipv4_with_id(Bytes packet, uint16_t id) {
  write16(packet, 4, id);
  write16(packet, 10, 0);
  const size_t header_len = static_cast<size_t>(packet[0] & 0x0f) * 4;
  write16(packet, 10, detail::fold(detail::sum16(packet.data(), header_len, 0)));
  return packet;
}

namespace detail {

// The L4 checksum of a whole datagram, filled in before it is cut into fragments.
inline void checksum_datagram(int family, const char* src, const char* dst, uint8_t proto, Bytes& l4) {
  const size_t len = family == AF_INET ? 4 : 16;
  uint8_t s[16], d[16];
  parse_address(family, src, s);
  parse_address(family, dst, d);
  uint32_t pseudo = sum16(s, len, 0);
  pseudo = sum16(d, len, pseudo);
  pseudo += proto + static_cast<uint32_t>(l4.size());
  fill_l4_checksum(l4, proto, pseudo);
}

// A piece length that leaves everything after the first piece in one.
inline constexpr size_t kRestInOnePiece = SIZE_MAX & ~size_t{7};

// `l4` cut after `first_len` bytes and then every `piece_len` bytes (multiples of 8: fragment
// offsets count 8-byte units); the last piece takes the rest.
inline std::vector<Bytes> cut(const Bytes& l4, size_t first_len, size_t piece_len) {
  if (first_len == 0 || first_len % 8 != 0 || piece_len == 0 || piece_len % 8 != 0) {
    throw std::invalid_argument("fragment pieces are a non-zero multiple of 8 bytes");
  }
  std::vector<Bytes> pieces;
  for (size_t at = 0, len = first_len; at < l4.size(); at += len, len = piece_len) {
    const size_t take = std::min(len, l4.size() - at);
    pieces.emplace_back(l4.begin() + static_cast<std::ptrdiff_t>(at),
                        l4.begin() + static_cast<std::ptrdiff_t>(at + take));
  }
  return pieces;
}

// Each piece in an IPv4 packet with identification `id`, offsets and MF as the cut says.
inline std::vector<Bytes> ipv4_pieces(const char* src, const char* dst, uint8_t proto,
                                      const std::vector<Bytes>& pieces, uint16_t id) {
  std::vector<Bytes> out;
  size_t offset = 0;
  for (size_t i = 0; i < pieces.size(); i++) {
    const bool more = i + 1 < pieces.size();
    const auto frag_off = static_cast<uint16_t>((more ? 0x2000 : 0) | offset / 8);
    out.push_back(
        ipv4_with_id(ipv4(src, dst, proto, pieces[i], {.frag_off = frag_off, .l4_checksum = false}), id));
    offset += pieces[i].size();
  }
  return out;
}

// Each piece behind an IPv6 fragment header (identification `id`).
inline std::vector<Bytes> ipv6_pieces(const char* src, const char* dst, uint8_t proto,
                                      const std::vector<Bytes>& pieces, uint32_t id) {
  std::vector<Bytes> out;
  size_t offset = 0;
  for (size_t i = 0; i < pieces.size(); i++) {
    const bool more = i + 1 < pieces.size();
    // proto 59 (no next header) keeps ipv6_ext from touching the already checksummed piece.
    Bytes b = ipv6_ext(src, dst, {ipv6_fragment(static_cast<uint16_t>(offset / 8), more, id)}, 59, pieces[i]);
    b[40] = proto;  // the fragment header's next header: the datagram's protocol
    out.push_back(std::move(b));
    offset += pieces[i].size();
  }
  return out;
}

}  // namespace detail

// A datagram (checksummed whole) cut into two IPv4 fragments: the first `first_len` bytes (a
// multiple of 8), then the rest. Both carry ipv4()'s identification.
inline std::vector<Bytes> ipv4_fragments(const char* src, const char* dst, uint8_t proto, Bytes l4,
                                         size_t first_len) {
  detail::checksum_datagram(AF_INET, src, dst, proto, l4);
  return detail::ipv4_pieces(src, dst, proto, detail::cut(l4, first_len, detail::kRestInOnePiece), 0x1234);
}

// The same for IPv6: fragment headers (identification `id`) in front of each piece.
inline std::vector<Bytes> ipv6_fragments(const char* src, const char* dst, uint8_t proto, Bytes l4,
                                         size_t first_len, uint32_t id) {
  detail::checksum_datagram(AF_INET6, src, dst, proto, l4);
  return detail::ipv6_pieces(src, dst, proto, detail::cut(l4, first_len, detail::kRestInOnePiece), id);
}

// A datagram (checksummed whole) cut into as many IPv4 fragments of `piece_len` bytes (a multiple
// of 8; the last takes the rest) as it takes, all with identification `id`.
inline std::vector<Bytes> ipv4_fragment_train(const char* src, const char* dst, uint8_t proto, Bytes l4,
                                              size_t piece_len, uint16_t id) {
  detail::checksum_datagram(AF_INET, src, dst, proto, l4);
  return detail::ipv4_pieces(src, dst, proto, detail::cut(l4, piece_len, piece_len), id);
}

// The same for IPv6.
inline std::vector<Bytes> ipv6_fragment_train(const char* src, const char* dst, uint8_t proto, Bytes l4,
                                              size_t piece_len, uint32_t id) {
  detail::checksum_datagram(AF_INET6, src, dst, proto, l4);
  return detail::ipv6_pieces(src, dst, proto, detail::cut(l4, piece_len, piece_len), id);
}

// type: 0 echo reply / 8 request (ICMP), 129 reply / 128 request (ICMPv6).
inline Bytes icmp_echo(uint8_t type, uint16_t id, uint16_t seq, const Bytes& payload) {
  Bytes b{type, 0, 0, 0};
  put16(b, id);
  put16(b, seq);
  return concat(std::move(b), payload);
}

// An ICMP/ICMPv6 message with just a type and 4 zero bytes of body (e.g. neighbour discovery).
inline Bytes icmp_message(uint8_t type, size_t body_len = 4) {
  Bytes b{type, 0, 0, 0};
  b.resize(4 + body_len, 0);
  return b;
}

// The daemon writes the nonce's bytes as they lie in its memory, then pads the payload.
inline Bytes nonce_payload(uint64_t nonce, size_t total_len = 16) {
  Bytes b(total_len, 0xa5);
  std::memcpy(b.data(), &nonce, std::min(total_len, sizeof nonce));
  return b;
}

constexpr uint8_t kTcpSyn = 0x02, kTcpRst = 0x04, kTcpAck = 0x10;

inline Bytes tcp(uint16_t sport, uint16_t dport, uint32_t seq, uint32_t ack, uint8_t flags) {
  Bytes b;
  put16(b, sport);
  put16(b, dport);
  put32(b, seq);
  put32(b, ack);
  b.push_back(5 << 4);
  b.push_back(flags);
  put16(b, 65535);
  put16(b, 0);
  put16(b, 0);
  return b;
}

constexpr uint8_t kTcpFin = 0x01, kTcpPsh = 0x08;

// A TCP segment beyond tcp(): options (padded with NOPs to a multiple of 4 bytes), a payload, and a
// data offset that may lie (doff set: the header claims that many 32-bit words whatever follows).
struct TcpSegment {
  Bytes options;
  Bytes payload;
  std::optional<uint8_t> doff;
  uint16_t window = 65535;
};

inline Bytes tcp_segment(uint16_t sport, uint16_t dport, uint32_t seq, uint32_t ack, uint8_t flags,
                         const TcpSegment& s) {
  Bytes options = s.options;
  while (options.size() % 4 != 0) {
    options.push_back(0x01);  // NOP
  }
  Bytes b;
  put16(b, sport);
  put16(b, dport);
  put32(b, seq);
  put32(b, ack);
  b.push_back(static_cast<uint8_t>(s.doff.value_or(static_cast<uint8_t>(5 + options.size() / 4)) << 4));
  b.push_back(flags);
  put16(b, s.window);
  put16(b, 0);
  put16(b, 0);
  return concat(concat(std::move(b), options), s.payload);
}

// The TCP timestamps option (kind 8) as Linux sends it on every segment, with two NOPs in front.
inline Bytes tcp_timestamps(uint32_t value, uint32_t echo) {
  Bytes b{0x01, 0x01, 8, 10};
  put32(b, value);
  put32(b, echo);
  return b;
}

// The TCP MSS option (kind 2, length 4) as SYN and SYN-ACK carry it.
inline Bytes tcp_mss_option(uint16_t mss) {
  Bytes b{2, 4};
  put16(b, mss);
  return b;
}

inline Bytes udp(uint16_t sport, uint16_t dport, const Bytes& payload) {
  Bytes b;
  put16(b, sport);
  put16(b, dport);
  put16(b, static_cast<uint16_t>(8 + payload.size()));
  put16(b, 0);
  return concat(std::move(b), payload);
}

inline Bytes dns_header(uint16_t id, bool response) {
  Bytes b;
  put16(b, id);
  put16(b, response ? 0x8180 : 0x0100);
  put16(b, 1);  // one question
  put16(b, response ? 1 : 0);
  put16(b, 0);
  put16(b, 0);
  return b;
}

inline Bytes arp_ipv4(uint16_t op, Mac sender_mac, const char* sender_ip, Mac target_mac,
                      const char* target_ip) {
  uint8_t sip[4], tip[4];
  detail::parse_address(AF_INET, sender_ip, sip);
  detail::parse_address(AF_INET, target_ip, tip);
  Bytes b;
  put16(b, 1);  // Ethernet
  put16(b, ETH_P_IP);
  b.push_back(6);
  b.push_back(4);
  put16(b, op);
  b.insert(b.end(), sender_mac.bytes, sender_mac.bytes + 6);
  b.insert(b.end(), sip, sip + 4);
  b.insert(b.end(), target_mac.bytes, target_mac.bytes + 6);
  b.insert(b.end(), tip, tip + 4);
  return b;
}

inline Bytes truncated(Bytes b, size_t len) {
  b.resize(std::min(len, b.size()));
  return b;
}

inline probe_key make_probe_key(uint16_t uplink_id, const char* addr, uint8_t kind, uint16_t ident,
                                uint16_t seq) {
  probe_key k{};
  if (std::strchr(addr, ':') != nullptr) {
    detail::parse_address(AF_INET6, addr, k.addr);
  } else {
    uint8_t v4[4];
    detail::parse_address(AF_INET, addr, v4);
    std::memcpy(k.addr, v4, 4);
  }
  k.uplink_id = uplink_id;
  k.kind = kind;
  k.ident = ident;
  k.seq = seq;
  return k;
}

// An ICMP echo reply frame from plain parameters (the veth marker tests).
inline Bytes icmp_echo_reply_frame(const uint8_t (&dst_mac)[6], const uint8_t (&src_mac)[6], const char* src,
                                   const char* dst, uint16_t id, uint16_t seq, uint64_t nonce) {
  Mac to{}, from{};
  std::memcpy(to.bytes, dst_mac, 6);
  std::memcpy(from.bytes, src_mac, 6);
  return ethernet(ETH_P_IP, ipv4(src, dst, IPPROTO_ICMP, icmp_echo(0, id, seq, nonce_payload(nonce))), {}, to,
                  from);
}

inline uint64_t monotonic_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// The clock bpf_ktime_get_coarse_ns() reads (CLOCK_MONOTONIC as of the last tick): a stamp the
// program takes after this call is never below it, which monotonic_ns() does not promise.
inline uint64_t monotonic_coarse_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// ---- independent checksum checks ---------------------------------------------------------------

// The one's-complement sum of n bytes as 16-bit big-endian words (an odd last byte padded), added to
// `sum`, unfolded; a header or segment whose checksum holds folds to 0xffff with its pseudo header.
inline uint32_t sum_words(const uint8_t* p, size_t n, uint32_t sum = 0) {
  for (size_t i = 0; i + 1 < n; i += 2) sum += static_cast<uint32_t>(p[i] << 8 | p[i + 1]);
  if (n % 2 != 0) sum += static_cast<uint32_t>(p[n - 1] << 8);
  return sum;
}

inline uint16_t folded(uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(sum);
}

}  // namespace uplinkd::bpftest
