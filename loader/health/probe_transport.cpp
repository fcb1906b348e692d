// Probe sockets of one uplink. Each socket is bound to the uplink's device (SO_BINDTODEVICE) and
// carries its mark (SO_MARK): the mark selects the uplink's routing table through the rule
// `fwmark mark/mask lookup N`, the device binding keeps a packet from leaving through another
// interface when that table is empty. Replies are read by the XDP program, never here, so every
// socket that could receive copies of incoming traffic is made to drop them at once.
#include "health/probe_transport.h"

#include <arpa/inet.h>
#include <linux/filter.h>
#include <linux/if_ether.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <netinet/icmp6.h>
#include <netinet/in.h>
#include <netinet/ip_icmp.h>
#include <netlink/cache.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netpacket/packet.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <memory>
#include <string_view>
#include <utility>
#include <vector>

namespace uplinkd::health {
namespace {

constexpr uint16_t kDnsPort = 53;
constexpr uint16_t kDnsTypeA = 1;
constexpr uint16_t kDnsTypeAaaa = 28;
constexpr uint16_t kDnsClassIn = 1;
constexpr uint16_t kDnsFlagRecursionDesired = 0x0100;
constexpr size_t kMaxDnsNameLength = 255;
constexpr size_t kMaxDnsLabelLength = 63;

constexpr size_t kIcmpHeaderSize = 8;
// The largest echo payload an IPv4 datagram can carry (65535 - 20 IP - 8 ICMP); IPv6 allows a
// little more, but one limit for both keeps the probe sizes comparable between families.
constexpr int kMaxEchoPayload = 65507;
constexpr int kIpv4HeaderSize = 20;
constexpr int kIpv6HeaderSize = 40;

constexpr size_t kTcpHeaderSize = 20;
constexpr size_t kTcpMssOptionSize = 4;
constexpr uint8_t kTcpFlagSyn = 0x02;
constexpr uint8_t kTcpOptionMss = 2;
constexpr uint16_t kTcpWindow = 64240;  // what Linux offers in a SYN on Ethernet
constexpr uint16_t kTcpMssV4 = 1460;    // Ethernet MTU - 40
constexpr uint16_t kTcpMssV6 = 1440;    // Ethernet MTU - 60
constexpr int kTcpChecksumOffset = 16;

constexpr size_t kEthernetAddressSize = 6;

// ICMP_FILTER and its bitmap from <linux/icmp.h>, which cannot be included next to <net/if.h>
// (it pulls in <linux/if.h>). A set bit blocks that ICMP type.
constexpr int kIcmpFilterOption = 1;
struct IcmpTypeFilter {
  uint32_t blocked_types;
};

void put16(uint8_t* at, uint16_t host_order) {
  at[0] = static_cast<uint8_t>(host_order >> 8);
  at[1] = static_cast<uint8_t>(host_order);
}

void put32(uint8_t* at, uint32_t host_order) {
  put16(at, static_cast<uint16_t>(host_order >> 16));
  put16(at + 2, static_cast<uint16_t>(host_order));
}

// One's-complement sum of 16-bit big-endian words (RFC 1071), folded at the end.
uint64_t checksum_add(uint64_t sum, const uint8_t* data, size_t size) {
  for (size_t i = 0; i + 1 < size; i += 2) {
    sum += (uint32_t{data[i]} << 8) | data[i + 1];
  }
  if (size % 2 != 0) {
    sum += uint32_t{data[size - 1]} << 8;
  }
  return sum;
}

uint16_t checksum_finish(uint64_t sum) {
  while (sum >> 16 != 0) {
    sum = (sum & 0xffff) + (sum >> 16);
  }
  return static_cast<uint16_t>(~sum);
}

void close_fd(int& fd) {
  if (fd >= 0) {
    close(fd);
  }
  fd = -1;
}

int set_option(int fd, int level, int name, const void* value, socklen_t size) {
  return setsockopt(fd, level, name, value, size) == 0 ? 0 : -errno;
}

int set_int_option(int fd, int level, int name, int value) {
  return set_option(fd, level, name, &value, sizeof value);
}

// A classic BPF program of one instruction, "accept 0 bytes": the socket queues nothing, and the
// kernel frees each copy before it is charged to the socket's receive buffer. Preferred over
// shutdown(SHUT_RD) + a minimal SO_RCVBUF, because raw sockets ignore SHUT_RD when queueing and a
// minimal buffer still holds a few packets that nobody reads.
int attach_drop_all_filter(int fd) {
  sock_filter drop_all[] = {BPF_STMT(BPF_RET | BPF_K, 0)};
  sock_fprog program{};
  program.len = 1;
  program.filter = drop_all;
  return set_option(fd, SOL_SOCKET, SO_ATTACH_FILTER, &program, sizeof program);
}

int set_hop_limit(int fd, int family, int ttl) {
  if (ttl <= 0) {
    return 0;  // keep the kernel's default
  }
  if (family == AF_INET) {
    return set_int_option(fd, IPPROTO_IP, IP_TTL, ttl);
  }
  return set_int_option(fd, IPPROTO_IPV6, IPV6_UNICAST_HOPS, ttl);
}

// A socket bound to `device` carrying `mark`, or -errno (-ENODEV when the device is absent).
int open_uplink_socket(int family, int type, int protocol, const std::string& device, uint32_t mark) {
  int fd = socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, protocol);
  if (fd < 0) {
    return -errno;
  }
  int err =
      set_option(fd, SOL_SOCKET, SO_BINDTODEVICE, device.c_str(), static_cast<socklen_t>(device.size() + 1));
  if (err == 0) {
    err = set_int_option(fd, SOL_SOCKET, SO_MARK, static_cast<int>(mark));
  }
  if (err != 0) {
    close_fd(fd);
  }
  return err != 0 ? err : fd;
}

// ICMP_FILTER / ICMP6_FILTER with every type blocked, plus the drop-all socket filter: what
// every raw ICMP socket of the transport gets (see icmp_socket for why both).
int block_icmp_copies(int fd, int family) {
  int err = 0;
  if (family == AF_INET) {
    IcmpTypeFilter block_all{~0u};
    err = set_option(fd, SOL_RAW, kIcmpFilterOption, &block_all, sizeof block_all);
  } else {
    icmp6_filter block_all{};
    ICMP6_FILTER_SETBLOCKALL(&block_all);
    err = set_option(fd, IPPROTO_ICMPV6, ICMP6_FILTER, &block_all, sizeof block_all);
  }
  return err != 0 ? err : attach_drop_all_filter(fd);
}

// Don't fragment, and size against the device MTU rather than the route's cached path MTU: the
// PROBE modes set DF (IPv4) / refuse fragmentation (IPv6) yet ignore what ICMP "fragmentation
// needed" / "packet too big" taught the route, so an echo either leaves whole or fails with
// EMSGSIZE. IPV6_DONTFRAG makes the IPv6 refusal explicit for raw sockets too.
int set_dont_fragment(int fd, int family) {
  if (family == AF_INET) {
    return set_int_option(fd, IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_PROBE);
  }
  int err = set_int_option(fd, IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_PROBE);
  return err != 0 ? err : set_int_option(fd, IPPROTO_IPV6, IPV6_DONTFRAG, 1);
}

struct SocketAddress {
  sockaddr_storage storage{};
  socklen_t size = 0;
  [[nodiscard]] const sockaddr* get() const { return reinterpret_cast<const sockaddr*>(&storage); }
};

SocketAddress socket_address(const IpAddress& address, uint16_t port) {
  SocketAddress result;
  if (address.is_v4()) {
    auto* sin = reinterpret_cast<sockaddr_in*>(&result.storage);
    sin->sin_family = AF_INET;
    sin->sin_port = htons(port);
    std::memcpy(&sin->sin_addr, address.bytes.data(), 4);
    result.size = sizeof *sin;
  } else {
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&result.storage);
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(port);
    std::memcpy(&sin6->sin6_addr, address.bytes.data(), 16);
    result.size = sizeof *sin6;
  }
  return result;
}

