// ProbeTransport in the netns lab. The router's main table has no default route: a probe
// reaches 203.0.113.1 / 2001:db8:ff::1 only through table 1, which the rule
// `fwmark 0x100/0x3f00 lookup 1` opens to packets carrying the uplink's mark. Every probe is
// captured on the isp side of the veth and checked byte by byte, checksums recomputed here.
#include "health/probe_transport.h"

#include <net/if.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "netlink/uplink_routes.h"
#include "netns_fixture.h"

namespace uplinkd::health {
namespace {

using uplinkd::testing::Frame;
using uplinkd::testing::NetnsTest;
using uplinkd::testing::PacketCapture;

constexpr uint32_t kMark = 0x100;
constexpr uint32_t kMask = 0x3f00;
constexpr uint32_t kTable = 1;
constexpr uint32_t kPref = 2001;
constexpr int kTtl = 17;  // not a default, so a captured TTL of 17 is ours

constexpr uint16_t kEthernetIpv4 = 0x0800;
constexpr uint16_t kEthernetIpv6 = 0x86dd;
constexpr uint16_t kEthernetArp = 0x0806;
constexpr size_t kEthernetHeader = 14;

IpAddress address(const char* text) { return *IpAddress::parse(text); }

std::vector<uint8_t> v4_bytes(const char* text) {
  IpAddress parsed = address(text);
  return {parsed.bytes.begin(), parsed.bytes.begin() + 4};
}

uint16_t be16(const uint8_t* at) { return static_cast<uint16_t>(at[0] << 8 | at[1]); }
uint32_t be32(const uint8_t* at) { return uint32_t{be16(at)} << 16 | be16(at + 2); }

// An IP packet from a captured frame (no IPv6 extension headers: probes carry none).
struct IpPacket {
  IpAddress source;
  IpAddress destination;
  uint8_t protocol = 0;
  uint8_t hop_limit = 0;
  std::vector<uint8_t> payload;  // the ICMP / TCP / UDP message
};

std::optional<IpPacket> parse_ip(const Frame& frame) {
  const std::vector<uint8_t>& b = frame.bytes;
  IpPacket packet;
  if (frame.ethertype() == kEthernetIpv4 && b.size() >= kEthernetHeader + 20) {
    const uint8_t* ip = &b[kEthernetHeader];
    size_t header = size_t{ip[0] & 0x0fu} * 4;
    size_t total = be16(ip + 2);
    if (total < header || kEthernetHeader + total > b.size()) {
      return std::nullopt;
    }
    packet.source.family = packet.destination.family = AF_INET;
    std::memcpy(packet.source.bytes.data(), ip + 12, 4);
    std::memcpy(packet.destination.bytes.data(), ip + 16, 4);
    packet.protocol = ip[9];
    packet.hop_limit = ip[8];
    packet.payload.assign(ip + header, ip + total);
    return packet;
  }
  if (frame.ethertype() == kEthernetIpv6 && b.size() >= kEthernetHeader + 40) {
    const uint8_t* ip = &b[kEthernetHeader];
    size_t length = be16(ip + 4);
    if (kEthernetHeader + 40 + length > b.size()) {
      return std::nullopt;
    }
    packet.source.family = packet.destination.family = AF_INET6;
    std::memcpy(packet.source.bytes.data(), ip + 8, 16);
    std::memcpy(packet.destination.bytes.data(), ip + 24, 16);
    packet.protocol = ip[6];
    packet.hop_limit = ip[7];
    packet.payload.assign(ip + 40, ip + 40 + length);
    return packet;
  }
  return std::nullopt;
}

// One's-complement sum over 16-bit words, written independently of the code under test.
uint32_t sum_words(const uint8_t* data, size_t size, uint32_t sum = 0) {
  for (size_t i = 0; i < size; i += 2) {
    sum += (uint32_t{data[i]} << 8) + (i + 1 < size ? data[i + 1] : 0);
  }
  return sum;
}

uint16_t fold(uint32_t sum) {
  while (sum > 0xffff) {
    sum = (sum & 0xffff) + (sum >> 16);
  }
  return static_cast<uint16_t>(sum);
}

// True if the checksum in `packet.payload` is right: the sum over pseudo-header (for TCP,
// UDP, ICMPv6) and message, checksum included, must be all ones.
bool checksum_valid(const IpPacket& packet) {
  uint32_t sum = 0;
  if (packet.protocol != IPPROTO_ICMP) {
    size_t address_size = packet.source.family == AF_INET ? 4 : 16;
    sum = sum_words(packet.source.bytes.data(), address_size, sum);
    sum = sum_words(packet.destination.bytes.data(), address_size, sum);
    sum += packet.protocol;
    sum += static_cast<uint32_t>(packet.payload.size());
  }
  sum = sum_words(packet.payload.data(), packet.payload.size(), sum);
  return fold(sum) == 0xffff;
}

bool incoming(const Frame& frame) { return frame.packet_type != PACKET_OUTGOING; }

std::array<uint8_t, 6> mac_of(const char* device) {
  std::array<uint8_t, 6> mac{};
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ifreq request{};
  std::strncpy(request.ifr_name, device, IFNAMSIZ - 1);
  if (fd >= 0 && ioctl(fd, SIOCGIFHWADDR, &request) == 0) {
    std::memcpy(mac.data(), request.ifr_hwaddr.sa_data, 6);
  }
  if (fd >= 0) {
    close(fd);
  }
  return mac;
}

// A raw socket of the router that reads what the transport never reads, to show that replies
// come back (and so would have piled up in the transport's sockets without their filters).
class ReplyReader {
 public:
  ReplyReader(int family, int protocol) : family_(family) {
    fd_ = socket(family, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, protocol);
  }
  ~ReplyReader() { close_now(); }
  void close_now() {
    if (fd_ >= 0) {
      close(fd_);
    }
    fd_ = -1;
  }
  [[nodiscard]] bool ok() const { return fd_ >= 0; }

