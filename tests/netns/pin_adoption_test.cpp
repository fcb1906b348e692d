// The pin directory of a predecessor, on the real BPF filesystem: what survey_pins() reads of it, and
// how set_aside(), migrate_set_aside(), restore_set_aside() and drop_set_aside() move, copy and drop
// pinned maps. bpffs refuses rename(2), so a pin is moved by pinning the object again: these tests
// check the map behind each name by its id, not only that a file exists.
#include "datapath/pin_adoption.h"

#include <bpf/bpf.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <string>

#include "datapath/datapath.h"
#include "maps/uplinkd_maps.h"

namespace uplinkd::datapath {
namespace {

namespace fs = std::filesystem;

uint32_t map_id(int fd) {
  bpf_map_info info{};
  uint32_t len = sizeof info;
  if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) return 0;
  return info.id;
}

// The id of the map pinned at `path`, 0 when nothing is pinned there.
uint32_t pinned_id(const std::string& path) {
  const int fd = bpf_obj_get(path.c_str());
  if (fd < 0) return 0;
  const uint32_t id = map_id(fd);
  close(fd);
  return id;
}

class PinAdoptionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!is_bpffs("/sys/fs/bpf"))
      GTEST_SKIP() << "no BPF filesystem at /sys/fs/bpf (mount -t bpf bpf /sys/fs/bpf)";
    dir_ = "/sys/fs/bpf/uplinkd-pin-adoption-test-" + std::to_string(getpid());
    ASSERT_EQ(mkdir(dir_.c_str(), 0700), 0) << dir_;
  }
  void TearDown() override {
    std::error_code ec;
    if (!dir_.empty()) fs::remove_all(dir_, ec);
  }

  // Creates a hash map with `entries` entries (key i -> value i * 10) pinned as dir_/name; its id.
  uint32_t pin_hash(const std::string& name, uint32_t key_size, uint32_t value_size, uint32_t entries,
                    uint32_t max_entries = 64) {
    const int fd =
        bpf_map_create(BPF_MAP_TYPE_HASH, name.c_str(), key_size, value_size, max_entries, nullptr);
    EXPECT_GE(fd, 0) << "bpf_map_create " << name;
    if (fd < 0) return 0;
    for (uint32_t i = 0; i < entries; ++i) {
      uint64_t key = i, value = uint64_t{i} * 10;
      EXPECT_EQ(bpf_map_update_elem(fd, &key, &value, BPF_ANY), 0);
    }
    EXPECT_EQ(bpf_obj_pin(fd, (dir_ + "/" + name).c_str()), 0);
    const uint32_t id = map_id(fd);
    close(fd);
    return id;
  }

  void pin_daemon_state(uint32_t layout_version, uint32_t pid) {
    const int fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "daemon_state", 4, sizeof(daemon_state), 1, nullptr);
    ASSERT_GE(fd, 0);
    const uint32_t key = 0;
    daemon_state state{};
    state.layout_version = layout_version;
    state.pid = pid;
    ASSERT_EQ(bpf_map_update_elem(fd, &key, &state, BPF_ANY), 0);
    ASSERT_EQ(bpf_obj_pin(fd, (dir_ + "/" + UPLINKD_MAP_DAEMON_STATE).c_str()), 0);
    close(fd);
  }

  [[nodiscard]] std::string path(const std::string& name) const { return dir_ + "/" + name; }

  std::string dir_;
};

TEST_F(PinAdoptionTest, SurveyReadsLayoutPidAndForeignFiles) {
  pin_hash(UPLINKD_MAP_FLOWS, 8, 8, 1);
  pin_daemon_state(UPLINKD_MAPS_LAYOUT_VERSION, 4242);
  pin_hash("someone_elses", 8, 8, 0);
  const PinSurvey survey = survey_pins(dir_, {UPLINKD_MAP_FLOWS});
  EXPECT_TRUE(survey.any_maps);
  EXPECT_TRUE(survey.state_present);
  EXPECT_EQ(survey.layout_version, static_cast<uint32_t>(UPLINKD_MAPS_LAYOUT_VERSION));
  EXPECT_EQ(survey.previous_pid, 4242u);
  ASSERT_EQ(survey.foreign.size(), 1u);
  EXPECT_EQ(survey.foreign[0], "someone_elses");
}

TEST_F(PinAdoptionTest, MapsWithoutDaemonStateAreLayoutOne) {
  pin_hash(UPLINKD_MAP_FLOWS, 8, 8, 1);
  const PinSurvey survey = survey_pins(dir_, {UPLINKD_MAP_FLOWS});
  EXPECT_TRUE(survey.any_maps);
  EXPECT_FALSE(survey.state_present);
  EXPECT_EQ(survey.layout_version, 1u);
}