// Sends one datagram; on failure closes the socket so that the next probe opens a fresh one (a
// socket bound to a device that was deleted and re-created keeps the old ifindex forever).
int send_or_reset(int& fd, const std::vector<uint8_t>& packet, const SocketAddress& to) {
  if (sendto(fd, packet.data(), packet.size(), 0, to.get(), to.size) >= 0) {
    return 0;
  }
  int err = -errno;
  close_fd(fd);
  return err;
}

std::vector<uint8_t> build_echo_request(int family, uint16_t ident, uint16_t seq, uint64_t nonce,
                                        int payload_size) {
  std::vector<uint8_t> packet(kIcmpHeaderSize + static_cast<size_t>(payload_size));
  packet[0] = family == AF_INET ? ICMP_ECHO : ICMP6_ECHO_REQUEST;
  put16(&packet[4], ident);
  put16(&packet[6], seq);
  std::memcpy(&packet[kIcmpHeaderSize], &nonce, sizeof nonce);
  // The filler counts up like ping's, so a capture shows where a payload was cut.
  for (size_t i = sizeof nonce; i < static_cast<size_t>(payload_size); ++i) {
    packet[kIcmpHeaderSize + i] = static_cast<uint8_t>(i);
  }
  // ICMPv6 checksums cover a pseudo-header with the source address: raw ICMPv6 sockets always
  // let the kernel write them (RFC 3542 section 3.1), so only IPv4 needs one here.
  if (family == AF_INET) {
    put16(&packet[2], checksum_finish(checksum_add(0, packet.data(), packet.size())));
  }
  return packet;
}

