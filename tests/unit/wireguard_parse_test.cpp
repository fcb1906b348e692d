// WireGuard peer parsing: the UAPI text of userspace implementations (wireguard-go) and the kernel's
// generic netlink WG_CMD_GET_DEVICE messages, built here byte by byte as the kernel lays them out.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <linux/genetlink.h>
#include <linux/time_types.h>
#include <linux/wireguard.h>
#include <netinet/in.h>

#include <cstring>
#include <string>
#include <vector>

#include "wireguard/peer_parse.h"

namespace uplinkd::wireguard {
namespace {

// A key whose base64 is easy to check: bytes 0..31.
std::vector<uint8_t> counting_key(uint8_t first) {
  std::vector<uint8_t> key(32);
  for (size_t i = 0; i < key.size(); ++i) key[i] = static_cast<uint8_t>(first + i);
  return key;
}

std::string hex(const std::vector<uint8_t>& bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (uint8_t b : bytes) {
    out += digits[b >> 4];
    out += digits[b & 15];
  }
  return out;
}

// `wg` shows this key (bytes 0..31) as:
constexpr const char* kKey0Base64 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

TEST(WireguardKeys, Base64AndHex) {
  std::vector<uint8_t> key = counting_key(0);
  EXPECT_EQ(key_to_base64(key.data(), key.size()), kKey0Base64);
  EXPECT_EQ(hex_key_to_base64(hex(key)), kKey0Base64);
  EXPECT_FALSE(hex_key_to_base64("00"));
  EXPECT_FALSE(hex_key_to_base64(std::string(64, 'g')));
  const uint8_t three[] = {'M', 'a', 'n'};
  EXPECT_EQ(key_to_base64(three, 3), "TWFu");
  EXPECT_EQ(key_to_base64(three, 2), "TWE=");
}

TEST(WireguardEndpoint, ParseAndPrint) {
  auto v4 = parse_endpoint("203.0.113.5:51820");
  ASSERT_TRUE(v4);
  EXPECT_EQ(v4->address, *IpAddress::parse("203.0.113.5"));
  EXPECT_EQ(v4->port, 51820);
  EXPECT_EQ(v4->str(), "203.0.113.5:51820");
  auto v6 = parse_endpoint("[2001:db8::5]:443");
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->str(), "[2001:db8::5]:443");
  for (const char* bad :
       {"", "203.0.113.5", "203.0.113.5:", "203.0.113.5:0", "203.0.113.5:65536", "2001:db8::5:443",
        "[2001:db8::5]443", "[203.0.113.5]:1", "vpn.example.com:51820", "[2001:db8::5]:x"}) {
    EXPECT_FALSE(parse_endpoint(bad)) << bad;
  }
}

// ---- UAPI text ----------------------------------------------------------------------------------

TEST(WireguardUapi, DevicePeersIpv6AndNoEndpoint) {
  const std::string text = "private_key=" + hex(counting_key(100)) +
                           "\n"
                           "listen_port=51820\n"
                           "fwmark=51820\n"
                           "public_key=" +
                           hex(counting_key(0)) +
                           "\n"
                           "preshared_key=0000000000000000000000000000000000000000000000000000000000000000\n"
                           "protocol_version=1\n"
                           "endpoint=203.0.113.5:51820\n"
                           "last_handshake_time_sec=1700000000\n"
                           "last_handshake_time_nsec=5\n"
                           "tx_bytes=100\n"
                           "rx_bytes=200\n"
                           "persistent_keepalive_interval=25\n"
                           "allowed_ip=0.0.0.0/1\n"
                           "allowed_ip=128.0.0.0/1\n"
                           "public_key=" +
                           hex(counting_key(1)) +
                           "\n"
                           "endpoint=[2001:db8::5]:51821\n"
                           "allowed_ip=2001:db8:100::/48\n"
                           "public_key=" +
                           hex(counting_key(2)) +
                           "\n"
                           "allowed_ip=10.9.0.2/32\n"
                           "errno=0\n"
                           "\n";
  std::string error;
  auto device = parse_uapi_get(text, "wgtest", &error);
  ASSERT_TRUE(device) << error;
  EXPECT_EQ(device->name, "wgtest");
  EXPECT_EQ(device->implementation, "userspace");
  EXPECT_EQ(device->listen_port, 51820);
  EXPECT_EQ(device->fwmark, 51820U);
  ASSERT_EQ(device->peers.size(), 3U);
  EXPECT_EQ(device->peers[0].public_key, kKey0Base64);
  ASSERT_TRUE(device->peers[0].endpoint);
  EXPECT_EQ(device->peers[0].endpoint->str(), "203.0.113.5:51820");
  EXPECT_EQ(device->peers[0].last_handshake_s, 1700000000);
  EXPECT_EQ(device->peers[0].allowed_ips, (std::vector<std::string>{"0.0.0.0/1", "128.0.0.0/1"}));
  ASSERT_TRUE(device->peers[1].endpoint);
  EXPECT_TRUE(device->peers[1].endpoint->address.is_v6());
  EXPECT_EQ(device->peers[1].endpoint->port, 51821);
  EXPECT_EQ(device->peers[1].endpoint->str(), "[2001:db8::5]:51821");
  EXPECT_FALSE(device->peers[2].endpoint);  // never contacted us
  EXPECT_EQ(device->peers[2].last_handshake_s, 0);
}

TEST(WireguardUapi, EmptyDevice) {
  std::string error;
  auto device =
      parse_uapi_get("private_key=" + hex(counting_key(9)) + "\nlisten_port=0\nerrno=0\n\n", "wg1", &error);
  ASSERT_TRUE(device) << error;
  EXPECT_TRUE(device->peers.empty());
}

TEST(WireguardUapi, ErrorsSayWhy) {
  struct Case {
    std::string text;
    const char* expected;
  } cases[] = {
      {"errno=22\n\n", "wg1: UAPI answer: errno=22 (Invalid argument)"},
      {"listen_port=1\n", "wg1: UAPI answer: no errno= line"},
      {"listen_port\nerrno=0\n\n", "wg1: UAPI answer: line 1 has no '='"},
      {"public_key=zz\nerrno=0\n\n", "wg1: UAPI answer: line 1: public_key is not 64 hex digits"},
      {"public_key=" + hex(counting_key(0)) + "\nendpoint=vpn:1\nerrno=0\n\n",
       "wg1: UAPI answer: line 2: endpoint 'vpn:1' is not ip:port"},
  };
  for (const Case& c : cases) {
    std::string error;
    EXPECT_FALSE(parse_uapi_get(c.text, "wg1", &error));
    EXPECT_EQ(error.rfind(c.expected, 0), 0U) << error;
  }
}

// ---- generic netlink ----------------------------------------------------------------------------

// Builds one netlink message: nlmsghdr, genlmsghdr, then attributes, nests closed in order.
class MessageBuilder {
 public:
  MessageBuilder() {
    bytes_.resize(NLMSG_HDRLEN + GENL_HDRLEN);
    genlmsghdr genl{WG_CMD_GET_DEVICE, WG_GENL_VERSION, 0};
    std::memcpy(bytes_.data() + NLMSG_HDRLEN, &genl, sizeof genl);
  }
  MessageBuilder& put(uint16_t type, const void* data, size_t size) {
    size_t at = bytes_.size();
    bytes_.resize(at + NLA_ALIGN(NLA_HDRLEN + size));
    nlattr header{static_cast<uint16_t>(NLA_HDRLEN + size), type};
    std::memcpy(bytes_.data() + at, &header, sizeof header);
    if (size != 0) std::memcpy(bytes_.data() + at + NLA_HDRLEN, data, size);
    return *this;
  }
  template <typename T>
  MessageBuilder& put_value(uint16_t type, T value) {
    return put(type, &value, sizeof value);
  }
  MessageBuilder& put_string(uint16_t type, const std::string& text) {
    return put(type, text.c_str(), text.size() + 1);
  }
  MessageBuilder& begin(uint16_t type) {
    open_.push_back(bytes_.size());
    return put(static_cast<uint16_t>(type | NLA_F_NESTED), nullptr, 0);
  }
  MessageBuilder& end() {
    size_t at = open_.back();
    open_.pop_back();
    uint16_t length = static_cast<uint16_t>(bytes_.size() - at);
    std::memcpy(bytes_.data() + at, &length, sizeof length);
    return *this;
  }
  const nlmsghdr* message() {
    nlmsghdr header{};
    header.nlmsg_len = static_cast<uint32_t>(bytes_.size());
    header.nlmsg_flags = NLM_F_MULTI;
    std::memcpy(bytes_.data(), &header, sizeof header);
    return reinterpret_cast<const nlmsghdr*>(bytes_.data());
  }
  std::vector<uint8_t>& bytes() { return bytes_; }

