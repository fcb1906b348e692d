// A test in one private network namespace, named <prefix>-<pid>-<n>, that the test thread enters:
// made in SetUp (root needed), the thread put back and the namespace deleted in TearDown.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <unistd.h>

#include <atomic>
#include <string>

#include "netns_fixture.h"

namespace uplinkd::testing {

class OneNamespaceTest : public ::testing::Test {
 protected:
  // Makes the namespace; the caller enters it (enter_netns) once its own setup there is done.
  void create_namespace(const std::string& prefix) {
    static std::atomic<int> counter{0};
    ns_ = prefix + "-" + std::to_string(getpid()) + "-" + std::to_string(counter++);
    original_ = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    ASSERT_GE(original_, 0);
    ASSERT_EQ(run_command("ip netns add " + ns_).status, 0) << "ip netns add " << ns_ << " (root needed)";
    created_ = true;
  }

  void TearDown() override {
    if (original_ >= 0) {
      EXPECT_EQ(setns(original_, CLONE_NEWNET), 0);
      close(original_);
    }
    if (created_) {
      EXPECT_EQ(run_command("ip netns del " + ns_).status, 0) << "ip netns del " << ns_;
    }
  }

  [[nodiscard]] std::string in(const std::string& command) const {
    return "ip netns exec " + ns_ + " " + command;
  }

  std::string ns_;
  int original_ = -1;
  bool created_ = false;
};

}  // namespace uplinkd::testing