std::vector<uint8_t> build_tcp_syn(int family, uint16_t local_port, uint16_t target_port, uint32_t isn) {
  std::vector<uint8_t> segment(kTcpHeaderSize + kTcpMssOptionSize);
  put16(&segment[0], local_port);
  put16(&segment[2], target_port);
  put32(&segment[4], isn);
  segment[12] = static_cast<uint8_t>((segment.size() / 4) << 4);  // data offset in 32-bit words
  segment[13] = kTcpFlagSyn;
  put16(&segment[14], kTcpWindow);
  segment[20] = kTcpOptionMss;
  segment[21] = kTcpMssOptionSize;
  put16(&segment[22], family == AF_INET ? kTcpMssV4 : kTcpMssV6);
  return segment;
}

void fill_tcp_checksum_v4(std::vector<uint8_t>& segment, in_addr source, const IpAddress& target) {
  std::array<uint8_t, 12> pseudo_header{};
  std::memcpy(&pseudo_header[0], &source, 4);
  std::memcpy(&pseudo_header[4], target.bytes.data(), 4);
  pseudo_header[9] = IPPROTO_TCP;
  put16(&pseudo_header[10], static_cast<uint16_t>(segment.size()));
  uint64_t sum = checksum_add(0, pseudo_header.data(), pseudo_header.size());
  put16(&segment[kTcpChecksumOffset], checksum_finish(checksum_add(sum, segment.data(), segment.size())));
}

// The source address the kernel picks for `target` out of this device with this mark: a
// connected UDP socket runs the same route lookup as the raw socket will, without sending.
int route_source_v4(const IpAddress& target, uint16_t port, const std::string& device, uint32_t mark,
                    in_addr* source) {
  int fd = open_uplink_socket(AF_INET, SOCK_DGRAM, 0, device, mark);
  if (fd < 0) {
    return fd;
  }
  SocketAddress to = socket_address(target, port);
  sockaddr_in local{};
  socklen_t local_size = sizeof local;
  int err = 0;
  if (connect(fd, to.get(), to.size) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&local), &local_size) != 0) {
    err = -errno;
  }
  close_fd(fd);
  if (err == 0) {
    *source = local.sin_addr;
  }
  return err;
}

// Sends an IPv4 segment from `source` exactly: IP_PKTINFO pins the address the checksum was
// computed for, even if a route changed since route_source_v4 looked.
int send_from_v4(int& fd, const std::vector<uint8_t>& segment, const IpAddress& target, in_addr source,
                 unsigned int ifindex) {
  SocketAddress to = socket_address(target, 0);
  iovec data{const_cast<uint8_t*>(segment.data()), segment.size()};
  alignas(cmsghdr) std::array<uint8_t, CMSG_SPACE(sizeof(in_pktinfo))> control{};
  msghdr message{};
  message.msg_name = const_cast<sockaddr*>(to.get());
  message.msg_namelen = to.size;
  message.msg_iov = &data;
  message.msg_iovlen = 1;
  message.msg_control = control.data();
  message.msg_controllen = control.size();
  cmsghdr* header = CMSG_FIRSTHDR(&message);
  header->cmsg_level = IPPROTO_IP;
  header->cmsg_type = IP_PKTINFO;
  header->cmsg_len = CMSG_LEN(sizeof(in_pktinfo));
  in_pktinfo info{};
  info.ipi_ifindex = static_cast<int>(ifindex);
  info.ipi_spec_dst = source;
  std::memcpy(CMSG_DATA(header), &info, sizeof info);
  if (sendmsg(fd, &message, 0) >= 0) {
    return 0;
  }
  int err = -errno;
  close_fd(fd);
  return err;
}

