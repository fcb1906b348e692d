// Tests of wan_ingress (tc ingress on uplinks): inbound connections and the probe-reply marker.
//
// Inbound: BPF_PROG_TEST_RUN rows. Each row is the uplink record, the `inbound` entries already
// there, the packets to run (each must pass with its mark untouched: a test run carries no XDP
// metadata), and every `inbound` entry expected afterwards.
//
// Marker: the XDP metadata that tags a probe reply only exists on a real receive path, so those
// rows run on a veth pair in a network namespace this test creates (wanbpf-<pid>) and deletes:
// uplink_ingress (XDP) tags, wan_ingress (tc) marks,
// nftables counters in prerouting see the mark. The root namespace's network is never touched.
// Runs as root.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/if_ether.h>
#include <linux/if_link.h>
#include <linux/if_packet.h>
#include <linux/pkt_cls.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <optional>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include "loader/datapath/kernel_features.h"
#include "maps/uplinkd_maps.h"
#include "packet_builder.h"
#include "test_run.h"
#include "uplink_ingress.skel.h"
#include "wan_ingress.skel.h"

namespace {

using namespace uplinkd::bpftest;
using namespace std::chrono_literals;

constexpr uint64_t kSecondNs = 1'000'000'000;
constexpr uint16_t kUplinkId = 7;
constexpr uint32_t kUplinkMark = 0x0700;
constexpr uint16_t kOtherUplink = 3;
constexpr uint32_t kReplyMark = 0x0700;      // the probe-reply marker's mark, mwan3 style
constexpr uint32_t kReplyMarkMask = 0x3f00;  // mwan3's default mmx_mask

constexpr const char* kRemote = "203.0.113.7";
constexpr const char* kRouter = "192.0.2.2";
constexpr const char* kRemote6 = "2001:db8:ff::7";
constexpr const char* kRouter6 = "2001:db8::2";

bool is_v6(const char* addr) { return std::strchr(addr, ':') != nullptr; }

inbound_key make_inbound_key(const char* raddr, uint16_t rport, uint8_t proto) {
  inbound_key k{};
  if (inet_pton(is_v6(raddr) ? AF_INET6 : AF_INET, raddr, k.raddr) != 1) {
    throw std::invalid_argument(std::string("bad address ") + raddr);
  }
  k.rport = htons(rport);
  k.proto = proto;
  k.family = is_v6(raddr) ? 6 : 4;
  return k;
}

Bytes l2(const char* src, const Bytes& l3, const std::vector<VlanTag>& tags = {}) {
  return ethernet(is_v6(src) ? ETH_P_IPV6 : ETH_P_IP, l3, tags);
}
Bytes ip(const char* src, const char* dst, uint8_t proto, Bytes l4) {
  return is_v6(src) ? ipv6(src, dst, proto, std::move(l4)) : ipv4(src, dst, proto, std::move(l4));
}
// From the remote to the router, as the uplink receives it.
Bytes tcp_in(uint8_t flags, const char* from = kRemote, const char* to = kRouter, uint16_t sport = 51000) {
  return l2(from,
            ip(from, to, IPPROTO_TCP, tcp(sport, 22, 0x1000, (flags & kTcpAck) != 0 ? 0x2000 : 0, flags)));
}
Bytes udp_in(const char* from = kRemote, const char* to = kRouter, uint16_t sport = 5060) {
  return l2(from, ip(from, to, IPPROTO_UDP, udp(sport, 5060, Bytes(20, 0x11))));
}

// ---- rows -------------------------------------------------------------------------------------

enum class Stamp { Now, Kept };

struct InboundRow {  // an entry before or after the row's packets
  inbound_key key;
  uint16_t uplink = kUplinkId;
  uint32_t mark = kUplinkMark;
  uint64_t age_ns = 0;       // before: how old
  Stamp stamp = Stamp::Now;  // after: written by the row, or left as it was
};

struct Case {
  const char* name;
  const char* description;
  bool l3_only = false;
  uint32_t uplink_mark = kUplinkMark;  // uplinks[kUplinkId].mark; 0 = not published yet
  std::vector<InboundRow> before;
  std::vector<Bytes> packets;
  std::vector<InboundRow> after;  // every entry left, in any order
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name << ": " << c.description; }

InboundRow entry(const char* raddr, uint16_t rport, uint8_t proto) {
  return InboundRow{make_inbound_key(raddr, rport, proto)};
}

std::vector<Case> AllCases() {
  const InboundRow syn_entry = entry(kRemote, 51000, IPPROTO_TCP);
  InboundRow fresh = syn_entry;
  fresh.age_ns = kSecondNs / 5;
  InboundRow fresh_kept = fresh;
  fresh_kept.stamp = Stamp::Kept;
  InboundRow old = syn_entry;
  old.age_ns = 5 * kSecondNs;
  InboundRow other_uplink = syn_entry;
  other_uplink.uplink = kOtherUplink;
  other_uplink.mark = 0x0300;
  other_uplink.age_ns = kSecondNs / 5;
  const Bytes datagram = udp(5060, 5060, Bytes(40, 0x22));

  return {
      {.name = "TcpSynRecorded",
       .description = "a SYN without ACK opens an inbound connection: remote address and port recorded",
       .packets = {tcp_in(kTcpSyn)},
       .after = {syn_entry}},
      {.name = "TcpSynAckNotRecorded",
       .description = "a SYN-ACK answers a connection we opened",
       .packets = {tcp_in(kTcpSyn | kTcpAck)}},
      {.name = "TcpAckNotRecorded",
       .description = "mid-connection segments open nothing",
       .packets = {tcp_in(kTcpAck), tcp_in(kTcpRst | kTcpAck)}},
      {.name = "UdpNotRecorded",
       .description = "UDP is not recorded: replies to the LAN's own datagrams must not pin endpoints",
       .packets = {udp_in()}},
      {.name = "Ipv6SynRecordedUdpNot",
       .description = "IPv6: a SYN is recorded with the full source address, UDP is not",
       .packets = {tcp_in(kTcpSyn, kRemote6, kRouter6), udp_in(kRemote6, kRouter6)},
       .after = {entry(kRemote6, 51000, IPPROTO_TCP)}},
      {.name = "IcmpNotRecorded",
       .description = "ICMP has no ports: nothing to key a reply by",
       .packets = {l2(kRemote, ipv4(kRemote, kRouter, IPPROTO_ICMP, icmp_echo(8, 1, 1, Bytes(8, 0))))}},
      {.name = "UdpFragmentsNotRecorded",
       .description = "fragments carry no trustworthy ports (the first one's are keyed 0 like the rest)",
       .packets = {l2(kRemote, ipv4_fragments(kRemote, kRouter, IPPROTO_UDP, datagram, 16)[0]),
                   l2(kRemote, ipv4_fragments(kRemote, kRouter, IPPROTO_UDP, datagram, 16)[1])}},
      {.name = "VlanTaggedSyn",
       .description = "a SYN on a VLAN uplink",
       .packets = {l2(kRemote, ip(kRemote, kRouter, IPPROTO_TCP, tcp(51000, 22, 1, 0, kTcpSyn)),
                      {{ETH_P_8021Q, 253}})},
       .after = {syn_entry}},
      {.name = "L3OnlyUplink",
       .description = "a PPPoE / raw-IP uplink: the frame starts at the IP header",
       .l3_only = true,
       .packets = {ipv4(kRemote, kRouter, IPPROTO_TCP, tcp(51000, 22, 1, 0, kTcpSyn))},
       .after = {syn_entry}},
      {.name = "FreshEntryNotRewritten",
       .description = "an entry of this uplink stamped under a second ago is left alone",
       .before = {fresh},
       .packets = {tcp_in(kTcpSyn)},
       .after = {fresh_kept}},
      {.name = "OldEntryRestamped",
       .description = "an entry of this uplink older than a second is re-stamped",
       .before = {old},
       .packets = {tcp_in(kTcpSyn)},
       .after = {syn_entry}},
      {.name = "OtherUplinkEntryReplaced",
       .description = "the endpoint now comes in on this uplink: the entry moves here whole",
       .before = {other_uplink},
       .packets = {tcp_in(kTcpSyn)},
       .after = {syn_entry}},
      {.name = "UplinkNotPublished",
       .description = "uplinks[id].mark is still 0: nothing to send replies by, nothing recorded",
       .uplink_mark = 0,
       .packets = {tcp_in(kTcpSyn), udp_in()}},
      {.name = "NonIpIgnored",
       .description = "ARP passes untouched",
       .packets = {ethernet(ETH_P_ARP, arp_ipv4(1, kGatewayMac, kRemote, Mac{}, kRouter))}},
  };
}

// ---- the tester -------------------------------------------------------------------------------

class WanProgram {
 public:
  explicit WanProgram(bool l3_only = false, uint32_t prog_flags = 0) {
    skel_ = wan_ingress__open();
    if (skel_ == nullptr) {
      load_err_ = -errno;
      return;
    }
    skel_->rodata->uplink_id = kUplinkId;
    skel_->rodata->reply_mark = kReplyMark;
    skel_->rodata->reply_mark_mask = kReplyMarkMask;
    skel_->rodata->l3_only = l3_only ? 1 : 0;
    if (prog_flags != 0) {
      bpf_program__set_flags(skel_->progs.wan_ingress,
                             bpf_program__flags(skel_->progs.wan_ingress) | prog_flags);
    }
    load_err_ = wan_ingress__load(skel_);
  }
  ~WanProgram() {
    if (skel_ != nullptr) {
      wan_ingress__destroy(skel_);
    }
  }
  WanProgram(const WanProgram&) = delete;
  WanProgram& operator=(const WanProgram&) = delete;