  // Counts messages for which `wanted` holds (IPv4 raw sockets deliver the IP header too;
  // IPv6 ones only the message) until `expected` are seen or the time is up.
  int count(const std::function<bool(const uint8_t*, size_t)>& wanted, int expected,
            std::chrono::milliseconds timeout = std::chrono::milliseconds(5000)) {
    int seen = 0;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    std::vector<uint8_t> buffer(65536);
    while (seen < expected) {
      auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) {
        break;
      }
      pollfd readable{fd_, POLLIN, 0};
      if (poll(&readable, 1, static_cast<int>(left.count())) <= 0) {
        continue;
      }
      ssize_t got = recv(fd_, buffer.data(), buffer.size(), 0);
      if (got <= 0) {
        continue;
      }
      size_t skip = family_ == AF_INET ? size_t{buffer[0] & 0x0fu} * 4 : 0;
      if (static_cast<size_t>(got) > skip && wanted(buffer.data() + skip, static_cast<size_t>(got) - skip)) {
        ++seen;
      }
    }
    return seen;
  }

 private:
  int family_;
  int fd_ = -1;
};

// One row of /proc/net/raw or raw6: a raw socket of the namespace.
struct RawSocketRow {
  int protocol = 0;
  unsigned long receive_queue = 0;
};

std::vector<RawSocketRow> raw_sockets(const std::string& netns, const char* table) {
  auto listing = uplinkd::testing::run_command("ip netns exec " + netns + " cat /proc/net/" + table);
  std::istringstream lines(listing.output);
  std::string line;
  std::getline(lines, line);  // column titles
  std::vector<RawSocketRow> rows;
  while (std::getline(lines, line)) {
    std::istringstream fields(line);
    std::vector<std::string> field;
    for (std::string f; fields >> f;) {
      field.push_back(f);
    }
    if (field.size() < 13) {
      continue;
    }
    RawSocketRow row;
    row.protocol = static_cast<int>(std::stoul(field[1].substr(field[1].find(':') + 1), nullptr, 16));
    row.receive_queue = std::stoul(field[4].substr(field[4].find(':') + 1), nullptr, 16);
    rows.push_back(row);
  }
  return rows;
}

class ProbeTransportTest : public NetnsTest {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(NetnsTest::SetUp());
    ASSERT_NO_FATAL_FAILURE(install_uplink_routes());
  }

  void TearDown() override {
    routes_.reset();
    NetnsTest::TearDown();
  }

  // Table 1 (default via the isp) and the fwmark rule, both families, through UplinkRoutes.
  void install_uplink_routes() {
    if (!routes_) {
      routes_ = std::make_unique<netlink::UplinkRoutes>();
    }
    int ifindex = static_cast<int>(if_nametoindex(kUplink));
    std::string error;
    ASSERT_EQ(routes_->install(kTable, ifindex, AF_INET, address(kIspV4), kMark, kMask, kPref, &error), 0)
        << error;
    ASSERT_EQ(routes_->install(kTable, ifindex, AF_INET6, address(kIspV6), kMark, kMask, kPref, &error), 0)
        << error;
  }