// `qname` in DNS wire form (length-prefixed labels, root label last), or nullopt if it is not a
// valid name. One trailing dot is accepted; "" and "." are the root.
std::optional<std::vector<uint8_t>> encode_dns_name(const std::string& qname) {
  std::string_view name = qname;
  if (!name.empty() && name.back() == '.') {
    name.remove_suffix(1);
  }
  std::vector<uint8_t> wire;
  while (!name.empty()) {
    size_t dot = name.find('.');
    std::string_view label = name.substr(0, dot);
    if (label.empty() || label.size() > kMaxDnsLabelLength) {
      return std::nullopt;
    }
    wire.push_back(static_cast<uint8_t>(label.size()));
    wire.insert(wire.end(), label.begin(), label.end());
    name = dot == std::string_view::npos ? std::string_view{} : name.substr(dot + 1);
    if (dot != std::string_view::npos && name.empty()) {
      return std::nullopt;  // "a..b" or "a.."
    }
  }
  wire.push_back(0);
  if (wire.size() > kMaxDnsNameLength) {
    return std::nullopt;
  }
  return wire;
}

std::optional<std::vector<uint8_t>> build_dns_query(uint16_t query_id, const std::string& qname,
                                                    uint16_t qtype) {
  std::optional<std::vector<uint8_t>> name = encode_dns_name(qname);
  if (!name) {
    return std::nullopt;
  }
  std::vector<uint8_t> query(12);
  put16(&query[0], query_id);
  put16(&query[2], kDnsFlagRecursionDesired);
  put16(&query[4], 1);  // one question, no answer, authority or additional records
  query.insert(query.end(), name->begin(), name->end());
  std::array<uint8_t, 4> question_tail{};
  put16(&question_tail[0], qtype);
  put16(&question_tail[2], kDnsClassIn);
  query.insert(query.end(), question_tail.begin(), question_tail.end());
  return query;
}

void clear_pending_error(int fd) {
  int pending = 0;
  socklen_t size = sizeof pending;
  getsockopt(fd, SOL_SOCKET, SO_ERROR, &pending, &size);  // reading SO_ERROR clears it
}

int socket_family(int fd) {
  int domain = 0;
  socklen_t size = sizeof domain;
  return getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &size) == 0 ? domain : -errno;
}

// A UDP socket of the device bound to local_port. IPV6_V6ONLY lets an IPv4 and an IPv6 probe
// use the same port number at once on different uplinks without colliding.
int open_dns_socket(int family, uint16_t local_port, const std::string& device, uint32_t mark, int ttl) {
  int fd = open_uplink_socket(family, SOCK_DGRAM, 0, device, mark);
  if (fd < 0) {
    return fd;
  }
  int err = set_hop_limit(fd, family, ttl);
  if (err == 0 && family == AF_INET6) {
    err = set_int_option(fd, IPPROTO_IPV6, IPV6_V6ONLY, 1);
  }
  if (err == 0) {
    IpAddress any;
    any.family = family;
    SocketAddress local = socket_address(any, local_port);
    if (bind(fd, local.get(), local.size) != 0) {
      err = -errno;
    }
  }
  if (err != 0) {
    close_fd(fd);
  }
  return err != 0 ? err : fd;
}

// ---- the device's addresses, from the kernel's address list --------------------------------

struct DeviceAddress {
  IpAddress address;
  int prefix_length = 0;
  int scope = 0;
};

struct NlSocketCloser {
  void operator()(nl_sock* sock) const { nl_socket_free(sock); }
};
struct NlCacheFreer {
  void operator()(nl_cache* cache) const { nl_cache_free(cache); }
};

