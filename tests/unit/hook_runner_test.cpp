// The hook runs as mwan3 runs /etc/mwan3.user: a clean environment with ACTION, INTERFACE and
// DEVICE, one event at a time, in order; a hook that hangs is killed.
#include "daemon/hook_runner.h"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>

namespace {

int64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

class HookRunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/uplinkd-hook-XXXXXX";
    dir_ = mkdtemp(tmpl);
    out_ = dir_ + "/out";
  }
  void TearDown() override { std::system(("rm -rf " + dir_).c_str()); }

  std::string write_hook(const std::string& body) {
    std::string path = dir_ + "/hook";
    std::ofstream(path) << "#!/bin/sh\n" << body;
    chmod(path.c_str(), 0755);
    return path;
  }
  std::string output() const {
    std::ifstream in(out_);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  std::string dir_;
  std::string out_;
};

TEST_F(HookRunnerTest, RunsEventsInOrderWithTheirVariables) {
  // Each hook sleeps a little, so an out-of-order or parallel run would interleave the lines.
  uplinkd::HookRunner hooks(write_hook("sleep 0.05; echo \"$ACTION $INTERFACE $DEVICE\" >> " + out_ + "\n"));
  hooks.enqueue("disconnecting", "wan", "eth1", false);
  hooks.enqueue("disconnected", "wan", "eth1", false);
  hooks.enqueue("ifdown", "wan", "", false);
  hooks.drain(now_ns() + 5000000000LL);
  EXPECT_EQ(output(), "disconnecting wan eth1\ndisconnected wan eth1\nifdown wan \n");
  EXPECT_TRUE(hooks.idle());
}

TEST_F(HookRunnerTest, EnvironmentIsCleanLikeEnvDashI) {
  setenv("UPLINKD_TEST_LEAK", "secret", 1);
  uplinkd::HookRunner hooks(write_hook("env | grep -v '^PWD=' | sort >> " + out_ + "\n"));
  hooks.enqueue("connected", "wanb", "eth2", true);
  hooks.drain(now_ns() + 5000000000LL);
  unsetenv("UPLINKD_TEST_LEAK");
  EXPECT_EQ(
      output(),
      "ACTION=connected\nDEVICE=eth2\nFIRSTCONNECT=1\nINTERFACE=wanb\nPATH=/usr/sbin:/usr/bin:/sbin:/bin\n");
}

// The shipped units run uplinkd at nice -10 (for its probes); a hook is the user's script and runs
// at the default priority, as mwan3's hotplug would run it.
TEST_F(HookRunnerTest, HookRunsAtTheDefaultPriorityWhenTheDaemonsIsRaised) {
  errno = 0;
  const int before = getpriority(PRIO_PROCESS, 0);
  if (setpriority(PRIO_PROCESS, 0, -10) != 0) GTEST_SKIP() << "raising the priority needs CAP_SYS_NICE";
  uplinkd::HookRunner hooks(write_hook("cut -d' ' -f19 /proc/$$/stat >> " + out_ + "\n"));
  hooks.enqueue("connected", "wan", "eth1", false);
  hooks.drain(now_ns() + 5000000000LL);
  setpriority(PRIO_PROCESS, 0, before);
  EXPECT_EQ(output(), "0\n") << "the hook's nice value";
}

TEST_F(HookRunnerTest, AHangingHookIsKilledAtItsTimeLimit) {
  uplinkd::HookRunner hooks(write_hook("sleep 30\n"), 200000000LL /* 0.2 s */);
  hooks.enqueue("connected", "wan", "eth1", false);
  hooks.enqueue("ifup", "wan", "eth1", false);
  const int64_t start = now_ns();
  for (int i = 0; i < 200 && !hooks.idle(); ++i) {  // at most 2 s
    hooks.service(now_ns());
    usleep(10000);
  }
  EXPECT_TRUE(hooks.idle());
  EXPECT_LT(now_ns() - start, 2000000000LL);
}

TEST_F(HookRunnerTest, NoHookPathQueuesNothing) {
  uplinkd::HookRunner hooks("");
  hooks.enqueue("connected", "wan", "eth1", false);
  EXPECT_TRUE(hooks.idle());
}

}  // namespace
