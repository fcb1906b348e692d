// Adopting the pins of a predecessor (a daemon of this instance that crashed, was restarted or was
// upgraded): which maps can be reused as they are, which must be set aside, and what of those is carried
// over. See DESIGN.md, "Lifecycle".
//
// A pinned map is reused when the map ABI's layout version (daemon_state) is this build's and the map
// is what the program object would create (type, key and value size, max_entries, flags). Otherwise its
// pin is moved to NAME_old before the programs load, so they create a fresh map under NAME; after the
// load, entries are copied from NAME_old wherever key and value layout still agree (a flow table resized
// by `option flow_table_size`), and the rest is reported as lost in one log line. The set-aside pins are
// dropped once the start succeeded, or moved back by a failed start (the predecessor's programs still
// use those maps), so a crash at any point leaves something the next start can finish.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

struct bpf_object;

namespace uplinkd::datapath {

// Not ".old": bpffs refuses names with a dot (EPERM), they are reserved for the kernel's own files.
inline constexpr const char* kSetAsideSuffix = "_old";

struct PinSurvey {
  bool any_maps = false;             // a predecessor's maps are pinned here
  bool state_present = false;        // its daemon_state record
  uint32_t layout_version = 0;       // from daemon_state; 1 when maps exist without one (before version 2)
  uint32_t previous_pid = 0;         // the daemon that last wrote daemon_state
  std::vector<std::string> foreign;  // files that are not uplinkd's, left alone
};

// Looks at the pin directory; `known_maps`: every map name uplinkd pins there.
PinSurvey survey_pins(const std::string& pin_dir, const std::vector<std::string>& known_maps);

// Moves every pin among `names` to NAME_old (the whole layout changed): pinned again under the new
// name, then unlinked (bpffs has no rename). Returns the names moved.
std::vector<std::string> set_aside(const std::string& pin_dir, const std::vector<std::string>& names);

// Moves to NAME_old every pinned map of `obj` (opened, pin paths set, not loaded) that the object
// would create differently. Returns "name (why)" for each.
std::vector<std::string> set_aside_incompatible(bpf_object* obj, const std::string& pin_dir);

// After the programs loaded (and so created the fresh maps): copies every set-aside map's entries into
// its successor where the key and value sizes agree. Returns what was carried over and what was lost,
// for the one log line; empty when nothing was set aside.
std::string migrate_set_aside(const std::string& pin_dir);

// The start succeeded: the set-aside maps go (their last users are the predecessor's programs, which
// are replaced by now).
void drop_set_aside(const std::string& pin_dir);
// The start failed: every NAME_old is moved back over NAME, as the predecessor left it.
void restore_set_aside(const std::string& pin_dir);

}  // namespace uplinkd::datapath