  std::unique_ptr<PacketCapture> capture_at_isp() {
    auto capture = std::make_unique<PacketCapture>(isp_ns_, kIspSide);
    EXPECT_TRUE(capture->ok()) << "cannot capture on " << kIspSide << " in " << isp_ns_;
    return capture;
  }

  // The next IP packet of `protocol` from the router to `target` that reaches the isp.
  static std::optional<IpPacket> next_packet(
      PacketCapture& capture, const IpAddress& target, uint8_t protocol,
      const std::function<bool(const IpPacket&)>& also = [](const IpPacket&) { return true; },
      std::chrono::milliseconds timeout = std::chrono::milliseconds(3000)) {
    std::optional<IpPacket> found;
    capture.wait_for(
        [&](const Frame& frame) {
          if (!incoming(frame)) {
            return false;
          }
          std::optional<IpPacket> packet = parse_ip(frame);
          if (!packet || packet->destination != target || packet->protocol != protocol || !also(*packet)) {
            return false;
          }
          found = packet;
          return true;
        },
        timeout);
    return found;
  }

  std::unique_ptr<netlink::UplinkRoutes> routes_;
};

std::function<bool(const uint8_t*, size_t)> echo_reply(int family, uint16_t ident) {
  uint8_t type = family == AF_INET ? 0 : 129;
  return [=](const uint8_t* message, size_t size) {
    return size >= 8 && message[0] == type && be16(message + 4) == ident;
  };
}

// ---- what goes out ----------------------------------------------------------------------

TEST_F(ProbeTransportTest, EchoV4CarriesIdentSeqNonceAndSize) {
  auto capture = capture_at_isp();
  ProbeTransport transport(kUplink, kMark, kTtl);
  const uint64_t nonce = 0x1122334455667788ULL;
  ASSERT_EQ(transport.send_echo(address(kFarV4), 0x1234, 7, nonce, 56), 0);

  std::optional<IpPacket> packet = next_packet(*capture, address(kFarV4), IPPROTO_ICMP);
  ASSERT_TRUE(packet) << "no echo request reached the isp";
  EXPECT_EQ(packet->source, address(kRouterV4));
  EXPECT_EQ(packet->hop_limit, kTtl);
  const std::vector<uint8_t>& icmp = packet->payload;
  ASSERT_EQ(icmp.size(), 8u + 56u);
  EXPECT_EQ(icmp[0], 8);  // echo request
  EXPECT_EQ(icmp[1], 0);
  EXPECT_EQ(be16(&icmp[4]), 0x1234);
  EXPECT_EQ(be16(&icmp[6]), 7);
  uint64_t carried = 0;
  std::memcpy(&carried, &icmp[8], sizeof carried);
  EXPECT_EQ(carried, nonce);
  EXPECT_TRUE(checksum_valid(*packet));
}

TEST_F(ProbeTransportTest, EchoV4ReplyComesBackThroughTheUplink) {
  ReplyReader reader(AF_INET, IPPROTO_ICMP);
  ASSERT_TRUE(reader.ok());
  ProbeTransport transport(kUplink, kMark, kTtl);
  ASSERT_EQ(transport.send_echo(address(kFarV4), 0x4242, 1, 99, 32), 0);
  EXPECT_EQ(reader.count(echo_reply(AF_INET, 0x4242), 1), 1) << "no echo reply from " << kFarV4;
}

// The control case: with a mark no rule knows, the main table has no way to the far address
// (and the isp does not answer ARP for it), so nothing arrives. Proof that the mark routes.
TEST_F(ProbeTransportTest, EchoWithoutTheUplinkMarkIsNotRouted) {
  auto capture = capture_at_isp();
  ProbeTransport transport(kUplink, 0x200, kTtl);
  transport.send_echo(address(kFarV4), 0x5151, 1, 1, 32);  // may be queued for ARP or refused
  EXPECT_FALSE(next_packet(
      *capture, address(kFarV4), IPPROTO_ICMP, [](const IpPacket&) { return true; },
      std::chrono::milliseconds(1000)));
}