  bool ok() const { return skel_ != nullptr && load_err_ == 0; }
  int load_err() const { return load_err_; }
  wan_ingress* skel() { return skel_; }

  int publish_uplink(uint32_t mark) {
    uint32_t id = kUplinkId;
    uplink_record r{};
    r.state = UPLINK_STATE_ONLINE;
    r.generation = 1;
    r.mark = mark;
    return bpf_map_update_elem(bpf_map__fd(skel_->maps.uplinks), &id, &r, BPF_ANY);
  }
  int add(const InboundRow& row, uint64_t now) {
    inbound_value v{};
    v.last_seen_ns = now - row.age_ns;
    v.mark = row.mark;
    v.uplink_id = row.uplink;
    return bpf_map_update_elem(bpf_map__fd(skel_->maps.inbound), &row.key, &v, BPF_NOEXIST);
  }
  std::optional<inbound_value> get(const inbound_key& key) {
    inbound_value v{};
    if (bpf_map_lookup_elem(bpf_map__fd(skel_->maps.inbound), &key, &v) != 0) {
      return std::nullopt;
    }
    return v;
  }
  size_t count() {
    size_t n = 0;
    inbound_key key{}, next{};
    const inbound_key* prev = nullptr;
    while (bpf_map_get_next_key(bpf_map__fd(skel_->maps.inbound), prev, &next) == 0) {
      n++;
      key = next;
      prev = &key;
    }
    return n;
  }

