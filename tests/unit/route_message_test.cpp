// rtnetlink notifications to a RouteEventSummary (netlink/route_message.h): each kind of message,
// buffers of several, and the bytes a kernel never sends (cut short, lengths that lie, garbage, any
// alignment). Messages are built here field by field; tests/fuzz/corpus/route_events/ holds real ones
// captured from a kernel, read at the end.
#include "netlink/route_message.h"

#include <gtest/gtest.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <vector>

namespace uplinkd::netlink {
namespace {

using Bytes = std::vector<uint8_t>;

// One netlink message: header, fixed part, attributes; nlmsg_len is set by bytes().
class Message {
 public:
  template <typename Fixed>
  Message(uint16_t type, const Fixed& fixed) : type_(type) {
    append(&fixed, sizeof fixed);
  }
  Message& attr(uint16_t type, const void* data, size_t size) {
    rtattr header{static_cast<unsigned short>(RTA_LENGTH(size)), type};
    append(&header, sizeof header);
    append(data, size);
    return *this;
  }
  Message& attr_u32(uint16_t type, uint32_t value) { return attr(type, &value, sizeof value); }
  Message& attr_string(uint16_t type, const std::string& text) {
    return attr(type, text.c_str(), text.size() + 1);
  }
  [[nodiscard]] Bytes bytes() const {
    nlmsghdr header{};
    header.nlmsg_len = static_cast<uint32_t>(NLMSG_HDRLEN + payload_.size());
    header.nlmsg_type = type_;
    Bytes out(NLMSG_HDRLEN, 0);
    std::memcpy(out.data(), &header, sizeof header);
    out.insert(out.end(), payload_.begin(), payload_.end());
    return out;
  }