TEST_F(ProbeTransportTest, EchoV6CarriesIdentSeqNonceAndValidChecksum) {
  auto capture = capture_at_isp();
  ReplyReader reader(AF_INET6, IPPROTO_ICMPV6);
  ProbeTransport transport(kUplink, kMark, kTtl);
  const uint64_t nonce = 0xa1b2c3d4e5f60718ULL;
  ASSERT_EQ(transport.send_echo(address(kFarV6), 0x6666, 300, nonce, 100), 0);

  std::optional<IpPacket> packet =
      next_packet(*capture, address(kFarV6), IPPROTO_ICMPV6,
                  [](const IpPacket& p) { return !p.payload.empty() && p.payload[0] == 128; });
  ASSERT_TRUE(packet) << "no ICMPv6 echo request reached the isp";
  EXPECT_EQ(packet->source, address(kRouterV6));
  EXPECT_EQ(packet->hop_limit, kTtl);
  const std::vector<uint8_t>& icmp = packet->payload;
  ASSERT_EQ(icmp.size(), 8u + 100u);
  EXPECT_EQ(icmp[1], 0);
  EXPECT_EQ(be16(&icmp[4]), 0x6666);
  EXPECT_EQ(be16(&icmp[6]), 300);
  uint64_t carried = 0;
  std::memcpy(&carried, &icmp[8], sizeof carried);
  EXPECT_EQ(carried, nonce);
  EXPECT_TRUE(checksum_valid(*packet)) << "the kernel fills ICMPv6 checksums of raw sockets";
  EXPECT_EQ(reader.count(echo_reply(AF_INET6, 0x6666), 1), 1) << "no ICMPv6 echo reply";
}

void expect_syn(const IpPacket& packet, uint16_t local_port, uint16_t target_port, uint32_t isn,
                uint16_t mss) {
  const std::vector<uint8_t>& tcp = packet.payload;
  ASSERT_GE(tcp.size(), 24u);
  EXPECT_EQ(be16(&tcp[0]), local_port);
  EXPECT_EQ(be16(&tcp[2]), target_port);
  EXPECT_EQ(be32(&tcp[4]), isn);
  EXPECT_EQ(be32(&tcp[8]), 0u);  // no acknowledgment in a SYN
  EXPECT_EQ(tcp[12] >> 4, 6) << "20 bytes of header + 4 of MSS option";
  EXPECT_EQ(tcp[13], 0x02) << "SYN only";
  EXPECT_GT(be16(&tcp[14]), 0) << "a zero window would invite no SYN-ACK";
  EXPECT_EQ(tcp[20], 2);  // MSS option
  EXPECT_EQ(tcp[21], 4);
  EXPECT_EQ(be16(&tcp[22]), mss);
  EXPECT_EQ(packet.hop_limit, kTtl);
  EXPECT_TRUE(checksum_valid(packet)) << "TCP checksum";
}

// The isp has nothing on the port and resets: its RST acknowledges isn + 1.
bool is_reset_for(const Frame& frame, const IpAddress& to, uint16_t local_port, uint32_t isn) {
  if (frame.packet_type != PACKET_OUTGOING) {
    return false;
  }
  std::optional<IpPacket> packet = parse_ip(frame);
  if (!packet || packet->protocol != IPPROTO_TCP || packet->destination != to ||
      packet->payload.size() < 20) {
    return false;
  }
  const uint8_t* tcp = packet->payload.data();
  return be16(tcp + 2) == local_port && (tcp[13] & 0x04) != 0 && be32(tcp + 8) == isn + 1;
}

TEST_F(ProbeTransportTest, TcpSynV4HasIsnPortMssAndValidChecksum) {
  auto capture = capture_at_isp();
  ProbeTransport transport(kUplink, kMark, kTtl);
  const uint32_t isn = 0xdeadbeef;
  ASSERT_EQ(transport.send_tcp_syn(address(kFarV4), 443, 40001, isn), 0);
  std::optional<IpPacket> packet = next_packet(*capture, address(kFarV4), IPPROTO_TCP);
  ASSERT_TRUE(packet) << "no SYN reached the isp";
  EXPECT_EQ(packet->source, address(kRouterV4));
  expect_syn(*packet, 40001, 443, isn, 1460);
  EXPECT_TRUE(capture->wait_for([&](const Frame& f) {
    return is_reset_for(f, address(kRouterV4), 40001, isn);
  })) << "the isp did not answer the SYN";
}