  // Returns errno of the run (0 on success); *mark_out gets ctx_out's mark.
  int run(const Bytes& frame, uint32_t mark_in, uint32_t* retval, uint32_t* mark_out) {
    __sk_buff ctx_in{}, ctx_out{};
    ctx_in.mark = mark_in;
    const TestRun run = test_run_once(bpf_program__fd(skel_->progs.wan_ingress), frame, ctx_in, &ctx_out, 64);
    *retval = run.retval;
    *mark_out = ctx_out.mark;
    return run.err != 0 ? run.saved_errno : 0;
  }

 private:
  wan_ingress* skel_ = nullptr;
  int load_err_ = -1;
};

class WanIngressTest : public ::testing::TestWithParam<Case> {};

TEST_P(WanIngressTest, Fixture) {
  const Case& c = GetParam();
  SCOPED_TRACE(c.description);
  WanProgram prog(c.l3_only);
  ASSERT_TRUE(prog.ok()) << "loading wan_ingress: " << strerror(-prog.load_err()) << " (run as root)";
  ASSERT_EQ(prog.publish_uplink(c.uplink_mark), 0);
  const uint64_t setup_ns = monotonic_ns();
  for (const InboundRow& row : c.before) {
    ASSERT_EQ(prog.add(row, setup_ns), 0);
  }
  for (size_t i = 0; i < c.packets.size(); i++) {
    SCOPED_TRACE("packet " + std::to_string(i));
    uint32_t retval = 0, mark = 0;
    ASSERT_EQ(prog.run(c.packets[i], 0x5a, &retval, &mark), 0);
    EXPECT_EQ(retval, static_cast<uint32_t>(TC_ACT_OK));
    EXPECT_EQ(mark, 0x5au) << "no probe-reply tag, so the mark stays";
  }
  EXPECT_EQ(prog.count(), c.after.size());
  for (const InboundRow& want : c.after) {
    const std::optional<inbound_value> got = prog.get(want.key);
    ASSERT_TRUE(got.has_value()) << "missing inbound entry for rport " << ntohs(want.key.rport);
    EXPECT_EQ(got->uplink_id, want.uplink);
    EXPECT_EQ(got->mark, want.mark);
    if (want.stamp == Stamp::Now) {
      EXPECT_GE(got->last_seen_ns, setup_ns);
    } else {
      EXPECT_LT(got->last_seen_ns, setup_ns);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Rows, WanIngressTest, ::testing::ValuesIn(AllCases()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return std::string(info.param.name);
                         });

TEST(WanIngressProgram, LoadsUnderStrictAlignment) {
  for (bool l3_only : {false, true}) {
    SCOPED_TRACE(l3_only ? "l3_only" : "ethernet");
    WanProgram prog(l3_only, BPF_F_STRICT_ALIGNMENT);
    EXPECT_TRUE(prog.ok()) << "the verifier log above names the misaligned access";
    if (prog.ok()) {
      bpf_prog_info info{};
      uint32_t len = sizeof info;
      ASSERT_EQ(bpf_obj_get_info_by_fd(bpf_program__fd(prog.skel()->progs.wan_ingress), &info, &len), 0);
      std::printf("wan_ingress (%s) verified_insns: %u\n", l3_only ? "l3_only" : "ethernet",
                  info.verified_insns);
    }
  }
}

// ---- the marker on a real receive path --------------------------------------------------------

constexpr const char* kUplinkAddr = "10.78.0.1";
constexpr const char* kTargetAddr = "10.78.0.2";
constexpr uint8_t kUplinkMacBytes[6] = {0x02, 0x00, 0x00, 0x00, 0x00, 0x01};
constexpr uint8_t kTargetMacBytes[6] = {0x02, 0x00, 0x00, 0x00, 0x00, 0x02};
constexpr uint64_t kNonce = 0x0123456789abcdefull;
constexpr uint16_t kEchoId = 0x4242;
constexpr uint16_t kOurPort = 50053;
constexpr uint16_t kDnsId = 0xbeef;
constexpr auto kWaitLimit = 3s;

int shell(const std::string& cmd, std::string* out = nullptr) {
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (p == nullptr) {
    return -1;
  }
  std::array<char, 512> buf{};
  std::string text;
  while (fgets(buf.data(), buf.size(), p) != nullptr) {
    text += buf.data();
  }
  const int status = pclose(p);
  if (out != nullptr) {
    *out = text;
  }
  return status;
}

bool wait_until(const std::function<bool()>& done) {
  const auto deadline = std::chrono::steady_clock::now() + kWaitLimit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) {
      return true;
    }
    std::this_thread::sleep_for(20ms);
  }
  return done();
}

struct XdpMode {
  const char* name;
  uint32_t flags;
};

void PrintTo(const XdpMode& m, std::ostream* os) { *os << m.name; }

// Topology: veth wu0 (10.78.0.1; XDP uplink_ingress + tc wan_ingress) <-> wu1 (10.78.0.2, the
// "target", whose frames are crafted and sent with an AF_PACKET socket).
class WanMarkerTest : public ::testing::TestWithParam<XdpMode> {
 protected:
  void SetUp() override {
    ns_ = "wanbpf-" + std::to_string(getpid());
    shell("ip netns del " + ns_);
    std::string out;
    ASSERT_EQ(shell("ip netns add " + ns_, &out), 0) << out;
    ns_created_ = true;
    for (const std::string& cmd :
         {std::string("ip link set lo up"),
          std::string(
              "ip link add wu0 address 02:00:00:00:00:01 type veth peer name wu1 address 02:00:00:00:00:02"),
          std::string("ip addr add ") + kUplinkAddr + "/24 dev wu0",
          std::string("ip addr add ") + kTargetAddr + "/24 dev wu1", std::string("ip link set wu0 up"),
          std::string("ip link set wu1 up")}) {
      ASSERT_EQ(shell("ip netns exec " + ns_ + " " + cmd, &out), 0) << cmd << ": " << out;
    }
    // Per kind of packet from the target: "seen" counts all, "marked" those with the reply mark.
    char mark_expr[96];
    std::snprintf(mark_expr, sizeof mark_expr, "meta mark & 0x%x == 0x%x", kReplyMarkMask, kReplyMark);
    std::string rules;
    for (const auto& [tag, match] : std::vector<std::pair<std::string, std::string>>{
             {"echo", "icmp type echo-reply"}, {"dns", "udp sport 53"}}) {
      const std::string m = std::string("iifname \"wu0\" ip saddr ") + kTargetAddr + " " + match;
      rules.append("  ").append(m).append(" counter comment \"").append(tag).append("-seen\"\n");
      rules.append("  ").append(m).append(" ").append(mark_expr);
      rules.append(" counter comment \"").append(tag).append("-marked\"\n");
    }
    const std::string ruleset =
        "table inet wanbpf {\n chain pre {\n  type filter hook prerouting priority 0; policy accept;\n" +
        rules + " }\n}\n";
    FILE* nft = popen(("ip netns exec " + ns_ + " nft -f -").c_str(), "w");
    ASSERT_NE(nft, nullptr);
    fputs(ruleset.c_str(), nft);
    ASSERT_EQ(pclose(nft), 0) << "nft refused:\n" << ruleset;

    orig_ns_ = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    ASSERT_GE(orig_ns_, 0) << strerror(errno);
    const int target = open(("/run/netns/" + ns_).c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(target, 0) << strerror(errno);
    const int err = setns(target, CLONE_NEWNET);
    close(target);
    ASSERT_EQ(err, 0) << "setns: " << strerror(errno);
    entered_ = true;
    wu0_ = static_cast<int>(if_nametoindex("wu0"));
    wu1_ = static_cast<int>(if_nametoindex("wu1"));
    ASSERT_GT(wu0_, 0);
    ASSERT_GT(wu1_, 0);
    attach();
  }

  void attach() {
    xdp_ = uplink_ingress__open();
    ASSERT_NE(xdp_, nullptr);
    xdp_->rodata->uplink_id = kUplinkId;
    xdp_->rodata->tag_replies = uplinkd::datapath::xdp_metadata_supported() ? 1 : 0;
    ASSERT_EQ(uplink_ingress__load(xdp_), 0) << "run as root";
    int err = bpf_xdp_attach(wu0_, bpf_program__fd(xdp_->progs.uplink_ingress),
                             GetParam().flags | XDP_FLAGS_UPDATE_IF_NOEXIST, nullptr);
    ASSERT_EQ(err, 0) << "XDP attach (" << GetParam().name << "): " << strerror(-err);

    // wan_ingress shares `uplinks` with the XDP program the way the daemon's pinning would.
    tc_ = wan_ingress__open();
    ASSERT_NE(tc_, nullptr);
    tc_->rodata->uplink_id = kUplinkId;
    tc_->rodata->reply_mark = kReplyMark;
    tc_->rodata->reply_mark_mask = kReplyMarkMask;
    ASSERT_EQ(bpf_map__reuse_fd(tc_->maps.uplinks, bpf_map__fd(xdp_->maps.uplinks)), 0);
    ASSERT_EQ(wan_ingress__load(tc_), 0);
    uint32_t id = kUplinkId;
    uplink_record record{};
    record.state = UPLINK_STATE_ONLINE;
    record.mark = kUplinkMark;
    ASSERT_EQ(bpf_map_update_elem(bpf_map__fd(xdp_->maps.uplinks), &id, &record, BPF_ANY), 0);

    bpf_tc_hook hook{};
    hook.sz = sizeof hook;
    hook.ifindex = wu0_;
    hook.attach_point = BPF_TC_INGRESS;
    err = bpf_tc_hook_create(&hook);
    ASSERT_TRUE(err == 0 || err == -EEXIST) << "clsact: " << strerror(-err);
    bpf_tc_opts opts{};
    opts.sz = sizeof opts;
    opts.prog_fd = bpf_program__fd(tc_->progs.wan_ingress);
    err = bpf_tc_attach(&hook, &opts);
    ASSERT_EQ(err, 0) << "tc attach: " << strerror(-err);

    sock_ = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
    ASSERT_GE(sock_, 0) << strerror(errno);
  }

  void TearDown() override {
    if (sock_ >= 0) {
      close(sock_);
    }
    if (tc_ != nullptr) {
      wan_ingress__destroy(tc_);
    }
    if (xdp_ != nullptr) {
      uplink_ingress__destroy(xdp_);
    }
    if (orig_ns_ >= 0) {
      if (entered_ && setns(orig_ns_, CLONE_NEWNET) != 0) {
        ADD_FAILURE() << "cannot return to the original netns";
      }
      close(orig_ns_);
    }
    if (ns_created_) {
      shell("ip netns del " + ns_);
    }
  }

  void send(const Bytes& frame) {
    sockaddr_ll to{};
    to.sll_family = AF_PACKET;
    to.sll_ifindex = wu1_;
    to.sll_halen = ETH_ALEN;
    std::memcpy(to.sll_addr, kUplinkMacBytes, ETH_ALEN);
    const ssize_t sent =
        sendto(sock_, frame.data(), frame.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
    ASSERT_EQ(sent, static_cast<ssize_t>(frame.size())) << strerror(errno);
  }

  Bytes frame(const Bytes& l3) {
    Mac dst{}, src{};
    std::memcpy(dst.bytes, kUplinkMacBytes, 6);
    std::memcpy(src.bytes, kTargetMacBytes, 6);
    return ethernet(ETH_P_IP, l3, {}, dst, src);
  }

  uint64_t counter(const std::string& comment) {
    std::string out;
    if (shell("ip netns exec " + ns_ + " nft list chain inet wanbpf pre", &out) != 0) {
      return UINT64_MAX;
    }
    const std::string tag = "comment \"" + comment + "\"";
    size_t start = 0;
    while (start < out.size()) {
      size_t end = out.find('\n', start);
      end = end == std::string::npos ? out.size() : end;
      const std::string line = out.substr(start, end - start);
      const size_t at = line.find("packets ");
      if (line.find(tag) != std::string::npos && at != std::string::npos) {
        return std::stoull(line.substr(at + 8));
      }
      start = end + 1;
    }
    return UINT64_MAX;
  }

  bool has_inbound(uint16_t rport) {
    inbound_key key = make_inbound_key(kTargetAddr, rport, IPPROTO_UDP);
    inbound_value v{};
    return bpf_map_lookup_elem(bpf_map__fd(tc_->maps.inbound), &key, &v) == 0;
  }

  int probes_fd() { return bpf_map__fd(xdp_->maps.probes); }

  std::string ns_;
  bool ns_created_ = false;
  bool entered_ = false;
  int orig_ns_ = -1;
  int wu0_ = 0, wu1_ = 0;
  int sock_ = -1;
  uplink_ingress* xdp_ = nullptr;
  wan_ingress* tc_ = nullptr;
};

TEST_P(WanMarkerTest, MarksMatchedEchoReplyOnly) {
  if (!uplinkd::datapath::xdp_metadata_supported()) {
    GTEST_SKIP() << "this kernel refuses bpf_xdp_adjust_meta, so XDP cannot tag a reply for tc to mark "
                    "(DnsProbeReplyMarkedNotInbound checks that such replies still pass unmarked)";
  }
  const probe_key key = make_probe_key(kUplinkId, kTargetAddr, PROBE_KIND_ICMP, kEchoId, 1);
  const probe_value value{monotonic_ns(), kNonce};
  ASSERT_EQ(bpf_map_update_elem(probes_fd(), &key, &value, BPF_NOEXIST), 0);

  send(icmp_echo_reply_frame(kUplinkMacBytes, kTargetMacBytes, kTargetAddr, kUplinkAddr, kEchoId, 1, kNonce));
  ASSERT_TRUE(wait_until([&] { return counter("echo-seen") == 1; })) << "the reply never reached prerouting";
  EXPECT_EQ(counter("echo-marked"), 1u) << "matched reply reached the stack without the mark";

  // A reply nobody waits for (the probe is gone) and one with a forged nonce: both unmarked.
  send(icmp_echo_reply_frame(kUplinkMacBytes, kTargetMacBytes, kTargetAddr, kUplinkAddr, kEchoId, 1, kNonce));
  ASSERT_EQ(bpf_map_update_elem(probes_fd(), &key, &value, BPF_NOEXIST), 0);
  send(icmp_echo_reply_frame(kUplinkMacBytes, kTargetMacBytes, kTargetAddr, kUplinkAddr, kEchoId, 1,
                             kNonce ^ 0xff));
  ASSERT_TRUE(wait_until([&] { return counter("echo-seen") == 3; })) << "the unmatched replies never arrived";
  EXPECT_EQ(counter("echo-marked"), 1u) << "marked replies: want only the matched one";
}

// A DNS probe's reply is UDP: marked as a probe reply, and not taken for an inbound connection
// (else LAN queries to that resolver would follow whichever uplink probed it last). The same
// datagram unmatched is not recorded either: UDP never is.
TEST_P(WanMarkerTest, DnsProbeReplyMarkedNotInbound) {
  const probe_key key = make_probe_key(kUplinkId, kTargetAddr, PROBE_KIND_DNS, kOurPort, kDnsId);
  const probe_value value{monotonic_ns(), 0};
  ASSERT_EQ(bpf_map_update_elem(probes_fd(), &key, &value, BPF_NOEXIST), 0);
  const Bytes reply = frame(ipv4(kTargetAddr, kUplinkAddr, IPPROTO_UDP,
                                 udp(53, kOurPort, concat(dns_header(kDnsId, true), Bytes(16, 0)))));

  // Where the kernel refuses XDP metadata the reply passes untagged, so unmarked (README).
  const uint64_t marked = uplinkd::datapath::xdp_metadata_supported() ? 1u : 0u;
  send(reply);
  ASSERT_TRUE(wait_until([&] { return counter("dns-seen") == 1; })) << "the reply never reached prerouting";
  EXPECT_EQ(counter("dns-marked"), marked);
  EXPECT_FALSE(has_inbound(53)) << "a probe reply was recorded as an inbound connection";

  send(reply);  // the probe is answered: now it is just a datagram from port 53
  ASSERT_TRUE(wait_until([&] { return counter("dns-seen") == 2; }));
  EXPECT_EQ(counter("dns-marked"), marked);
  EXPECT_FALSE(has_inbound(53));
}

INSTANTIATE_TEST_SUITE_P(XdpModes, WanMarkerTest,
                         ::testing::Values(XdpMode{"Native", XDP_FLAGS_DRV_MODE},
                                           XdpMode{"Generic", XDP_FLAGS_SKB_MODE}),
                         [](const ::testing::TestParamInfo<XdpMode>& info) {
                           return std::string(info.param.name);
                         });

}  // namespace