 private:
  std::vector<uint8_t> bytes_;
  std::vector<size_t> open_;
};

MessageBuilder& put_peer_key(MessageBuilder& m, uint8_t first) {
  std::vector<uint8_t> key = counting_key(first);
  return m.put(WGPEER_A_PUBLIC_KEY, key.data(), key.size());
}

MessageBuilder& put_allowed(MessageBuilder& m, uint16_t index, int family, const char* address,
                            uint8_t cidr) {
  uint8_t raw[16] = {};
  inet_pton(family, address, raw);
  m.begin(index);
  m.put_value<uint16_t>(WGALLOWEDIP_A_FAMILY, static_cast<uint16_t>(family));
  m.put(WGALLOWEDIP_A_IPADDR, raw, family == AF_INET ? 4 : 16);
  m.put_value<uint8_t>(WGALLOWEDIP_A_CIDR_MASK, cidr);
  return m.end();
}

sockaddr_in v4_endpoint(const char* address, uint16_t port) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  inet_pton(AF_INET, address, &sa.sin_addr);
  return sa;
}

sockaddr_in6 v6_endpoint(const char* address, uint16_t port) {
  sockaddr_in6 sa{};
  sa.sin6_family = AF_INET6;
  sa.sin6_port = htons(port);
  inet_pton(AF_INET6, address, &sa.sin6_addr);
  return sa;
}