TEST_F(ProbeTransportTest, TcpSynV6HasIsnPortMssAndValidChecksum) {
  auto capture = capture_at_isp();
  ProbeTransport transport(kUplink, kMark, kTtl);
  const uint32_t isn = 0x01020304;
  ASSERT_EQ(transport.send_tcp_syn(address(kFarV6), 80, 40002, isn), 0);
  std::optional<IpPacket> packet = next_packet(*capture, address(kFarV6), IPPROTO_TCP);
  ASSERT_TRUE(packet) << "no SYN reached the isp";
  EXPECT_EQ(packet->source, address(kRouterV6));
  expect_syn(*packet, 40002, 80, isn, 1440);
  EXPECT_TRUE(capture->wait_for([&](const Frame& f) {
    return is_reset_for(f, address(kRouterV6), 40002, isn);
  })) << "the isp did not answer the SYN";
}

void expect_dns_query(const IpPacket& packet, uint16_t local_port, uint16_t id,
                      const std::vector<uint8_t>& qname, uint16_t qtype) {
  const std::vector<uint8_t>& udp = packet.payload;
  ASSERT_GE(udp.size(), 8u + 12u);
  EXPECT_EQ(be16(&udp[0]), local_port);
  EXPECT_EQ(be16(&udp[2]), 53);
  // No UDP checksum check: the kernel's UDP stack writes it, and on veth it is offloaded, so
  // the capture sees only the partial sum.
  const uint8_t* dns = &udp[8];
  size_t size = udp.size() - 8;
  EXPECT_EQ(be16(dns), id);
  EXPECT_EQ(be16(dns + 2), 0x0100) << "a standard query with RD set";
  EXPECT_EQ(be16(dns + 4), 1);  // QDCOUNT
  EXPECT_EQ(be16(dns + 6), 0);
  EXPECT_EQ(be16(dns + 8), 0);
  EXPECT_EQ(be16(dns + 10), 0);
  ASSERT_EQ(size, 12 + qname.size() + 4);
  EXPECT_EQ(std::vector<uint8_t>(dns + 12, dns + 12 + qname.size()), qname);
  EXPECT_EQ(be16(dns + 12 + qname.size()), qtype);
  EXPECT_EQ(be16(dns + 14 + qname.size()), 1);  // class IN
}

const std::vector<uint8_t> kProbeExampleCom = {5,   'p', 'r', 'o', 'b', 'e', 7,   'e', 'x', 'a',
                                               'm', 'p', 'l', 'e', 3,   'c', 'o', 'm', 0};

TEST_F(ProbeTransportTest, DnsQueryV4AsksForAFromLocalPort) {
  auto capture = capture_at_isp();
  ProbeTransport transport(kUplink, kMark, kTtl);
  ASSERT_EQ(transport.send_dns_query(address(kFarV4), 40053, 0xbeef, "probe.example.com"), 0);
  std::optional<IpPacket> packet = next_packet(*capture, address(kFarV4), IPPROTO_UDP);
  ASSERT_TRUE(packet) << "no DNS query reached the isp";
  EXPECT_EQ(packet->source, address(kRouterV4));
  expect_dns_query(*packet, 40053, 0xbeef, kProbeExampleCom, 1);
  transport.release_dns(40053);
}

TEST_F(ProbeTransportTest, DnsQueryV6AsksForAaaa) {
  auto capture = capture_at_isp();
  ProbeTransport transport(kUplink, kMark, kTtl);
  ASSERT_EQ(transport.send_dns_query(address(kFarV6), 40054, 0x0102, "probe.example.com."), 0);
  std::optional<IpPacket> packet = next_packet(*capture, address(kFarV6), IPPROTO_UDP);
  ASSERT_TRUE(packet) << "no DNS query reached the isp";
  EXPECT_EQ(packet->source, address(kRouterV6));
  expect_dns_query(*packet, 40054, 0x0102, kProbeExampleCom, 28);
}

TEST_F(ProbeTransportTest, DnsPortHeldUntilReleased) {
  auto capture = capture_at_isp();
  ProbeTransport transport(kUplink, kMark, kTtl);
  ASSERT_EQ(transport.send_dns_query(address(kFarV4), 40055, 1, "a.example"), 0);
  // A second query on a held port goes out of the same socket.
  ASSERT_EQ(transport.send_dns_query(address(kFarV4), 40055, 2, "b.example"), 0);
  EXPECT_TRUE(next_packet(*capture, address(kFarV4), IPPROTO_UDP, [](const IpPacket& p) {
    return p.payload.size() > 10 && be16(&p.payload[8]) == 2;
  }));

  // While held, nobody else gets the port; after release_dns, it is free.
  int other = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(other, 0);
  sockaddr_in port{};
  port.sin_family = AF_INET;
  port.sin_port = htons(40055);
  EXPECT_NE(bind(other, reinterpret_cast<sockaddr*>(&port), sizeof port), 0);
  transport.release_dns(40055);
  EXPECT_EQ(bind(other, reinterpret_cast<sockaddr*>(&port), sizeof port), 0) << std::strerror(errno);
  close(other);
}

