// End-to-end test of the reply marker, on real packets: uplink_ingress (XDP) tags a matched probe
// reply with metadata, uplink_mark (tc ingress) turns the tag into skb->mark, and an nftables
// counter in prerouting proves the packet reached the stack with the mark.
//
// Everything happens inside a network namespace this test creates (ulbpf-<pid>) and deletes in
// TearDown, also after a failure. The test thread enters it with setns() and returns to its
// original namespace before TearDown ends; the root namespace's network is never touched.
// Topology: veth ul0 (10.77.0.1, XDP + tc) <-> ul1 (10.77.0.2, the "target"); the target's
// replies are crafted and sent with an AF_PACKET socket on ul1. Runs as root.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/if_ether.h>
#include <linux/if_link.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include "maps/uplinkd_maps.h"
#include "uplink_ingress.skel.h"
#include "uplink_mark.skel.h"

// Defined in uplink_ingress_test.cpp (same test binary).
namespace uplinkd::bpftest {
using Bytes = std::vector<uint8_t>;
Bytes icmp_echo_reply_frame(const uint8_t (&dst_mac)[6], const uint8_t (&src_mac)[6], const char* src,
                            const char* dst, uint16_t id, uint16_t seq, uint64_t nonce);
probe_key make_probe_key(uint16_t uplink_id, const char* addr, uint8_t kind, uint16_t ident, uint16_t seq);
uint64_t monotonic_ns();
}  // namespace uplinkd::bpftest

