// BPF_PROG_TEST_RUN fixtures for wg_mss (tc ingress and egress on WireGuard devices: TCP MSS
// clamping).
//
// Each row is a description, the clamp the device has (or none), the IP packet going through,
// the packet expected out and the counters the row must add. The expected packets are built by
// packet_builder.h with the clamped MSS, which computes every checksum on its own: a row passes
// only if the program's incremental checksum update agrees with a full computation. Every
// rewritten packet's TCP checksum is also summed here with its pseudo header (sum == 0xffff).
//
// Every row runs twice: on an l3_only instance with the packet as WireGuard carries it (starting
// at the IP header), and on an Ethernet instance with the packet in an Ethernet frame.
//
// The skb's device: ctx ifindex 0 runs the program on loopback, so the clamp is mss_clamp[1].
// Runs as root.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <gtest/gtest.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <netinet/in.h>

#include <cctype>
#include <cstdint>
#include <cstring>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <vector>

#include "maps/uplinkd_maps.h"
#include "packet_builder.h"
#include "test_run.h"
#include "wg_mss.skel.h"

namespace {

using namespace uplinkd::bpftest;

constexpr uint32_t kLoopbackIfindex = 1;  // where BPF_PROG_TEST_RUN runs a tc program

constexpr const char* kClient4 = "10.8.0.2";
constexpr const char* kServer4 = "192.0.2.80";
constexpr const char* kClient6 = "fd00:8::2";
constexpr const char* kServer6 = "2001:db8::80";
constexpr uint16_t kClientPort = 40000, kServerPort = 443;
constexpr uint32_t kIsn = 0x01020304, kServerIsn = 0x0a0b0c0d;

// Options after the MSS as Linux sends them on a SYN: SACK permitted, timestamps, window scale.
const Bytes kSackPermitted{4, 2};
const Bytes kWindowScale{1, 3, 3, 7};  // NOP, then kind 3 length 3 shift 7

bool is_v6(const char* addr) { return std::strchr(addr, ':') != nullptr; }

// ---- packets -----------------------------------------------------------------------------------

Bytes ip_packet(const char* src, const char* dst, uint8_t proto, const Bytes& l4, const Ipv4Options& o = {}) {
  return is_v6(src) ? ipv6(src, dst, proto, l4) : ipv4(src, dst, proto, l4, o);
}

// A SYN (or, with kTcpAck, a SYN-ACK) from the client carrying `options`.
Bytes syn(const char* src, const char* dst, const Bytes& options, uint8_t flags = kTcpSyn,
          const Ipv4Options& o = {}) {
  const uint32_t ack = (flags & kTcpAck) != 0 ? kIsn + 1 : 0;
  const uint32_t seq = (flags & kTcpAck) != 0 ? kServerIsn : kIsn;
  return ip_packet(src, dst, IPPROTO_TCP,
                   tcp_segment(kClientPort, kServerPort, seq, ack, flags, TcpSegment{.options = options}), o);
}

// Linux's SYN options with this MSS.
Bytes linux_options(uint16_t mss) {
  return concat(concat(concat(tcp_mss_option(mss), kSackPermitted), tcp_timestamps(1000, 0)), kWindowScale);
}

Bytes syn4(uint16_t mss, uint8_t flags = kTcpSyn) {
  return syn(kClient4, kServer4, linux_options(mss), flags);
}
Bytes syn6(uint16_t mss, uint8_t flags = kTcpSyn) {
  return syn(kClient6, kServer6, linux_options(mss), flags);
}

Bytes in_ethernet(const Bytes& ip) { return ethernet((ip[0] >> 4) == 6 ? ETH_P_IPV6 : ETH_P_IP, ip); }

// ---- independent checksum check ----------------------------------------------------------------

// An empty string when the TCP checksum of the IP packet at `l3` holds (summed with its pseudo
// header), else what is wrong.
std::string tcp_checksum_problem(const Bytes& frame, size_t l3) {
  const uint8_t* ip = frame.data() + l3;
  uint32_t pseudo = 0;
  const uint8_t* tcp = nullptr;
  size_t len = 0;
  if (ip[0] >> 4 == 4) {
    const size_t ihl = static_cast<size_t>(ip[0] & 0x0f) * 4;
    len = static_cast<size_t>(ip[2] << 8 | ip[3]) - ihl;
    pseudo = sum_words(ip + 12, 8) + IPPROTO_TCP + static_cast<uint32_t>(len);
    tcp = ip + ihl;
  } else {
    len = static_cast<size_t>(ip[4] << 8 | ip[5]);
    pseudo = sum_words(ip + 8, 32) + IPPROTO_TCP + static_cast<uint32_t>(len);
    tcp = ip + 40;
  }
  if (tcp + len > frame.data() + frame.size()) return "the packet is shorter than its IP header says";
  return folded(sum_words(tcp, len, pseudo)) == 0xffff ? "" : "TCP checksum wrong";
}

// ---- the program and its maps ------------------------------------------------------------------

struct Counts {
  uint64_t seen_syn = 0, clamped = 0;
  bool operator==(const Counts& o) const { return seen_syn == o.seen_syn && clamped == o.clamped; }
};

std::ostream& operator<<(std::ostream& os, const Counts& c) {
  return os << "{seen_syn " << c.seen_syn << ", clamped " << c.clamped << "}";
}

class Program {
 public:
  explicit Program(bool l3_only) {
    skel_ = wg_mss__open();
    if (skel_ == nullptr) throw std::runtime_error("opening wg_mss");
    skel_->rodata->l3_only = l3_only ? 1 : 0;
    if (wg_mss__load(skel_) != 0) {
      wg_mss__destroy(skel_);
      skel_ = nullptr;
      throw std::runtime_error("loading wg_mss (run as root; the verifier log is above)");
    }
  }
  ~Program() { wg_mss__destroy(skel_); }
  Program(const Program&) = delete;
  Program& operator=(const Program&) = delete;