TEST_F(ProbeTransportTest, DnsPortTakenElsewhereIsEaddrinuse) {
  int other = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(other, 0);
  sockaddr_in port{};
  port.sin_family = AF_INET;
  port.sin_port = htons(40056);
  ASSERT_EQ(bind(other, reinterpret_cast<sockaddr*>(&port), sizeof port), 0);
  ProbeTransport transport(kUplink, kMark, kTtl);
  EXPECT_EQ(transport.send_dns_query(address(kFarV4), 40056, 1, "example.org"), -EADDRINUSE);
  close(other);
  EXPECT_EQ(transport.send_dns_query(address(kFarV4), 40056, 1, "example.org"), 0);
}

TEST_F(ProbeTransportTest, ArpRequestAsksForTheGatewayFromTheDevice) {
  auto capture = capture_at_isp();
  const std::array<uint8_t, 6> mac = mac_of(kUplink);
  ProbeTransport transport(kUplink, kMark, kTtl);
  ASSERT_EQ(transport.send_arp_request(address(kIspV4)), 0);

  auto request =
      capture->wait_for([](const Frame& f) { return incoming(f) && f.ethertype() == kEthernetArp; });
  ASSERT_TRUE(request) << "no ARP request reached the isp";
  const std::vector<uint8_t>& b = request->bytes;
  ASSERT_GE(b.size(), kEthernetHeader + 28);
  EXPECT_EQ(std::vector<uint8_t>(b.begin(), b.begin() + 6), std::vector<uint8_t>(6, 0xff)) << "broadcast";
  EXPECT_EQ(std::vector<uint8_t>(b.begin() + 6, b.begin() + 12),
            std::vector<uint8_t>(mac.begin(), mac.end()));
  const uint8_t* arp = &b[kEthernetHeader];
  EXPECT_EQ(be16(arp), 1);  // Ethernet
  EXPECT_EQ(be16(arp + 2), 0x0800);
  EXPECT_EQ(arp[4], 6);
  EXPECT_EQ(arp[5], 4);
  EXPECT_EQ(be16(arp + 6), 1);  // request
  EXPECT_EQ(std::vector<uint8_t>(arp + 8, arp + 14), std::vector<uint8_t>(mac.begin(), mac.end()));
  EXPECT_EQ(std::vector<uint8_t>(arp + 14, arp + 18), v4_bytes(kRouterV4));
  EXPECT_EQ(std::vector<uint8_t>(arp + 18, arp + 24), std::vector<uint8_t>(6, 0));
  EXPECT_EQ(std::vector<uint8_t>(arp + 24, arp + 28), v4_bytes(kIspV4));

  auto reply = capture->wait_for([](const Frame& f) {
    return f.packet_type == PACKET_OUTGOING && f.ethertype() == kEthernetArp &&
           be16(&f.bytes[kEthernetHeader + 6]) == 2;
  });
  EXPECT_TRUE(reply) << "the isp did not answer the request";
}

TEST_F(ProbeTransportTest, SourceAddressIsThePrimaryGlobalAddress) {
  router_ip("addr add 192.0.2.50/24 dev wan1");  // a secondary in the same subnet
  router_ip("addr add 10.9.9.9/24 dev wan1");    // a later primary
  ProbeTransport transport(kUplink, kMark, kTtl);
  EXPECT_EQ(transport.source_address(AF_INET), address(kRouterV4));
  EXPECT_EQ(transport.source_address(AF_INET6), address(kRouterV6)) << "global, not the fe80:: address";
  ProbeTransport absent("nosuch0", kMark, kTtl);
  EXPECT_EQ(absent.source_address(AF_INET), std::nullopt);
}

TEST_F(ProbeTransportTest, BadArgumentsAreRefused) {
  ProbeTransport transport(kUplink, kMark, kTtl);
  EXPECT_EQ(transport.send_echo(address(kFarV4), 1, 1, 1, 7), -EINVAL) << "too small for the nonce";
  EXPECT_EQ(transport.send_echo(IpAddress{}, 1, 1, 1, 56), -EAFNOSUPPORT);
  EXPECT_EQ(transport.send_dns_query(address(kFarV4), 40057, 1, "a..b"), -EINVAL);
  EXPECT_EQ(transport.send_dns_query(address(kFarV4), 40057, 1, std::string(64, 'x') + ".com"), -EINVAL);
  EXPECT_EQ(transport.send_arp_request(address(kIspV6)), -EAFNOSUPPORT);
}