// Flags that make an address unfit as a source: not yet usable (DAD), failed DAD, on its way out
// (deprecated), a secondary in a subnet whose primary should speak, or an IPv6 privacy address.
constexpr unsigned int kUnfitAddressFlags =
    IFA_F_TENTATIVE | IFA_F_DADFAILED | IFA_F_DEPRECATED | IFA_F_SECONDARY | IFA_F_TEMPORARY;

// The usable addresses of `ifindex` in `family`, in the kernel's order (for IPv4 the primary of
// each subnet comes first). Empty if the list cannot be read.
std::vector<DeviceAddress> device_addresses(int ifindex, int family) {
  std::vector<DeviceAddress> result;
  std::unique_ptr<nl_sock, NlSocketCloser> sock(nl_socket_alloc());
  if (!sock || nl_connect(sock.get(), NETLINK_ROUTE) < 0) {
    return result;
  }
  nl_cache* raw_cache = nullptr;
  if (rtnl_addr_alloc_cache(sock.get(), &raw_cache) < 0) {
    return result;
  }
  std::unique_ptr<nl_cache, NlCacheFreer> cache(raw_cache);
  for (nl_object* object = nl_cache_get_first(cache.get()); object != nullptr;
       object = nl_cache_get_next(object)) {
    auto* address = reinterpret_cast<rtnl_addr*>(object);
    if (rtnl_addr_get_ifindex(address) != ifindex || rtnl_addr_get_family(address) != family) {
      continue;
    }
    if ((rtnl_addr_get_flags(address) & kUnfitAddressFlags) != 0) {
      continue;
    }
    nl_addr* local = rtnl_addr_get_local(address);
    size_t expected_size = family == AF_INET ? 4 : 16;
    if (local == nullptr || nl_addr_get_len(local) != expected_size) {
      continue;
    }
    DeviceAddress entry;
    entry.address.family = family;
    std::memcpy(entry.address.bytes.data(), nl_addr_get_binary_addr(local), expected_size);
    entry.prefix_length = rtnl_addr_get_prefixlen(address);
    entry.scope = rtnl_addr_get_scope(address);
    result.push_back(entry);
  }
  return result;
}

bool in_subnet_v4(const DeviceAddress& own, const IpAddress& other) {
  if (own.prefix_length <= 0) {
    return true;
  }
  uint32_t mask = own.prefix_length >= 32 ? ~0u : ~(~0u >> own.prefix_length);
  return (ntohl(own.address.v4_network_order()) & mask) == (ntohl(other.v4_network_order()) & mask);
}

struct LinkLayer {
  int ifindex = 0;
  std::array<uint8_t, kEthernetAddressSize> mac{};
};

// The device's ifindex and Ethernet address; -ENODEV if it is gone, -EOPNOTSUPP if it has no
// Ethernet header (PPPoE, raw-IP modems: no ARP there).
int read_link_layer(const std::string& device, LinkLayer* link) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return -errno;
  }
  ifreq request{};
  std::strncpy(request.ifr_name, device.c_str(), IFNAMSIZ - 1);
  int err = 0;
  if (ioctl(fd, SIOCGIFINDEX, &request) != 0) {
    err = -errno;
  }
  if (err == 0) {
    link->ifindex = request.ifr_ifindex;
  }
  if (err == 0 && ioctl(fd, SIOCGIFHWADDR, &request) != 0) {
    err = -errno;
  }
  close_fd(fd);
  if (err != 0) {
    return err;
  }
  if (request.ifr_hwaddr.sa_family != ARPHRD_ETHER) {
    return -EOPNOTSUPP;
  }
  std::memcpy(link->mac.data(), request.ifr_hwaddr.sa_data, kEthernetAddressSize);
  return 0;
}

