// A BPF object the benches time: the build's own (its skeleton) or, with a path, a variant or an
// older build's object file given on the command line (`--object`), loaded the same way. Maps and
// programs are found by name, so a variant without a newer map is still usable.
#pragma once

#include <bpf/libbpf.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <string>
#include <utility>

#include "bench/bench_util.h"

namespace uplinkd::bench {

class Object {
 public:
  // `path` empty: the skeleton's object; `open_skeleton()` returns it loaded, `destroy` frees it.
  Object(const std::string& path, const std::function<bpf_object*()>& open_skeleton,
         std::function<void()> destroy, const char* what)
      : path_(path) {
    if (path.empty()) {
      obj_ = open_skeleton();
      destroy_ = std::move(destroy);
    } else {
      obj_ = bpf_object__open_file(path.c_str(), nullptr);
      if (obj_ != nullptr && bpf_object__load(obj_) != 0) {
        bpf_object__close(obj_);
        obj_ = nullptr;
      }
      destroy_ = [this] { bpf_object__close(obj_); };
    }
    if (obj_ == nullptr) {
      throw Failure{std::string("loading ") + what + (path.empty() ? "" : " from " + path) + ": " +
                    std::strerror(errno) + " (run as root)"};
    }
  }
  ~Object() { destroy_(); }
  Object(const Object&) = delete;
  Object& operator=(const Object&) = delete;

  // -1 when the object has no such map (an older variant).
  [[nodiscard]] int map_or_none(const char* name) const {
    return bpf_object__find_map_fd_by_name(obj_, name);
  }
  [[nodiscard]] bool has_map(const char* name) const { return map_or_none(name) >= 0; }
  [[nodiscard]] int map(const char* name) const {
    const int fd = map_or_none(name);
    if (fd < 0) throw Failure{std::string("no map ") + name};
    return fd;
  }
  [[nodiscard]] int prog(const char* name) const {
    bpf_program* p = bpf_object__find_program_by_name(obj_, name);
    if (p == nullptr) throw Failure{std::string("no program ") + name};
    return bpf_program__fd(p);
  }
  // The object file's path; empty for the skeleton's object.
  [[nodiscard]] const std::string& label() const { return path_; }

 private:
  std::string path_;
  bpf_object* obj_ = nullptr;
  std::function<void()> destroy_;
};

}  // namespace uplinkd::bench
