// A paced stream of UDP datagrams for bench/forward_cpu_bench.sh, in one of two shapes:
//   new  every packet a new flow: the router sees a new 5-tuple on every packet, so each one pays
//        the classifier's (or nft's) new-flow path and a conntrack insert, never a flow-table hit;
//   one  every packet on one 5-tuple (source port 40000, destination port 10000): after the first
//        packet each one is a flow-table hit for uplinkd and a conntrack hit with a ct mark to
//        restore for nft (the established path), at a sender cost far below a TCP sender's.
//
//   udp_flood <source IPv4> <destination IPv4> <packets per second> <seconds> [new|one]
//
// The source port walks 1024..65535 and the destination port moves on each time it wraps, so a run
// of up to 64,512 × 50,000 packets repeats no tuple. A raw socket (IP_HDRINCL) writes the headers,
// because a UDP socket per tuple would cost the sender more than the router spends forwarding.
// Pacing is per batch against an absolute schedule, so a slow batch is made up, not lost; the
// packets actually sent, the time taken and the CPU time this process used are printed as
// `sent <n> failed_batches <b> seconds <s> cpu_ns <c>`. veth delivers a packet in its sender's
// softirq, so cpu_ns includes the router's forwarding of every packet that did not wait for
// ksoftirqd: the bench's per-packet cost.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

constexpr unsigned kBatch = 32;
constexpr unsigned kPayload = 18;  // a 64-byte Ethernet frame: 14 + 20 + 8 + 18 + 4 (FCS)
constexpr uint32_t kSourcePorts = 65536 - 1024;
constexpr uint32_t kDestinationPorts = 50000;

struct Datagram {
  iphdr ip;
  udphdr udp;
  std::array<uint8_t, kPayload> payload;
} __attribute__((packed));

struct Options {
  in_addr source{};
  in_addr destination{};
  uint64_t rate_pps = 0;
  uint64_t seconds = 0;
  bool one_flow = false;
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "udp_flood: %s\nusage: udp_flood <source IPv4> <destination IPv4> <packets per second "
               "1..2000000> <seconds 1..120> [new|one]\n",
               why);
  std::exit(2);
}

uint64_t parse_bounded(const char* text, uint64_t lo, uint64_t hi, const char* what) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || v < lo || v > hi) usage(what);
  return v;
}

Options parse(int argc, char** argv) {
  if (argc != 5 && argc != 6) usage("four or five arguments expected");
  Options o;
  if (inet_pton(AF_INET, argv[1], &o.source) != 1) usage("the source is not an IPv4 address");
  if (inet_pton(AF_INET, argv[2], &o.destination) != 1) usage("the destination is not an IPv4 address");
  o.rate_pps = parse_bounded(argv[3], 1, 2000000, "packets per second out of range");
  o.seconds = parse_bounded(argv[4], 1, 120, "seconds out of range");
  if (argc == 6) {
    const std::string shape = argv[5];
    if (shape != "new" && shape != "one") usage("the shape is new or one");
    o.one_flow = shape == "one";
  }
  return o;
}

uint64_t monotonic_ns() {
  timespec t{};
  clock_gettime(CLOCK_MONOTONIC, &t);
  return static_cast<uint64_t>(t.tv_sec) * 1000000000ULL + static_cast<uint64_t>(t.tv_nsec);
}

void sleep_until(uint64_t ns) {
  const timespec t{static_cast<time_t>(ns / 1000000000ULL), static_cast<long>(ns % 1000000000ULL)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, nullptr) == EINTR) {
  }
}

// Packet number n's tuple: a new (source port, destination port) pair for every n in range.
void set_new_flow_ports(Datagram& d, uint64_t n) {
  d.udp.source = htons(static_cast<uint16_t>(1024 + n % kSourcePorts));
  d.udp.dest = htons(static_cast<uint16_t>(10000 + (n / kSourcePorts) % kDestinationPorts));
}

Datagram make_template(const Options& o) {
  Datagram d{};
  d.ip.version = 4;
  d.ip.ihl = 5;
  d.ip.ttl = 64;
  d.ip.protocol = IPPROTO_UDP;
  d.ip.tot_len = htons(sizeof(Datagram));
  d.ip.saddr = o.source.s_addr;
  d.ip.daddr = o.destination.s_addr;  // the kernel fills id and the header checksum
  d.udp.len = htons(sizeof(udphdr) + kPayload);
  d.udp.check = 0;              // no UDP checksum: allowed for IPv4, and nothing on the path verifies it
  d.udp.source = htons(40000);  // the one flow's ports (overwritten per packet for new flows)
  d.udp.dest = htons(10000);
  return d;
}

// This process's user + system time (the kernel's precise runtime, split by ticks), in ns.
uint64_t cpu_ns_used() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  const auto ns = [](const timeval& t) {
    return static_cast<uint64_t>(t.tv_sec) * 1000000000ULL + static_cast<uint64_t>(t.tv_usec) * 1000ULL;
  };
  return ns(u.ru_utime) + ns(u.ru_stime);
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  const int fd = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);
  if (fd < 0) {
    std::fprintf(stderr, "udp_flood: raw socket: %s (needs CAP_NET_RAW)\n", std::strerror(errno));
    return 1;
  }
  std::array<Datagram, kBatch> packets{};
  packets.fill(make_template(o));
  std::array<iovec, kBatch> iov{};
  std::array<mmsghdr, kBatch> msgs{};
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_addr = o.destination;
  for (unsigned i = 0; i < kBatch; ++i) {
    iov[i] = {&packets[i], sizeof(Datagram)};
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
    msgs[i].msg_hdr.msg_name = &to;
    msgs[i].msg_hdr.msg_namelen = sizeof(to);
  }
  const uint64_t total = o.rate_pps * o.seconds;
  const uint64_t start = monotonic_ns();
  uint64_t sent = 0;
  uint64_t failed = 0;
  while (sent < total) {
    const unsigned n = static_cast<unsigned>(std::min<uint64_t>(kBatch, total - sent));
    if (!o.one_flow) {
      for (unsigned i = 0; i < n; ++i) set_new_flow_ports(packets[i], sent + i);
    }
    const int done = sendmmsg(fd, msgs.data(), n, 0);
    if (done <= 0) {
      // A full queue (ENOBUFS) is the router falling behind: count it, go on at the same pace.
      if (++failed > total) break;
      sent += n;
    } else {
      sent += static_cast<uint64_t>(done);
    }
    sleep_until(start + sent * 1000000000ULL / o.rate_pps);
  }
  const double seconds = static_cast<double>(monotonic_ns() - start) / 1e9;
  std::printf("sent %llu failed_batches %llu seconds %.3f cpu_ns %llu\n",
              static_cast<unsigned long long>(sent), static_cast<unsigned long long>(failed), seconds,
              static_cast<unsigned long long>(cpu_ns_used()));
  close(fd);
  return 0;
}