std::vector<uint8_t> build_arp_request(const LinkLayer& link, const IpAddress& sender,
                                       const IpAddress& target) {
  std::vector<uint8_t> packet(sizeof(arphdr) + 2 * (kEthernetAddressSize + 4));
  put16(&packet[0], ARPHRD_ETHER);
  put16(&packet[2], ETH_P_IP);
  packet[4] = kEthernetAddressSize;
  packet[5] = 4;
  put16(&packet[6], ARPOP_REQUEST);
  uint8_t* at = &packet[sizeof(arphdr)];
  std::memcpy(at, link.mac.data(), kEthernetAddressSize);  // sender hardware address
  std::memcpy(at + 6, sender.bytes.data(), 4);             // sender protocol address
  // target hardware address stays zero: that is what we ask for
  std::memcpy(at + 16, target.bytes.data(), 4);
  return packet;
}

}  // namespace

ProbeTransport::ProbeTransport(std::string device, uint32_t fwmark, int ttl)
    : device_(std::move(device)), fwmark_(fwmark), ttl_(ttl) {}

ProbeTransport::~ProbeTransport() { close_all(); }

void ProbeTransport::close_all() {
  close_fd(icmp4_fd_);
  close_fd(icmp6_fd_);
  close_fd(icmp4_df_fd_);
  close_fd(icmp6_df_fd_);
  close_fd(tcp4_fd_);
  close_fd(tcp6_fd_);
  close_fd(arp_fd_);
  for (auto& [port, fd] : dns_fds_) {
    close_fd(fd);
  }
  dns_fds_.clear();
}

// Raw ICMP sockets get a copy of every ICMP message the device receives. ICMP_FILTER /
// ICMP6_FILTER with every type blocked stops that before the copy is made; the drop-all socket
// filter also catches IPv4 types >= 32, which ICMP_FILTER lets through (block_icmp_copies).
int ProbeTransport::icmp_socket(int family) {
  return open_icmp_socket(family == AF_INET ? icmp4_fd_ : icmp6_fd_, family, false);
}

// send_echo_df's sockets: as icmp_socket's, plus don't-fragment at the device MTU.
int ProbeTransport::icmp_df_socket(int family) {
  return open_icmp_socket(family == AF_INET ? icmp4_df_fd_ : icmp6_df_fd_, family, true);
}

// `fd` when open, else a new raw ICMP socket of `family` on the device stored there.
int ProbeTransport::open_icmp_socket(int& fd, int family, bool dont_fragment) {
  if (fd >= 0) {
    return fd;
  }
  int protocol = family == AF_INET ? int{IPPROTO_ICMP} : int{IPPROTO_ICMPV6};
  int new_fd = open_uplink_socket(family, SOCK_RAW, protocol, device_, fwmark_);
  if (new_fd < 0) {
    return new_fd;
  }
  int err = block_icmp_copies(new_fd, family);
  if (err == 0) {
    err = set_hop_limit(new_fd, family, ttl_);
  }
  if (err == 0 && dont_fragment) {
    err = set_dont_fragment(new_fd, family);
  }
  if (err != 0) {
    close_fd(new_fd);
    return err;
  }
  fd = new_fd;
  return fd;
}

// Raw TCP sockets get a copy of every TCP segment arriving for this host on the device (the
// targets' SYN-ACKs and RSTs, and all other traffic), so they drop everything.
int ProbeTransport::tcp_socket(int family) {
  int& fd = family == AF_INET ? tcp4_fd_ : tcp6_fd_;
  if (fd >= 0) {
    return fd;
  }
  int new_fd = open_uplink_socket(family, SOCK_RAW, IPPROTO_TCP, device_, fwmark_);
  if (new_fd < 0) {
    return new_fd;
  }
  int err = attach_drop_all_filter(new_fd);
  if (err == 0) {
    err = set_hop_limit(new_fd, family, ttl_);
  }
  // IPv6 has no IP_PKTINFO-style source pinning need: the kernel fills the checksum itself,
  // over the pseudo-header of the source it chose.
  if (err == 0 && family == AF_INET6) {
    err = set_int_option(new_fd, IPPROTO_IPV6, IPV6_CHECKSUM, kTcpChecksumOffset);
  }
  if (err != 0) {
    close_fd(new_fd);
    return err;
  }
  fd = new_fd;
  return fd;
}