  int fd() const { return bpf_program__fd(skel_->progs.wg_mss); }

  void set_clamp(const std::optional<mss_clamp_value>& clamp) {
    const uint32_t key = kLoopbackIfindex;
    const int fd = bpf_map__fd(skel_->maps.mss_clamp);
    if (!clamp) {
      bpf_map_delete_elem(fd, &key);
      return;
    }
    if (bpf_map_update_elem(fd, &key, &*clamp, BPF_ANY) != 0) {
      throw std::runtime_error(std::string("updating mss_clamp: ") + std::strerror(errno));
    }
  }

  Counts counts() const {
    const int cpus = libbpf_num_possible_cpus();
    std::vector<mss_clamp_counters> per_cpu(static_cast<size_t>(cpus));
    const uint32_t key = 0;
    Counts sum;
    EXPECT_EQ(bpf_map_lookup_elem(bpf_map__fd(skel_->maps.mss_counters), &key, per_cpu.data()), 0);
    for (const mss_clamp_counters& c : per_cpu) {
      sum.seen_syn += c.seen_syn;
      sum.clamped += c.clamped;
    }
    return sum;
  }

 private:
  wg_mss* skel_ = nullptr;
};

// ---- rows --------------------------------------------------------------------------------------

struct Row {
  const char* what;
  std::optional<mss_clamp_value> clamp;  // the device's entry; none: no entry
  Bytes in;                              // IP packet
  Bytes out;                             // IP packet expected out
  Counts added;
};

std::ostream& operator<<(std::ostream& os, const Row& r) { return os << r.what; }

constexpr mss_clamp_value kClamp{1300, 1280, 0};  // IPv4 1300, IPv6 1280
constexpr Counts kSeenOnly{1, 0}, kClampedOne{1, 1}, kNothing{0, 0};

Row clamped(const char* what, Bytes in, Bytes out) {
  return Row{what, kClamp, std::move(in), std::move(out), kClampedOne};
}

Row untouched(const char* what, Bytes in, Counts added = kSeenOnly,
              std::optional<mss_clamp_value> clamp = kClamp) {
  Bytes out = in;
  return Row{what, clamp, std::move(in), std::move(out), added};
}

std::vector<Row> Rows() {
  const Ipv4Options ip_options{.ihl = 6};
  std::vector<Row> rows;
  rows.push_back(clamped("IPv4 SYN with MSS 1460, clamp 1300", syn4(1460), syn4(1300)));
  rows.push_back(clamped("IPv6 SYN with MSS 1440, clamp 1280", syn6(1440), syn6(1280)));
  rows.push_back(clamped("IPv4 SYN-ACK", syn4(1460, kTcpSyn | kTcpAck), syn4(1300, kTcpSyn | kTcpAck)));
  rows.push_back(clamped("IPv6 SYN-ACK", syn6(1440, kTcpSyn | kTcpAck), syn6(1280, kTcpSyn | kTcpAck)));
  rows.push_back(clamped("MSS after NOP, NOP, timestamps",
                         syn(kClient4, kServer4, concat(tcp_timestamps(7, 0), tcp_mss_option(1460))),
                         syn(kClient4, kServer4, concat(tcp_timestamps(7, 0), tcp_mss_option(1300)))));
  // One NOP in front puts the MSS value at an odd offset from the TCP header: it straddles two
  // checksum words.
  rows.push_back(clamped("MSS at an odd offset (after one NOP)",
                         syn(kClient4, kServer4, concat(Bytes{1}, tcp_mss_option(1460))),
                         syn(kClient4, kServer4, concat(Bytes{1}, tcp_mss_option(1300)))));
  rows.push_back(clamped("IPv6 MSS at an odd offset",
                         syn(kClient6, kServer6, concat(Bytes{1}, tcp_mss_option(1440))),
                         syn(kClient6, kServer6, concat(Bytes{1}, tcp_mss_option(1280)))));
  rows.push_back(clamped("IPv4 header with options (ihl 6)",
                         syn(kClient4, kServer4, linux_options(1460), kTcpSyn, ip_options),
                         syn(kClient4, kServer4, linux_options(1300), kTcpSyn, ip_options)));
  rows.push_back(clamped("MSS 65535", syn4(65535), syn4(1300)));

  rows.push_back(untouched("MSS below the clamp (1200 vs 1300)", syn4(1200)));
  rows.push_back(untouched("MSS equal to the clamp", syn4(1300)));
  rows.push_back(untouched("IPv6 MSS below the clamp", syn6(1220)));
  rows.push_back(untouched("no MSS option (NOP, window scale, SACK permitted)",
                           syn(kClient4, kServer4, concat(kWindowScale, kSackPermitted))));
  rows.push_back(untouched("no options at all", syn(kClient4, kServer4, {})));
  rows.push_back(untouched("MSS behind EOL is not an option",
                           syn(kClient4, kServer4, concat(Bytes{0, 0, 0, 0}, tcp_mss_option(1460)))));
  rows.push_back(
      untouched("IPv4 clamp 0: IPv4 left alone", syn4(1460), kSeenOnly, mss_clamp_value{0, 1280, 0}));
  rows.push_back(
      untouched("IPv6 clamp 0: IPv6 left alone", syn6(1440), kSeenOnly, mss_clamp_value{1300, 0, 0}));
  rows.push_back(untouched("no entry for the device", syn4(1460), kNothing, std::nullopt));

  rows.push_back(untouched(
      "ACK with payload (and an MSS option) is not a SYN",
      ip_packet(kClient4, kServer4, IPPROTO_TCP,
                tcp_segment(kClientPort, kServerPort, kIsn + 1, kServerIsn + 1, kTcpAck,
                            TcpSegment{.options = tcp_mss_option(1460), .payload = Bytes(100, 0x61)})),
      kNothing));
  rows.push_back(untouched(
      "UDP", ip_packet(kClient4, kServer4, IPPROTO_UDP, udp(kClientPort, 53, Bytes(32, 1))), kNothing));
  rows.push_back(untouched("IPv6 SYN behind a hop-by-hop header",
                           ipv6_ext(kClient6, kServer6, {ipv6_hop_by_hop()}, IPPROTO_TCP,
                                    tcp_segment(kClientPort, kServerPort, kIsn, 0, kTcpSyn,
                                                TcpSegment{.options = linux_options(1440)})),
                           kNothing));
  rows.push_back(untouched(
      "an IPv4 fragment",
      syn(kClient4, kServer4, linux_options(1460), kTcpSyn, Ipv4Options{.frag_off = 0x2000}), kNothing));

  // Malformed: passed as they came.
  rows.push_back(untouched("option length 0 before the MSS",
                           syn(kClient4, kServer4, concat(Bytes{3, 0, 1, 1}, tcp_mss_option(1460)))));
  rows.push_back(untouched("option length 1 before the MSS",
                           syn(kClient4, kServer4, concat(Bytes{3, 1, 1, 1}, tcp_mss_option(1460)))));
  rows.push_back(untouched("an option running past the header",
                           syn(kClient4, kServer4, concat(Bytes{1, 1, 8, 16}, tcp_mss_option(1460)))));
  rows.push_back(untouched("MSS option of length 3", syn(kClient4, kServer4, Bytes{2, 3, 5, 1})));
  rows.push_back(untouched("MSS option of length 6", syn(kClient4, kServer4, Bytes{2, 6, 5, 0xb4, 0, 0})));
  // Data offset 15 (40 bytes of options) over a packet that has 4: the IP length does not cover it.
  rows.push_back(untouched("data offset beyond the packet",
                           ip_packet(kClient4, kServer4, IPPROTO_TCP,
                                     tcp_segment(kClientPort, kServerPort, kIsn, 0, kTcpSyn,
                                                 TcpSegment{.options = tcp_mss_option(1460), .doff = 15})),
                           kNothing));
  rows.push_back(untouched("data offset below 5",
                           ip_packet(kClient4, kServer4, IPPROTO_TCP,
                                     tcp_segment(kClientPort, kServerPort, kIsn, 0, kTcpSyn,
                                                 TcpSegment{.options = tcp_mss_option(1460), .doff = 4})),
                           kNothing));
  rows.push_back(untouched("cut inside the TCP header", truncated(syn4(1460), 20 + 16), kNothing));
  return rows;
}

void run_row(Program& prog, const Row& row, bool l3_only) {
  prog.set_clamp(row.clamp);
  const Bytes in = l3_only ? row.in : in_ethernet(row.in);
  const Bytes out = l3_only ? row.out : in_ethernet(row.out);
  const Counts before = prog.counts();
  __sk_buff ctx{}, ctx_out{};
  const TestRun r = test_run_once(prog.fd(), in, ctx, &ctx_out);
  ASSERT_EQ(r.err, 0) << "BPF_PROG_TEST_RUN: errno " << r.saved_errno;
  // "No opinion": the LAN classifier after it on the same hook still runs.
  EXPECT_EQ(r.retval, static_cast<uint32_t>(TC_ACT_UNSPEC));
  EXPECT_EQ(r.data_out, out) << "the packet out differs from the expected one";
  if (row.added.clamped != 0) {
    EXPECT_EQ(tcp_checksum_problem(r.data_out, l3_only ? 0 : ETH_HLEN), "");
  }
  const Counts after = prog.counts();
  EXPECT_EQ((Counts{after.seen_syn - before.seen_syn, after.clamped - before.clamped}), row.added);
}

class WgMssRowsTest : public ::testing::TestWithParam<Row> {};

TEST_P(WgMssRowsTest, L3Only) {
  Program prog(true);
  run_row(prog, GetParam(), true);
}

TEST_P(WgMssRowsTest, Ethernet) {
  Program prog(false);
  run_row(prog, GetParam(), false);
}

// Test names from the descriptions: letters and digits, the rest as underscores.
std::string RowName(const ::testing::TestParamInfo<Row>& info) {
  std::string name = std::to_string(info.index) + "_";
  for (const char* c = info.param.what; *c != '\0'; ++c)
    name += std::isalnum(static_cast<unsigned char>(*c)) ? *c : '_';
  return name;
}

INSTANTIATE_TEST_SUITE_P(WgMss, WgMssRowsTest, ::testing::ValuesIn(Rows()), RowName);

// The rows' own checksum check would catch a wrong checksum (one bit flipped in it).
TEST(WgMssChecksum, CheckerCatchesABadChecksum) {
  Bytes p = syn4(1460);
  p[20 + 16] ^= 0x01;
  EXPECT_NE(tcp_checksum_problem(p, 0), "");
  EXPECT_EQ(tcp_checksum_problem(syn4(1460), 0), "");
}

// Counters add up over packets, and an Ethernet frame on an l3_only instance is not parsed as IP.
TEST(WgMssCounters, SumOverPackets) {
  Program prog(true);
  prog.set_clamp(kClamp);
  for (int i = 0; i < 3; i++) run_row(prog, clamped("repeat", syn4(1460), syn4(1300)), true);
  run_row(prog, untouched("ethernet frame on l3_only", in_ethernet(syn4(1460)), kNothing), true);
  EXPECT_EQ(prog.counts(), (Counts{3, 3}));
}

}  // namespace