namespace {

using namespace uplinkd::bpftest;
using namespace std::chrono_literals;

constexpr uint16_t kUplinkId = 7;
constexpr uint32_t kReplyMark = 0x0700;      // mwan3 style: interface id under the mask
constexpr uint32_t kReplyMarkMask = 0x3f00;  // mwan3's default mmx_mask
constexpr uint64_t kNonce = 0x0123456789abcdefull;
constexpr uint16_t kEchoId = 0x4242;
constexpr const char* kUplinkAddr = "10.77.0.1";
constexpr const char* kTargetAddr = "10.77.0.2";
constexpr uint8_t kUplinkMac[6] = {0x02, 0x00, 0x00, 0x00, 0x00, 0x01};
constexpr uint8_t kTargetMac[6] = {0x02, 0x00, 0x00, 0x00, 0x00, 0x02};
constexpr auto kWaitLimit = 3s;

// Runs a shell command; returns its exit status and puts stdout+stderr in *out.
int run(const std::string& cmd, std::string* out = nullptr) {
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

struct XdpModeParam {
  const char* name;
  uint32_t flags;
};

void PrintTo(const XdpModeParam& p, std::ostream* os) { *os << p.name; }

class UplinkMarkTest : public ::testing::TestWithParam<XdpModeParam> {
 protected:
  void SetUp() override {
    ns_ = "ulbpf-" + std::to_string(getpid());
    run("ip netns del " + ns_);  // left behind by a killed run that had our pid
    std::string out;
    ASSERT_EQ(run("ip netns add " + ns_, &out), 0) << out;
    ns_created_ = true;
    build_topology();
    if (HasFatalFailure()) {
      return;
    }
    enter_namespace();
    if (HasFatalFailure()) {
      return;
    }
    attach_programs();
  }

  void TearDown() override {
    if (sock_ >= 0) {
      close(sock_);
    }
    if (ring_ != nullptr) {
      ring_buffer__free(ring_);
    }
    // The namespace's devices (and the XDP and tc attachments on them) go with the namespace.
    if (mark_ != nullptr) {
      uplink_mark__destroy(mark_);
    }
    if (ingress_ != nullptr) {
      uplink_ingress__destroy(ingress_);
    }
    if (orig_ns_ >= 0) {
      if (entered_ && setns(orig_ns_, CLONE_NEWNET) != 0) {
        ADD_FAILURE() << "cannot return to the original netns";
      }
      close(orig_ns_);
    }
    if (ns_created_) {
      run("ip netns del " + ns_);
    }
  }

  int in_ns(const std::string& cmd, std::string* out = nullptr) {
    return run("ip netns exec " + ns_ + " " + cmd, out);
  }

  void build_topology() {
    const std::vector<std::string> cmds = {
        "ip link set lo up",
        "ip link add ul0 address 02:00:00:00:00:01 type veth peer name ul1 address 02:00:00:00:00:02",
        std::string("ip addr add ") + kUplinkAddr + "/24 dev ul0",
        std::string("ip addr add ") + kTargetAddr + "/24 dev ul1",
        "ip link set ul0 up",
        "ip link set ul1 up",
    };
    for (const auto& cmd : cmds) {
      std::string out;
      ASSERT_EQ(in_ns(cmd, &out), 0) << cmd << ": " << out;
    }
    // "seen" counts every echo reply from the target, "marked" only those carrying the mark.
    const std::string match =
        std::string("iifname \"ul0\" ip saddr ") + kTargetAddr + " icmp type echo-reply";
    char mark_expr[96];
    std::snprintf(mark_expr, sizeof mark_expr, "meta mark & 0x%x == 0x%x", kReplyMarkMask, kReplyMark);
    const std::string ruleset =
        "table inet ulbpf {\n chain pre {\n"
        "  type filter hook prerouting priority 0; policy accept;\n  " +
        match + " counter comment \"seen\"\n  " + match + " " + mark_expr +
        " counter comment \"marked\"\n }\n}\n";
    FILE* nft = popen(("ip netns exec " + ns_ + " nft -f -").c_str(), "w");
    ASSERT_NE(nft, nullptr);
    fputs(ruleset.c_str(), nft);
    ASSERT_EQ(pclose(nft), 0) << "nft refused:\n" << ruleset;
  }

  void enter_namespace() {
    orig_ns_ = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    ASSERT_GE(orig_ns_, 0) << strerror(errno);
    const int target = open(("/run/netns/" + ns_).c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(target, 0) << strerror(errno);
    const int err = setns(target, CLONE_NEWNET);
    close(target);
    ASSERT_EQ(err, 0) << "setns: " << strerror(errno);
    entered_ = true;
    // From here on netlink and ioctls act inside the namespace; make sure it is ours before
    // attaching anything.
    ul0_ = static_cast<int>(if_nametoindex("ul0"));
    ul1_ = static_cast<int>(if_nametoindex("ul1"));
    ASSERT_GT(ul0_, 0);
    ASSERT_GT(ul1_, 0);
  }

  void attach_programs() {
    ingress_ = uplink_ingress__open();
    ASSERT_NE(ingress_, nullptr);
    ingress_->rodata->uplink_id = kUplinkId;
    ASSERT_EQ(uplink_ingress__load(ingress_), 0) << "run as root";
    ring_ =
        ring_buffer__new(bpf_map__fd(ingress_->maps.probe_events), &UplinkMarkTest::on_event, this, nullptr);
    ASSERT_NE(ring_, nullptr);
    int err = bpf_xdp_attach(ul0_, bpf_program__fd(ingress_->progs.uplink_ingress),
                             GetParam().flags | XDP_FLAGS_UPDATE_IF_NOEXIST, nullptr);
    ASSERT_EQ(err, 0) << "XDP attach (" << GetParam().name << "): " << strerror(-err);

    mark_ = uplink_mark__open();
    ASSERT_NE(mark_, nullptr);
    mark_->rodata->reply_mark = kReplyMark;
    mark_->rodata->reply_mark_mask = kReplyMarkMask;
    ASSERT_EQ(uplink_mark__load(mark_), 0);
    bpf_tc_hook hook{};
    hook.sz = sizeof hook;
    hook.ifindex = ul0_;
    hook.attach_point = BPF_TC_INGRESS;
    err = bpf_tc_hook_create(&hook);
    ASSERT_TRUE(err == 0 || err == -EEXIST) << "clsact: " << strerror(-err);
    bpf_tc_opts opts{};
    opts.sz = sizeof opts;
    opts.prog_fd = bpf_program__fd(mark_->progs.uplink_mark);
    err = bpf_tc_attach(&hook, &opts);
    ASSERT_EQ(err, 0) << "tc attach: " << strerror(-err);

    sock_ = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);  // protocol 0: send only
    ASSERT_GE(sock_, 0) << strerror(errno);
  }

  void send_reply(uint16_t seq, uint64_t nonce) {
    const Bytes frame =
        icmp_echo_reply_frame(kUplinkMac, kTargetMac, kTargetAddr, kUplinkAddr, kEchoId, seq, nonce);
    sockaddr_ll to{};
    to.sll_family = AF_PACKET;
    to.sll_ifindex = ul1_;
    to.sll_halen = ETH_ALEN;
    std::memcpy(to.sll_addr, kUplinkMac, ETH_ALEN);
    const ssize_t sent =
        sendto(sock_, frame.data(), frame.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
    ASSERT_EQ(sent, static_cast<ssize_t>(frame.size())) << strerror(errno);
  }

  uint64_t nft_counter(const std::string& comment) {
    std::string out;
    if (in_ns("nft list chain inet ulbpf pre", &out) != 0) {
      return UINT64_MAX;
    }
    const std::string tag = "comment \"" + comment + "\"";
    size_t line_start = 0;
    while (line_start < out.size()) {
      size_t line_end = out.find('\n', line_start);
      if (line_end == std::string::npos) {
        line_end = out.size();
      }
      const std::string line = out.substr(line_start, line_end - line_start);
      const size_t at = line.find("packets ");
      if (line.find(tag) != std::string::npos && at != std::string::npos) {
        return std::stoull(line.substr(at + 8));
      }
      line_start = line_end + 1;
    }
    return UINT64_MAX;
  }

  static int on_event(void* self, void* data, size_t size) {
    probe_reply_event e{};
    std::memcpy(&e, data, std::min(size, sizeof e));
    static_cast<UplinkMarkTest*>(self)->events_.push_back(e);
    return 0;
  }

  std::string ns_;
  bool ns_created_ = false;
  bool entered_ = false;
  int orig_ns_ = -1;
  int ul0_ = 0, ul1_ = 0;
  int sock_ = -1;
  uplink_ingress* ingress_ = nullptr;
  uplink_mark* mark_ = nullptr;
  ring_buffer* ring_ = nullptr;
  std::vector<probe_reply_event> events_;
};

TEST_P(UplinkMarkTest, MarksMatchedReplyOnly) {
  const probe_key key = make_probe_key(kUplinkId, kTargetAddr, PROBE_KIND_ICMP, kEchoId, 1);
  const probe_value value{monotonic_ns(), kNonce};
  const int probes = bpf_map__fd(ingress_->maps.probes);
  ASSERT_EQ(bpf_map_update_elem(probes, &key, &value, BPF_NOEXIST), 0);

  send_reply(1, kNonce);
  ASSERT_TRUE(wait_until([&] { return nft_counter("seen") == 1; })) << "the reply never reached prerouting";
  EXPECT_EQ(nft_counter("marked"), 1u) << "matched reply reached the stack without the mark";
  ring_buffer__consume(ring_);
  ASSERT_EQ(events_.size(), 1u);
  EXPECT_EQ(std::memcmp(&events_[0].key, &key, sizeof key), 0);
  EXPECT_EQ(events_[0].ifindex, static_cast<uint32_t>(ul0_));
  probe_value left{};
  EXPECT_NE(bpf_map_lookup_elem(probes, &key, &left), 0) << "the matched probe is still outstanding";

  // A reply nobody waits for (the probe is gone) and one with a forged nonce: both unmarked.
  send_reply(1, kNonce);
  ASSERT_EQ(bpf_map_update_elem(probes, &key, &value, BPF_NOEXIST), 0);
  send_reply(1, kNonce ^ 0xff);
  ASSERT_TRUE(wait_until([&] { return nft_counter("seen") == 3; })) << "the unmatched replies never arrived";
  EXPECT_EQ(nft_counter("marked"), 1u) << "marked replies: want only the matched one";
  ring_buffer__consume(ring_);
  EXPECT_EQ(events_.size(), 1u);
}

INSTANTIATE_TEST_SUITE_P(XdpModes, UplinkMarkTest,
                         ::testing::Values(XdpModeParam{"Native", XDP_FLAGS_DRV_MODE},
                                           XdpModeParam{"Generic", XDP_FLAGS_SKB_MODE}),
                         [](const ::testing::TestParamInfo<XdpModeParam>& info) {
                           return std::string(info.param.name);
                         });

}  // namespace