TEST(WireguardGenl, DeviceWithV4V6AndEndpointlessPeers) {
  MessageBuilder m;
  m.put_value<uint32_t>(WGDEVICE_A_IFINDEX, 7);
  m.put_string(WGDEVICE_A_IFNAME, "wg0");
  m.put_value<uint16_t>(WGDEVICE_A_LISTEN_PORT, 51820);
  m.put_value<uint32_t>(WGDEVICE_A_FWMARK, 0xca6c);
  m.begin(WGDEVICE_A_PEERS);
  {
    m.begin(0);
    put_peer_key(m, 0);
    sockaddr_in sa = v4_endpoint("203.0.113.5", 51820);
    m.put(WGPEER_A_ENDPOINT, &sa, sizeof sa);
    __kernel_timespec when{1700000000, 1};
    m.put(WGPEER_A_LAST_HANDSHAKE_TIME, &when, sizeof when);
    m.begin(WGPEER_A_ALLOWEDIPS);
    put_allowed(m, 0, AF_INET, "0.0.0.0", 1);
    put_allowed(m, 1, AF_INET, "128.0.0.0", 1);
    m.end();
    m.end();
  }
  {
    m.begin(1);
    put_peer_key(m, 1);
    sockaddr_in6 sa = v6_endpoint("2001:db8::5", 51821);
    m.put(WGPEER_A_ENDPOINT, &sa, sizeof sa);
    m.begin(WGPEER_A_ALLOWEDIPS);
    put_allowed(m, 0, AF_INET6, "2001:db8:100::", 48);
    m.end();
    m.end();
  }
  {
    m.begin(2);
    put_peer_key(m, 2);  // no endpoint attribute: the peer has none
    m.end();
  }
  m.end();

  GenlDeviceParser parser;
  std::string error;
  ASSERT_TRUE(parser.add_message(m.message(), &error)) << error;
  const Device& d = parser.device();
  EXPECT_EQ(d.name, "wg0");
  EXPECT_EQ(d.ifindex, 7);
  EXPECT_EQ(d.listen_port, 51820);
  EXPECT_EQ(d.fwmark, 0xca6cU);
  EXPECT_EQ(d.implementation, "kernel");
  ASSERT_EQ(d.peers.size(), 3U);
  EXPECT_EQ(d.peers[0].public_key, kKey0Base64);
  ASSERT_TRUE(d.peers[0].endpoint);
  EXPECT_EQ(d.peers[0].endpoint->str(), "203.0.113.5:51820");
  EXPECT_EQ(d.peers[0].last_handshake_s, 1700000000);
  EXPECT_EQ(d.peers[0].allowed_ips, (std::vector<std::string>{"0.0.0.0/1", "128.0.0.0/1"}));
  ASSERT_TRUE(d.peers[1].endpoint);
  EXPECT_EQ(d.peers[1].endpoint->str(), "[2001:db8::5]:51821");
  EXPECT_EQ(d.peers[1].allowed_ips, (std::vector<std::string>{"2001:db8:100::/48"}));
  EXPECT_FALSE(d.peers[2].endpoint);
}

