// MSS clamping (issue 16) on a real device: MssClamp attaches wg_mss to both tc hooks of the
// router's r1 (here a veth with an Ethernet header; WireGuard devices are the same program with
// l3_only), and a real TCP connection from the client to the server through the router negotiates
// the clamped MSS in both directions, its checksums accepted by both ends' kernels (data flows).
// A clamp a predecessor daemon left (restart in place) is taken over and removed when the new
// configuration no longer wants it.
#include "datapath/mss_clamp.h"

#include <bpf/bpf.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <net/if.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "datapath/datapath.h"
#include "datapath/tc_attach.h"
#include "flow_fixture.h"
#include "lifecycle/teardown.h"

namespace uplinkd {
namespace {

using uplinkd::testing::run_command;

class MssClampTest : public testing::FlowRouterTest {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root (namespaces, BPF, tc)";
    if (!datapath::is_bpffs("/sys/fs/bpf"))
      GTEST_SKIP() << "no bpffs at /sys/fs/bpf (mount -t bpf bpf /sys/fs/bpf)";
    ASSERT_NO_FATAL_FAILURE(build_router("h16mss"));
    pin_dir_ = "/sys/fs/bpf/uplinkd-test-mss-" + std::to_string(getpid());
    ASSERT_EQ(mkdir(pin_dir_.c_str(), 0700), 0) << pin_dir_ << ": " << std::strerror(errno);
    r1_ = static_cast<int>(if_nametoindex("r1"));
    ASSERT_GT(r1_, 0);
  }

  void TearDown() override {
    for (int fd : fds_) close(fd);
    lifecycle::set_teardown(lifecycle::Teardown::Full);
    clamp_.reset();
    if (!pin_dir_.empty()) {
      run_command("rm -f " + pin_dir_ + "/*");
      rmdir(pin_dir_.c_str());
    }
    FlowRouterTest::TearDown();
  }

  // The MSS each end of a new connection through the router uses (TCP_MAXSEG), after 64 KiB each
  // way arrived intact.
  std::pair<int, int> connect_and_read_mss() {
    if (listener_ < 0) {  // one for the whole test: the port cannot be bound twice
      listener_ = open_listener(4);
      fds_.push_back(listener_);
    }
    const int listener = listener_;
    int connected = -1;
    const int client = connect_client(&connected);
    fds_.push_back(client);
    EXPECT_EQ(connected, 0) << std::strerror(errno);
    pollfd ready{listener, POLLIN, 0};
    EXPECT_EQ(poll(&ready, 1, 5000), 1) << "no connection to accept within 5 s";
    const int server = accept4(listener, nullptr, nullptr, SOCK_NONBLOCK);
    if (server >= 0) fcntl(server, F_SETFL, 0);
    fds_.push_back(server);
    EXPECT_GE(server, 0);
    timeval tv{5, 0};
    for (int fd : {client, server}) setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    EXPECT_TRUE(moves(client, server, 65536)) << "client -> server";
    EXPECT_TRUE(moves(server, client, 65536)) << "server -> client";
    return {maxseg(client), maxseg(server)};
  }

  static int maxseg(int fd) {
    int mss = 0;
    socklen_t len = sizeof mss;
    getsockopt(fd, IPPROTO_TCP, TCP_MAXSEG, &mss, &len);
    return mss;
  }

  // `bytes` written on `from` all read on `to` (bounded by the receive timeout).
  static bool moves(int from, int to, size_t bytes) {
    std::vector<char> out(bytes, 'u');
    if (send(from, out.data(), out.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(bytes)) return false;
    size_t got = 0;
    std::vector<char> in(bytes);
    for (int i = 0; i < 1000 && got < bytes; ++i) {
      const ssize_t n = recv(to, in.data() + got, bytes - got, 0);
      if (n <= 0) return false;
      got += static_cast<size_t>(n);
    }
    return got == bytes;
  }

  std::string pin_dir_;
  int r1_ = 0;
  std::unique_ptr<datapath::MssClamp> clamp_;
  std::vector<int> fds_;
  int listener_ = -1;
};

TEST_F(MssClampTest, ARealConnectionNegotiatesTheClampBothWays) {
  const auto [client_free, server_free] = connect_and_read_mss();
  EXPECT_GT(client_free, 1400) << "veth at 1500 without a clamp";
  EXPECT_GT(server_free, 1400);

  clamp_ = std::make_unique<datapath::MssClamp>(pin_dir_);
  clamp_->attach(r1_, "r1", false);
  ASSERT_EQ(clamp_->set(r1_, 1000, 0), 0);
  EXPECT_TRUE(datapath::tc::present(r1_, datapath::tc::kMssClampIngress));
  EXPECT_TRUE(datapath::tc::present(r1_, datapath::tc::kMssClampEgress));
  // The client's SYN leaves by r1's egress (the server learns 1000), the server's SYN-ACK comes in
  // by r1's ingress (the client learns 1000). TCP_MAXSEG is that less the timestamp option.
  const auto [client_mss, server_mss] = connect_and_read_mss();
  EXPECT_LE(client_mss, 1000);
  EXPECT_GE(client_mss, 980);
  EXPECT_LE(server_mss, 1000);
  EXPECT_GE(server_mss, 980);
  const datapath::MssClamp::Counters c = clamp_->counters();
  EXPECT_EQ(c.seen_syn, 2U) << "the SYN and the SYN-ACK of the clamped connection";
  EXPECT_EQ(c.clamped, 2U);

  // Cleared: the next connection is its own again; detached: the filters are gone.
  ASSERT_EQ(clamp_->clear(r1_), 0);
  EXPECT_GT(connect_and_read_mss().first, 1400);
  clamp_->detach(r1_);
  EXPECT_FALSE(datapath::tc::present(r1_, datapath::tc::kMssClampIngress));
  EXPECT_FALSE(datapath::tc::present(r1_, datapath::tc::kMssClampEgress));
}

TEST_F(MssClampTest, APredecessorsClampIsTakenOverThenDroppedWhenNoLongerWanted) {
  clamp_ = std::make_unique<datapath::MssClamp>(pin_dir_);
  clamp_->attach(r1_, "r1", false);
  ASSERT_EQ(clamp_->set(r1_, 1000, 0), 0);
  // A restart in place: the old daemon leaves filters and pins for the next one.
  lifecycle::set_teardown(lifecycle::Teardown::Keep);
  clamp_.reset();
  lifecycle::set_teardown(lifecycle::Teardown::Full);
  EXPECT_TRUE(datapath::tc::present(r1_, datapath::tc::kMssClampEgress));
  EXPECT_LE(connect_and_read_mss().first, 1000) << "the clamp keeps working while no daemon runs";

  clamp_ = std::make_unique<datapath::MssClamp>(pin_dir_);
  clamp_->drop_inherited_except({r1_});  // still wanted: untouched
  EXPECT_TRUE(datapath::tc::present(r1_, datapath::tc::kMssClampEgress));
  clamp_->drop_inherited_except({});  // the new configuration has no clamp_mss for it
  EXPECT_FALSE(datapath::tc::present(r1_, datapath::tc::kMssClampIngress));
  EXPECT_FALSE(datapath::tc::present(r1_, datapath::tc::kMssClampEgress));
  EXPECT_GT(connect_and_read_mss().first, 1400);
  clamp_.reset();
  struct stat st {};
  EXPECT_NE(stat((pin_dir_ + "/" + UPLINKD_MAP_MSS_CLAMP).c_str(), &st), 0) << "a full stop removes its pins";
}

}  // namespace
}  // namespace uplinkd