 private:
  void append(const void* data, size_t size) {
    const auto* p = static_cast<const uint8_t*>(data);
    payload_.insert(payload_.end(), p, p + size);
    payload_.resize(NLMSG_ALIGN(payload_.size()), 0);
  }
  uint16_t type_;
  Bytes payload_;
};

Bytes link(uint16_t type, int ifindex, const std::string& name, uint32_t change, uint8_t family = AF_UNSPEC) {
  ifinfomsg info{};
  info.ifi_family = family;
  info.ifi_index = ifindex;
  info.ifi_change = change;
  Message m(type, info);
  m.attr_u32(IFLA_MTU, 1500);
  if (!name.empty()) m.attr_string(IFLA_IFNAME, name);
  return m.bytes();
}

Bytes route(uint16_t type, uint8_t table, std::optional<uint32_t> rta_table = std::nullopt,
            uint32_t flags = 0) {
  rtmsg r{};
  r.rtm_family = AF_INET;
  r.rtm_dst_len = 24;
  r.rtm_table = table;
  r.rtm_type = RTN_UNICAST;
  r.rtm_flags = flags;
  Message m(type, r);
  const uint8_t dst[4] = {198, 51, 100, 0};
  m.attr(RTA_DST, dst, sizeof dst);
  if (rta_table) m.attr_u32(RTA_TABLE, *rta_table);
  m.attr_u32(RTA_OIF, 2);
  return m.bytes();
}

Bytes address(uint16_t type, int ifindex) {
  ifaddrmsg a{};
  a.ifa_family = AF_INET;
  a.ifa_prefixlen = 24;
  a.ifa_index = static_cast<uint32_t>(ifindex);
  Message m(type, a);
  const uint8_t local[4] = {192, 0, 2, 2};
  m.attr(IFA_LOCAL, local, sizeof local);
  return m.bytes();
}

Bytes header_only(uint16_t type) {
  nlmsghdr h{};
  h.nlmsg_len = NLMSG_HDRLEN;
  h.nlmsg_type = type;
  Bytes out(sizeof h);
  std::memcpy(out.data(), &h, sizeof h);
  return out;
}

Bytes concat(const std::vector<Bytes>& parts) {
  Bytes out;
  for (const Bytes& p : parts) {
    out.insert(out.end(), p.begin(), p.end());
    out.resize(NLMSG_ALIGN(out.size()), 0);
  }
  return out;
}

RouteEventSummary parse(const Bytes& bytes) { return parse_route_messages(bytes); }

void set_length(Bytes* bytes, uint32_t length) { std::memcpy(bytes->data(), &length, sizeof length); }

constexpr uint32_t kNewDevice = ~0U;

// ---- each kind -------------------------------------------------------------------------------------

TEST(RouteMessage, NewRouteInTheMainTable) {
  RouteEventSummary s = parse(route(RTM_NEWROUTE, RT_TABLE_MAIN));
  EXPECT_TRUE(s.routes);
  EXPECT_FALSE(s.links || s.addresses || s.overrun);
  EXPECT_EQ(s.route_tables, std::vector<uint32_t>{RT_TABLE_MAIN});
  EXPECT_EQ(s.messages, 1U);
  EXPECT_EQ(s.malformed, 0U);
}

TEST(RouteMessage, DeletedRouteCounts) {
  RouteEventSummary s = parse(route(RTM_DELROUTE, RT_TABLE_LOCAL));
  EXPECT_TRUE(s.routes);
  EXPECT_EQ(s.route_tables, std::vector<uint32_t>{RT_TABLE_LOCAL});
}

TEST(RouteMessage, TablesPastTwoFiftyFiveComeFromRtaTable) {
  RouteEventSummary s = parse(route(RTM_NEWROUTE, RT_TABLE_COMPAT, 1000));
  EXPECT_EQ(s.route_tables, std::vector<uint32_t>{1000});
}

TEST(RouteMessage, CachedCloneIsNotATableChange) {
  RouteEventSummary s = parse(route(RTM_NEWROUTE, RT_TABLE_MAIN, std::nullopt, RTM_F_CLONED));
  EXPECT_FALSE(s.routes);
  EXPECT_TRUE(s.route_tables.empty());
  EXPECT_EQ(s.messages, 1U);
}

TEST(RouteMessage, AddressesAddedAndRemoved) {
  EXPECT_TRUE(parse(address(RTM_NEWADDR, 2)).addresses);
  RouteEventSummary s = parse(address(RTM_DELADDR, 2));
  EXPECT_TRUE(s.addresses);
  EXPECT_FALSE(s.links || s.routes);
}

TEST(RouteMessage, NewDeviceIsListedWithItsName) {
  RouteEventSummary s = parse(link(RTM_NEWLINK, 7, "wan2", kNewDevice));
  EXPECT_TRUE(s.links);
  EXPECT_EQ(s.new_links, (std::vector<LinkEvent>{{7, "wan2"}}));
  EXPECT_TRUE(s.deleted_links.empty());
  EXPECT_TRUE(s.link_added(7));
  EXPECT_FALSE(s.link_deleted(7));
}

TEST(RouteMessage, ChangeOfAnExistingDeviceIsALinkChangeOnly) {
  RouteEventSummary s = parse(link(RTM_NEWLINK, 7, "wan2", IFF_UP));
  EXPECT_TRUE(s.links);
  EXPECT_TRUE(s.new_links.empty());
  EXPECT_TRUE(s.deleted_links.empty());
}

TEST(RouteMessage, DeletedDeviceIsListedWithItsName) {
  RouteEventSummary s = parse(link(RTM_DELLINK, 7, "wan2", kNewDevice));
  EXPECT_TRUE(s.links);
  EXPECT_EQ(s.deleted_links, (std::vector<LinkEvent>{{7, "wan2"}}));
  EXPECT_TRUE(s.new_links.empty());
}

TEST(RouteMessage, BridgePortLeavingIsNotADeletedDevice) {
  RouteEventSummary s = parse(link(RTM_DELLINK, 7, "lan1", 0, AF_BRIDGE));
  EXPECT_TRUE(s.links);
  EXPECT_TRUE(s.deleted_links.empty());
}

TEST(RouteMessage, OverrunMessageSaysEventsWereLost) {
  RouteEventSummary s = parse(header_only(NLMSG_OVERRUN));
  EXPECT_TRUE(s.overrun);
  EXPECT_TRUE(s.changed());
}

TEST(RouteMessage, ControlMessagesChangeNothing) {
  RouteEventSummary s =
      parse(concat({header_only(NLMSG_NOOP), header_only(NLMSG_DONE), header_only(RTM_NEWNEIGH)}));
  EXPECT_FALSE(s.changed());
  EXPECT_EQ(s.messages, 3U);
  EXPECT_EQ(s.malformed, 0U);
}

// ---- several -----------------------------------------------------------------------------------------

TEST(RouteMessage, BufferOfSeveralMessages) {
  Bytes buffer = concat({route(RTM_NEWROUTE, RT_TABLE_MAIN), link(RTM_DELLINK, 5, "wan1", kNewDevice),
                         address(RTM_NEWADDR, 6), link(RTM_NEWLINK, 6, "wan1", kNewDevice),
                         route(RTM_DELROUTE, RT_TABLE_COMPAT, 1000), link(RTM_DELLINK, 5, "", kNewDevice),
                         route(RTM_NEWROUTE, RT_TABLE_MAIN)});
  RouteEventSummary s = parse(buffer);
  EXPECT_EQ(s.messages, 7U);
  EXPECT_EQ(s.malformed, 0U);
  EXPECT_TRUE(s.links && s.addresses && s.routes);
  EXPECT_FALSE(s.overrun);
  EXPECT_EQ(s.deleted_links, (std::vector<LinkEvent>{{5, "wan1"}}));  // once
  EXPECT_EQ(s.new_links, (std::vector<LinkEvent>{{6, "wan1"}}));
  EXPECT_EQ(s.route_tables, (std::vector<uint32_t>{RT_TABLE_MAIN, 1000}));
}

TEST(RouteMessage, SummaryAddsUpOverSeveralReads) {
  RouteEventSummary s;
  add_route_messages(link(RTM_DELLINK, 5, "", kNewDevice), &s);
  add_route_messages(link(RTM_DELLINK, 5, "wan1", kNewDevice), &s);  // the name fills in
  add_route_messages(route(RTM_NEWROUTE, 2), &s);
  add_route_messages(route(RTM_NEWROUTE, 1), &s);
  EXPECT_EQ(s.deleted_links, (std::vector<LinkEvent>{{5, "wan1"}}));
  EXPECT_EQ(s.route_tables, (std::vector<uint32_t>{1, 2}));
  EXPECT_EQ(s.messages, 4U);
}

TEST(RouteMessage, LastMessageWithoutPaddingIsWhole) {
  ifaddrmsg a{};
  Message m(RTM_NEWADDR, a);
  Bytes bytes = m.bytes();
  bytes.push_back(0xAB);  // 25 bytes; nlmsg_len says so, no padding after it
  set_length(&bytes, static_cast<uint32_t>(bytes.size()));
  RouteEventSummary s = parse(bytes);
  EXPECT_TRUE(s.addresses);
  EXPECT_EQ(s.malformed, 0U);
}

// ---- cut short -------------------------------------------------------------------------------------

TEST(RouteMessage, EveryCutOfABufferIsReadUpToTheCut) {
  const std::vector<Bytes> parts = {link(RTM_NEWLINK, 6, "wan1", kNewDevice),
                                    route(RTM_NEWROUTE, RT_TABLE_MAIN), address(RTM_DELADDR, 6),
                                    link(RTM_DELLINK, 6, "wan1", kNewDevice)};
  const Bytes buffer = concat(parts);
  std::vector<size_t> ends;  // where each message ends in the buffer
  ends.reserve(parts.size());
  size_t end = 0;
  for (const Bytes& p : parts) ends.push_back(end += NLMSG_ALIGN(p.size()));
  for (size_t cut = 0; cut <= buffer.size(); ++cut) {
    const Bytes head(buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(cut));
    RouteEventSummary s = parse(head);
    size_t whole = 0;
    while (whole < ends.size() && ends[whole] <= cut) ++whole;
    EXPECT_EQ(s.messages, whole) << "cut at " << cut;
    const bool at_boundary = cut == 0 || std::find(ends.begin(), ends.end(), cut) != ends.end();
    EXPECT_EQ(s.malformed, at_boundary ? 0U : 1U) << "cut at " << cut;
    EXPECT_EQ(s.link_added(6), whole >= 1) << "cut at " << cut;
    EXPECT_EQ(s.routes, whole >= 2) << "cut at " << cut;
    EXPECT_EQ(s.link_deleted(6), whole >= 4) << "cut at " << cut;
  }
}

TEST(RouteMessage, MessageTooShortForItsHeaderStillCountsItsKind) {
  Bytes short_route = header_only(RTM_NEWROUTE);
  short_route.insert(short_route.end(), {0, 0, 0, 0});
  set_length(&short_route, static_cast<uint32_t>(short_route.size()));
  RouteEventSummary s = parse(short_route);
  EXPECT_TRUE(s.routes);  // some table changed: the caller must look
  EXPECT_EQ(s.malformed, 1U);

  s = parse(header_only(RTM_DELLINK));
  EXPECT_TRUE(s.links);
  EXPECT_TRUE(s.deleted_links.empty());
  EXPECT_EQ(s.malformed, 1U);

  s = parse(header_only(RTM_NEWADDR));
  EXPECT_TRUE(s.addresses);
  EXPECT_EQ(s.malformed, 1U);
}

TEST(RouteMessage, AttributeLongerThanItsMessageIsNotRead) {
  Bytes bytes = link(RTM_DELLINK, 9, "wan9", kNewDevice);
  // The IFLA_IFNAME attribute is the last one: make it claim more than is left.
  const size_t name_attr = bytes.size() - NLMSG_ALIGN(RTA_LENGTH(5));
  const uint16_t too_long = 200;
  std::memcpy(bytes.data() + name_attr, &too_long, sizeof too_long);
  RouteEventSummary s = parse(bytes);
  EXPECT_EQ(s.deleted_links, (std::vector<LinkEvent>{{9, ""}}));  // the device is known, its name is not
  EXPECT_EQ(s.malformed, 1U);
}

TEST(RouteMessage, NameWithoutTerminatorIsNotTaken) {
  ifinfomsg info{};
  info.ifi_index = 4;
  Message m(RTM_DELLINK, info);
  const std::string unterminated(16, 'x');
  m.attr(IFLA_IFNAME, unterminated.data(), unterminated.size());
  RouteEventSummary s = parse(m.bytes());
  EXPECT_EQ(s.deleted_links, (std::vector<LinkEvent>{{4, ""}}));
}

// ---- lengths that lie, garbage, alignment ------------------------------------------------------------

TEST(RouteMessage, LengthsThatLieStopTheRead) {
  Bytes bytes = concat({route(RTM_NEWROUTE, RT_TABLE_MAIN), route(RTM_NEWROUTE, 7)});
  const size_t second = NLMSG_ALIGN(route(RTM_NEWROUTE, RT_TABLE_MAIN).size());
  for (uint32_t lie : {0U, 1U, 15U, 0xFFFFFFFFU, 0xFFFFFFFCU, static_cast<uint32_t>(bytes.size())}) {
    Bytes copy = bytes;
    std::memcpy(copy.data() + second, &lie, sizeof lie);
    RouteEventSummary s = parse(copy);
    EXPECT_EQ(s.messages, 1U) << "length " << lie;
    EXPECT_EQ(s.malformed, 1U) << "length " << lie;
    EXPECT_EQ(s.route_tables, std::vector<uint32_t>{RT_TABLE_MAIN}) << "length " << lie;
  }
}

TEST(RouteMessage, TrailingBytesShorterThanAHeaderAreMalformed) {
  Bytes bytes = route(RTM_NEWROUTE, RT_TABLE_MAIN);
  bytes.insert(bytes.end(), {1, 2, 3, 4, 5, 6, 7, 8});
  RouteEventSummary s = parse(bytes);
  EXPECT_EQ(s.messages, 1U);
  EXPECT_EQ(s.malformed, 1U);
}

TEST(RouteMessage, EmptyInputIsNothing) {
  RouteEventSummary s = parse({});
  EXPECT_FALSE(s.changed());
  EXPECT_EQ(s.messages, 0U);
  EXPECT_EQ(s.malformed, 0U);
}

TEST(RouteMessage, RandomBytesNeverCrash) {
  std::mt19937 random(11);  // fixed seed: the same inputs every run
  for (int i = 0; i < 20000; ++i) {
    Bytes bytes(random() % 256);
    for (uint8_t& b : bytes) b = static_cast<uint8_t>(random());
    if (bytes.size() >= 4 && i % 2 == 0) {
      set_length(&bytes, static_cast<uint32_t>(random() % (bytes.size() + 8)));  // often plausible
    }
    RouteEventSummary s = parse(bytes);
    EXPECT_LE(s.messages, bytes.size() / NLMSG_HDRLEN);
  }
}

TEST(RouteMessage, AnyAlignmentReadsTheSame) {
  const Bytes buffer =
      concat({link(RTM_NEWLINK, 6, "wan1", kNewDevice), route(RTM_NEWROUTE, RT_TABLE_COMPAT, 300)});
  const RouteEventSummary aligned = parse(buffer);
  for (size_t shift = 1; shift < 8; ++shift) {
    Bytes storage(shift, 0);
    storage.insert(storage.end(), buffer.begin(), buffer.end());
    RouteEventSummary s = parse_route_messages(std::span<const uint8_t>(storage).subspan(shift));
    EXPECT_EQ(s.new_links, aligned.new_links) << "shift " << shift;
    EXPECT_EQ(s.route_tables, aligned.route_tables) << "shift " << shift;
    EXPECT_EQ(s.messages, 2U);
  }
}

// ---- what a kernel sent (tests/fuzz/corpus/route_events, captured in a namespace) ---------------

Bytes captured(const std::string& name) {
  const std::filesystem::path path =
      std::filesystem::path(UPLINKD_SOURCE_DIR) / "tests/fuzz/corpus/route_events" / name;
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

TEST(RouteMessageCaptured, NewDeviceFromTheKernel) {
  RouteEventSummary s = parse(captured("newlink_new_device.bin"));
  EXPECT_EQ(s.new_links, (std::vector<LinkEvent>{{2, "dum1"}}));
  EXPECT_EQ(s.malformed, 0U);
}

TEST(RouteMessageCaptured, DeletedDeviceFromTheKernel) {
  RouteEventSummary s = parse(captured("dellink.bin"));
  EXPECT_EQ(s.deleted_links, (std::vector<LinkEvent>{{3, "dum0"}}));
  EXPECT_TRUE(s.new_links.empty());
  EXPECT_EQ(s.malformed, 0U);
}

TEST(RouteMessageCaptured, RoutesAndAddressesFromTheKernel) {
  EXPECT_EQ(parse(captured("newroute_main.bin")).route_tables, std::vector<uint32_t>{RT_TABLE_MAIN});
  EXPECT_EQ(parse(captured("newroute_local.bin")).route_tables, std::vector<uint32_t>{RT_TABLE_LOCAL});
  EXPECT_EQ(parse(captured("newroute_table_1000.bin")).route_tables, std::vector<uint32_t>{1000});
  for (const char* name : {"newaddr_v4.bin", "newaddr_v6.bin"}) {
    RouteEventSummary s = parse(captured(name));
    EXPECT_TRUE(s.addresses) << name;
    EXPECT_EQ(s.malformed, 0U) << name;
  }
}

TEST(RouteMessageCaptured, DeletingAVethPairFromTheKernel) {
  // 17 notifications of `ip link del dum0` (its peer dum1 goes too), read as one buffer.
  RouteEventSummary s = parse(captured("burst.bin"));
  EXPECT_EQ(s.messages, 17U);
  EXPECT_EQ(s.malformed, 0U);
  EXPECT_TRUE(s.links && s.addresses && s.routes);
  EXPECT_EQ(s.deleted_links, (std::vector<LinkEvent>{{3, "dum0"}, {2, "dum1"}}));
  EXPECT_TRUE(s.new_links.empty());
  EXPECT_EQ(s.route_tables, (std::vector<uint32_t>{RT_TABLE_MAIN, RT_TABLE_LOCAL}));
}

}  // namespace
}  // namespace uplinkd::netlink