// ---- when the device is not there --------------------------------------------------------

TEST_F(ProbeTransportTest, AbsentDeviceGivesErrnoForEverySend) {
  ProbeTransport transport("nosuch0", kMark, kTtl);
  EXPECT_EQ(transport.send_echo(address(kFarV4), 1, 1, 1, 56), -ENODEV);
  EXPECT_EQ(transport.send_echo(address(kFarV6), 1, 1, 1, 56), -ENODEV);
  EXPECT_EQ(transport.send_tcp_syn(address(kFarV4), 443, 40010, 1), -ENODEV);
  EXPECT_EQ(transport.send_tcp_syn(address(kFarV6), 443, 40010, 1), -ENODEV);
  EXPECT_EQ(transport.send_dns_query(address(kFarV4), 40011, 1, "example.org"), -ENODEV);
  EXPECT_EQ(transport.send_arp_request(address(kIspV4)), -ENODEV);
}

TEST_F(ProbeTransportTest, DownDeviceGivesErrnoAndRecoversWhenUp) {
  ProbeTransport transport(kUplink, kMark, kTtl);
  ASSERT_EQ(transport.send_echo(address(kFarV4), 9, 1, 1, 56), 0);
  router_ip("link set wan1 down");
  EXPECT_LT(transport.send_echo(address(kFarV4), 9, 2, 1, 56), 0);
  EXPECT_LT(transport.send_echo(address(kFarV6), 9, 2, 1, 56), 0);
  EXPECT_LT(transport.send_tcp_syn(address(kFarV4), 443, 40020, 1), 0);
  EXPECT_LT(transport.send_tcp_syn(address(kFarV6), 443, 40020, 1), 0);
  EXPECT_LT(transport.send_dns_query(address(kFarV4), 40021, 1, "example.org"), 0);

  router_ip("link set wan1 up");
  ASSERT_TRUE(uplinkd::testing::wait_until([&] {
    return uplinkd::testing::run_command("ip -n " + router_ns_ + " -o link show dev wan1")
               .output.find("state UP") != std::string::npos;
  }));
  // Going down flushed wan1's routes and its IPv6 address (keep_addr_on_down is off).
  router_ip(std::string("addr replace ") + kRouterV6 + "/64 dev wan1 nodad");
  ASSERT_NO_FATAL_FAILURE(install_uplink_routes());
  auto capture = capture_at_isp();
  ASSERT_EQ(transport.send_echo(address(kFarV4), 9, 3, 1, 56), 0);
  EXPECT_TRUE(next_packet(*capture, address(kFarV4), IPPROTO_ICMP, [](const IpPacket& p) {
    return p.payload.size() >= 8 && be16(&p.payload[6]) == 3;
  }));
  ASSERT_EQ(transport.send_tcp_syn(address(kFarV4), 443, 40020, 3), 0);
  EXPECT_TRUE(next_packet(*capture, address(kFarV4), IPPROTO_TCP));
  ASSERT_EQ(transport.send_dns_query(address(kFarV4), 40021, 3, "example.org"), 0);
  EXPECT_TRUE(next_packet(*capture, address(kFarV4), IPPROTO_UDP));
}