TEST_F(PinAdoptionTest, EmptyDirectoryIsNoPredecessor) {
  const PinSurvey survey = survey_pins(dir_, {UPLINKD_MAP_FLOWS});
  EXPECT_FALSE(survey.any_maps);
  EXPECT_TRUE(survey.foreign.empty());
}

// The same map object, not a copy, ends up under NAME.old, and restore puts that very object back.
TEST_F(PinAdoptionTest, SetAsideMovesTheMapItselfAndRestorePutsItBack) {
  const uint32_t flows = pin_hash(UPLINKD_MAP_FLOWS, 8, 8, 3);
  const uint32_t sticky = pin_hash(UPLINKD_MAP_STICKY, 8, 8, 1);
  const auto moved = set_aside(dir_, {UPLINKD_MAP_FLOWS, UPLINKD_MAP_STICKY, UPLINKD_MAP_INBOUND});
  ASSERT_EQ(moved.size(), 2u) << "inbound is not pinned, so it is not moved";
  EXPECT_EQ(pinned_id(path(UPLINKD_MAP_FLOWS)), 0u);
  EXPECT_EQ(pinned_id(path(std::string(UPLINKD_MAP_FLOWS) + kSetAsideSuffix)), flows);
  EXPECT_EQ(pinned_id(path(std::string(UPLINKD_MAP_STICKY) + kSetAsideSuffix)), sticky);

  // A failed start: the fresh map it created under the name goes, the predecessor's comes back.
  pin_hash(UPLINKD_MAP_FLOWS, 8, 8, 0);
  restore_set_aside(dir_);
  EXPECT_EQ(pinned_id(path(UPLINKD_MAP_FLOWS)), flows);
  EXPECT_EQ(pinned_id(path(UPLINKD_MAP_STICKY)), sticky);
  EXPECT_FALSE(fs::exists(path(std::string(UPLINKD_MAP_FLOWS) + kSetAsideSuffix)));
}

// A flow table resized (same key and value, more entries): entries carried over. A map whose value
// grew: started empty, and the line says so. Then the start succeeds and the old maps go.
TEST_F(PinAdoptionTest, MigrateCarriesEntriesWhereSizesAgreeAndDropRemovesTheOld) {
  pin_hash(UPLINKD_MAP_FLOWS, 8, 8, 5, 64);
  pin_hash(UPLINKD_MAP_STICKY, 8, 8, 2, 64);
  ASSERT_EQ(set_aside(dir_, {UPLINKD_MAP_FLOWS, UPLINKD_MAP_STICKY}).size(), 2u);
  const uint32_t new_flows = pin_hash(UPLINKD_MAP_FLOWS, 8, 8, 0, 128);
  pin_hash(UPLINKD_MAP_STICKY, 8, 16, 0, 64);

  const std::string line = migrate_set_aside(dir_);
  EXPECT_NE(line.find("carried over: flows (5 entries)"), std::string::npos) << line;
  EXPECT_NE(line.find("started empty: sticky"), std::string::npos) << line;
  const int fd = bpf_obj_get(path(UPLINKD_MAP_FLOWS).c_str());
  ASSERT_GE(fd, 0);
  EXPECT_EQ(map_id(fd), new_flows);
  for (uint64_t key = 0; key < 5; ++key) {
    uint64_t value = 0;
    EXPECT_EQ(bpf_map_lookup_elem(fd, &key, &value), 0) << "key " << key;
    EXPECT_EQ(value, key * 10);
  }
  close(fd);

  drop_set_aside(dir_);
  EXPECT_FALSE(fs::exists(path(std::string(UPLINKD_MAP_FLOWS) + kSetAsideSuffix)));
  EXPECT_FALSE(fs::exists(path(std::string(UPLINKD_MAP_STICKY) + kSetAsideSuffix)));
  EXPECT_EQ(pinned_id(path(UPLINKD_MAP_FLOWS)), new_flows);
}

// A NAME.old an interrupted earlier start left behind does not stop this start from setting aside.
TEST_F(PinAdoptionTest, StaleSetAsideCopyIsReplaced) {
  pin_hash(std::string(UPLINKD_MAP_FLOWS) + kSetAsideSuffix, 8, 8, 0);
  const uint32_t flows = pin_hash(UPLINKD_MAP_FLOWS, 8, 8, 1);
  ASSERT_EQ(set_aside(dir_, {UPLINKD_MAP_FLOWS}).size(), 1u);
  EXPECT_EQ(pinned_id(path(std::string(UPLINKD_MAP_FLOWS) + kSetAsideSuffix)), flows);
}

}  // namespace
}  // namespace uplinkd::datapath