int ProbeTransport::send_echo(const IpAddress& target, uint16_t ident, uint16_t seq, uint64_t nonce,
                              int payload_size) {
  if (!target.is_v4() && !target.is_v6()) {
    return -EAFNOSUPPORT;
  }
  if (payload_size < static_cast<int>(sizeof nonce) || payload_size > kMaxEchoPayload) {
    return -EINVAL;
  }
  int fd = icmp_socket(target.family);
  if (fd < 0) {
    return fd;
  }
  std::vector<uint8_t> packet = build_echo_request(target.family, ident, seq, nonce, payload_size);
  // Raw sockets take the protocol, not a port, from the address: port 0.
  return send_or_reset(target.is_v4() ? icmp4_fd_ : icmp6_fd_, packet, socket_address(target, 0));
}

int ProbeTransport::send_echo_df(const IpAddress& target, uint16_t ident, uint16_t seq, uint64_t nonce,
                                 int packet_size) {
  if (!target.is_v4() && !target.is_v6()) {
    return -EAFNOSUPPORT;
  }
  // Raw sockets without IP_HDRINCL add a bare IP header: no options, no extension headers.
  const int ip_header = target.is_v4() ? kIpv4HeaderSize : kIpv6HeaderSize;
  const int payload_size = packet_size - ip_header - static_cast<int>(kIcmpHeaderSize);
  if (payload_size < static_cast<int>(sizeof nonce) || payload_size > kMaxEchoPayload) {
    return -EINVAL;
  }
  int fd = icmp_df_socket(target.family);
  if (fd < 0) {
    return fd;
  }
  std::vector<uint8_t> packet = build_echo_request(target.family, ident, seq, nonce, payload_size);
  int& used = target.is_v4() ? icmp4_df_fd_ : icmp6_df_fd_;
  const SocketAddress to = socket_address(target, 0);
  if (sendto(used, packet.data(), packet.size(), 0, to.get(), to.size) >= 0) {
    return 0;
  }
  // Too big for the device is an answer, not a broken socket: keep it for the next size.
  int err = -errno;
  if (err != -EMSGSIZE) {
    close_fd(used);
  }
  return err;
}

int ProbeTransport::send_tcp_syn(const IpAddress& target, uint16_t target_port, uint16_t local_port,
                                 uint32_t isn) {
  if (!target.is_v4() && !target.is_v6()) {
    return -EAFNOSUPPORT;
  }
  int fd = tcp_socket(target.family);
  if (fd < 0) {
    return fd;
  }
  std::vector<uint8_t> segment = build_tcp_syn(target.family, local_port, target_port, isn);
  if (target.is_v6()) {
    return send_or_reset(tcp6_fd_, segment, socket_address(target, 0));
  }

  in_addr source{};
  int err = route_source_v4(target, target_port, device_, fwmark_, &source);
  unsigned int ifindex = err == 0 ? if_nametoindex(device_.c_str()) : 0;
  if (err == 0 && ifindex == 0) {
    err = -ENODEV;
  }
  if (err != 0) {
    close_fd(tcp4_fd_);  // the device is gone or unroutable: start afresh next time, as sends do
    return err;
  }
  fill_tcp_checksum_v4(segment, source, target);
  return send_from_v4(tcp4_fd_, segment, target, source, ifindex);
}

int ProbeTransport::send_dns_query(const IpAddress& target, uint16_t local_port, uint16_t query_id,
                                   const std::string& qname) {
  if (!target.is_v4() && !target.is_v6()) {
    return -EAFNOSUPPORT;
  }
  std::optional<std::vector<uint8_t>> query =
      build_dns_query(query_id, qname, target.is_v4() ? kDnsTypeA : kDnsTypeAaaa);
  if (!query) {
    return -EINVAL;
  }

  return send_held_udp(target, kDnsPort, local_port, *query);
}

// A port already held by an earlier probe keeps its socket; a socket of the other family cannot
// serve this target, and the port is busy for it.
int ProbeTransport::send_held_udp(const IpAddress& target, uint16_t target_port, uint16_t local_port,
                                  const std::vector<uint8_t>& payload) {
  auto held = dns_fds_.find(local_port);
  if (held != dns_fds_.end() && socket_family(held->second) != target.family) {
    return -EADDRINUSE;
  }
  if (held == dns_fds_.end()) {
    int fd = open_dns_socket(target.family, local_port, device_, fwmark_, ttl_);
    if (fd < 0) {
      return fd;
    }
    held = dns_fds_.emplace(local_port, fd).first;
  }
  // An ICMP error to an earlier probe (port unreachable) is pending on a held socket and would
  // fail this send; it belongs to the earlier probe, whose reply the XDP program judges.
  clear_pending_error(held->second);
  // Connecting (again, for a held port) makes the kernel drop datagrams from anyone else.
  SocketAddress server = socket_address(target, target_port);
  if (connect(held->second, server.get(), server.size) == 0 &&
      send(held->second, payload.data(), payload.size(), 0) >= 0) {
    return 0;
  }
  int err = -errno;
  release_dns(local_port);
  return err;
}