TEST(WireguardGenl, PeerContinuedInNextMessageIsCoalesced) {
  MessageBuilder first;
  first.put_string(WGDEVICE_A_IFNAME, "wg0");
  first.begin(WGDEVICE_A_PEERS).begin(0);
  put_peer_key(first, 0);
  sockaddr_in sa = v4_endpoint("198.51.100.9", 4500);
  first.put(WGPEER_A_ENDPOINT, &sa, sizeof sa);
  first.begin(WGPEER_A_ALLOWEDIPS);
  put_allowed(first, 0, AF_INET, "10.0.0.0", 8);
  first.end().end().end();

  // The kernel repeats the device name and the peer's key, with only the allowed IPs that did not fit.
  MessageBuilder second;
  second.put_string(WGDEVICE_A_IFNAME, "wg0");
  second.begin(WGDEVICE_A_PEERS).begin(0);
  put_peer_key(second, 0);
  second.begin(WGPEER_A_ALLOWEDIPS);
  put_allowed(second, 0, AF_INET, "172.16.0.0", 12);
  second.end().end();
  second.begin(1);
  put_peer_key(second, 5);
  second.end().end();

  GenlDeviceParser parser;
  std::string error;
  ASSERT_TRUE(parser.add_message(first.message(), &error)) << error;
  ASSERT_TRUE(parser.add_message(second.message(), &error)) << error;
  const Device& d = parser.device();
  ASSERT_EQ(d.peers.size(), 2U);
  EXPECT_EQ(d.peers[0].allowed_ips, (std::vector<std::string>{"10.0.0.0/8", "172.16.0.0/12"}));
  ASSERT_TRUE(d.peers[0].endpoint);
  EXPECT_EQ(d.peers[0].endpoint->str(), "198.51.100.9:4500");
  EXPECT_FALSE(d.peers[1].endpoint);
}

TEST(WireguardGenl, MalformedMessagesAreRefused) {
  {
    MessageBuilder m;
    m.put_string(WGDEVICE_A_IFNAME, "wg0");
    m.begin(WGDEVICE_A_PEERS).begin(0);
    uint8_t short_key[16] = {};
    m.put(WGPEER_A_PUBLIC_KEY, short_key, sizeof short_key);
    m.end().end();
    GenlDeviceParser parser;
    std::string error;
    EXPECT_FALSE(parser.add_message(m.message(), &error));
    EXPECT_NE(error.find("peer public key of 16 bytes"), std::string::npos) << error;
  }
  {
    MessageBuilder m;
    m.put_string(WGDEVICE_A_IFNAME, "wg0");
    m.begin(WGDEVICE_A_PEERS).begin(0).end().end();  // a peer without a key
    GenlDeviceParser parser;
    std::string error;
    EXPECT_FALSE(parser.add_message(m.message(), &error));
    EXPECT_NE(error.find("without a public key"), std::string::npos) << error;
  }
  {
    MessageBuilder m;
    m.put_string(WGDEVICE_A_IFNAME, "wg0");
    m.message();
    // An attribute whose length runs past the end of the message.
    uint16_t too_long = 200;
    std::memcpy(m.bytes().data() + NLMSG_HDRLEN + GENL_HDRLEN, &too_long, sizeof too_long);
    GenlDeviceParser parser;
    std::string error;
    EXPECT_FALSE(parser.add_message(reinterpret_cast<const nlmsghdr*>(m.bytes().data()), &error));
    EXPECT_NE(error.find("overruns"), std::string::npos) << error;
  }
  {
    nlmsghdr tiny{};
    tiny.nlmsg_len = NLMSG_HDRLEN;
    GenlDeviceParser parser;
    std::string error;
    EXPECT_FALSE(parser.add_message(&tiny, &error));
  }
}

}  // namespace
}  // namespace uplinkd::wireguard