// A socket bound to a deleted device keeps the old ifindex; the transport must reopen.
TEST_F(ProbeTransportTest, RecreatedDeviceIsUsedAfterAFailedSend) {
  ProbeTransport transport(kUplink, kMark, kTtl);
  ASSERT_EQ(transport.send_echo(address(kFarV4), 10, 1, 1, 56), 0);
  ASSERT_EQ(transport.send_tcp_syn(address(kFarV4), 443, 40030, 1), 0);
  ASSERT_EQ(transport.send_tcp_syn(address(kFarV6), 443, 40030, 1), 0);
  ASSERT_EQ(transport.send_echo(address(kFarV6), 10, 1, 1, 56), 0);
  router_ip("link del wan1");
  EXPECT_EQ(transport.send_echo(address(kFarV4), 10, 2, 1, 56), -ENODEV);
  EXPECT_EQ(transport.send_tcp_syn(address(kFarV4), 443, 40030, 2), -ENODEV);
  // IPv6 finds no route for the vanished ifindex: ENETUNREACH rather than ENODEV.
  EXPECT_LT(transport.send_echo(address(kFarV6), 10, 2, 1, 56), 0);
  EXPECT_LT(transport.send_tcp_syn(address(kFarV6), 443, 40030, 2), 0);
  EXPECT_EQ(transport.send_arp_request(address(kIspV4)), -ENODEV);

  ASSERT_NO_FATAL_FAILURE(create_uplink());
  ASSERT_NO_FATAL_FAILURE(install_uplink_routes());
  auto capture = capture_at_isp();
  ASSERT_EQ(transport.send_echo(address(kFarV4), 10, 3, 1, 56), 0);
  EXPECT_TRUE(next_packet(*capture, address(kFarV4), IPPROTO_ICMP));
  ASSERT_EQ(transport.send_echo(address(kFarV6), 10, 3, 1, 56), 0);
  EXPECT_TRUE(next_packet(*capture, address(kFarV6), IPPROTO_ICMPV6,
                          [](const IpPacket& p) { return !p.payload.empty() && p.payload[0] == 128; }));
  ASSERT_EQ(transport.send_tcp_syn(address(kFarV4), 443, 40030, 3), 0);
  EXPECT_TRUE(next_packet(*capture, address(kFarV4), IPPROTO_TCP));
  ASSERT_EQ(transport.send_tcp_syn(address(kFarV6), 443, 40030, 3), 0);
  EXPECT_TRUE(next_packet(*capture, address(kFarV6), IPPROTO_TCP));
  ASSERT_EQ(transport.send_arp_request(address(kIspV4)), 0);
  EXPECT_TRUE(capture->wait_for([](const Frame& f) { return incoming(f) && f.ethertype() == kEthernetArp; }));
}

// ---- nothing piles up --------------------------------------------------------------------

TEST_F(ProbeTransportTest, RepliesDoNotAccumulateInTheTransportSockets) {
  ReplyReader echo_v4(AF_INET, IPPROTO_ICMP);
  ReplyReader echo_v6(AF_INET6, IPPROTO_ICMPV6);
  ReplyReader tcp_v4(AF_INET, IPPROTO_TCP);
  ASSERT_TRUE(echo_v4.ok() && echo_v6.ok() && tcp_v4.ok());
  ProbeTransport transport(kUplink, kMark, kTtl);

  // One first, so the gateway's neighbour entry exists before the burst.
  ASSERT_EQ(transport.send_echo(address(kFarV4), 0x7777, 0, 0, 56), 0);
  ASSERT_EQ(echo_v4.count(echo_reply(AF_INET, 0x7777), 1), 1);
  for (uint16_t seq = 1; seq <= 100; ++seq) {
    ASSERT_EQ(transport.send_echo(address(kFarV4), 0x7777, seq, seq, 56), 0);
  }
  EXPECT_EQ(echo_v4.count(echo_reply(AF_INET, 0x7777), 100), 100);

  for (uint16_t seq = 0; seq < 20; ++seq) {
    ASSERT_EQ(transport.send_echo(address(kFarV6), 0x7878, seq, seq, 56), 0);
  }
  EXPECT_EQ(echo_v6.count(echo_reply(AF_INET6, 0x7878), 20), 20);

  for (uint16_t port = 0; port < 20; ++port) {
    ASSERT_EQ(transport.send_tcp_syn(address(kFarV4), 9, 41000 + port, 5), 0);
  }
  auto reset = [](const uint8_t* tcp, size_t size) {
    return size >= 20 && (tcp[13] & 0x04) != 0 && be16(tcp + 2) >= 41000;
  };
  EXPECT_EQ(tcp_v4.count(reset, 20), 20);

  // Only the transport's raw sockets are left in the namespace now.
  echo_v4.close_now();
  echo_v6.close_now();
  tcp_v4.close_now();
  std::vector<RawSocketRow> v4 = raw_sockets(router_ns_, "raw");
  std::vector<RawSocketRow> v6 = raw_sockets(router_ns_, "raw6");
  ASSERT_EQ(v4.size(), 2u) << "ICMP and TCP";
  ASSERT_EQ(v6.size(), 1u) << "ICMPv6";
  // The readers above saw every reply, so every raw socket of the namespace was offered a copy.
  for (const RawSocketRow& row : v4) {
    EXPECT_EQ(row.receive_queue, 0u) << "protocol " << row.protocol;
  }
  EXPECT_EQ(v6[0].receive_queue, 0u);
}

}  // namespace
}  // namespace uplinkd::health