// nping --udp sends an empty datagram; ours carries the nonce, which an echo server returns and an
// ICMP port unreachable quotes.
int ProbeTransport::send_udp_probe(const IpAddress& target, uint16_t target_port, uint16_t local_port,
                                   uint64_t nonce) {
  if (!target.is_v4() && !target.is_v6()) {
    return -EAFNOSUPPORT;
  }
  std::vector<uint8_t> payload(sizeof nonce);
  std::memcpy(payload.data(), &nonce, sizeof nonce);
  return send_held_udp(target, target_port, local_port, payload);
}

void ProbeTransport::release_dns(uint16_t local_port) {
  auto held = dns_fds_.find(local_port);
  if (held == dns_fds_.end()) {
    return;
  }
  close_fd(held->second);
  dns_fds_.erase(held);
}

// A packet socket of protocol 0 is never hooked into the receive path, so it gets no copies of
// incoming frames at all; the EtherType is given per frame in sll_protocol. The device is named
// per frame too (sll_ifindex), looked up at each send, so a re-created device is found at once.
int ProbeTransport::send_arp_request(const IpAddress& target) {
  if (!target.is_v4()) {
    return -EAFNOSUPPORT;
  }
  LinkLayer link;
  int err = read_link_layer(device_, &link);
  if (err != 0) {
    return err;
  }
  std::optional<IpAddress> sender = arp_sender_address(link.ifindex, target);
  if (!sender) {
    return -EADDRNOTAVAIL;
  }
  if (arp_fd_ < 0) {
    int fd = socket(AF_PACKET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      return -errno;
    }
    // The mark is for tc programs on the device, which may see it on the way out.
    err = set_int_option(fd, SOL_SOCKET, SO_MARK, static_cast<int>(fwmark_));
    if (err != 0) {
      close_fd(fd);
      return err;
    }
    arp_fd_ = fd;
  }
  sockaddr_ll to{};
  to.sll_family = AF_PACKET;
  to.sll_protocol = htons(ETH_P_ARP);
  to.sll_ifindex = link.ifindex;
  to.sll_halen = kEthernetAddressSize;
  std::memset(to.sll_addr, 0xff, kEthernetAddressSize);  // broadcast
  std::vector<uint8_t> packet = build_arp_request(link, *sender, target);
  if (sendto(arp_fd_, packet.data(), packet.size(), 0, reinterpret_cast<const sockaddr*>(&to), sizeof to) >=
      0) {
    return 0;
  }
  err = -errno;
  close_fd(arp_fd_);
  return err;
}

// Like the kernel's own ARP: the address in the target's subnet speaks, else the first primary.
std::optional<IpAddress> ProbeTransport::arp_sender_address(int ifindex, const IpAddress& target) const {
  std::vector<DeviceAddress> addresses = device_addresses(ifindex, AF_INET);
  for (const DeviceAddress& own : addresses) {
    if (own.scope != RT_SCOPE_HOST && in_subnet_v4(own, target)) {
      return own.address;
    }
  }
  for (const DeviceAddress& own : addresses) {
    if (own.scope != RT_SCOPE_HOST) {
      return own.address;
    }
  }
  return std::nullopt;
}

std::optional<IpAddress> ProbeTransport::source_address(int family) const {
  unsigned int ifindex = if_nametoindex(device_.c_str());
  if (ifindex == 0) {
    return std::nullopt;
  }
  for (const DeviceAddress& own : device_addresses(static_cast<int>(ifindex), family)) {
    if (own.scope == RT_SCOPE_UNIVERSE) {
      return own.address;
    }
  }
  return std::nullopt;
}

}  // namespace uplinkd::health
