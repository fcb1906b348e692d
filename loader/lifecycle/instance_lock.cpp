#include "lifecycle/instance_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace uplinkd::lifecycle {
namespace {

std::string errno_text(int err) {
  return std::string(std::strerror(err)) + " (errno " + std::to_string(err) + ")";
}

// /proc/locks names a file as "MAJ:MIN:INODE" with the device in hex.
std::string lock_id_of(const struct stat& st) {
  char id[64];
  std::snprintf(id, sizeof id, "%02x:%02x:%lu", major(st.st_dev), minor(st.st_dev),
                static_cast<unsigned long>(st.st_ino));
  return id;
}

}  // namespace

pid_t flock_holder(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) return 0;
  const std::string wanted = lock_id_of(st);
  std::ifstream locks("/proc/locks");
  std::string line;
  // "1: FLOCK  ADVISORY  WRITE 1234 00:1e:5678 0 EOF"; blocked waiters carry "->" and are skipped.
  for (int i = 0; i < 100000 && std::getline(locks, line); ++i) {
    std::istringstream words(line);
    std::string slot, kind, mode, access, id;
    long pid = 0;
    if (!(words >> slot >> kind)) continue;
    if (kind == "->" || kind != "FLOCK") continue;
    if (!(words >> mode >> access >> pid >> id)) continue;
    if (id == wanted && pid > 0) return static_cast<pid_t>(pid);
  }
  return 0;
}

InstanceLock::InstanceLock(const std::string& pin_dir, const std::string& instance, int inherited_fd) {
  if (inherited_fd >= 0) {
    struct stat held {};
    struct stat dir {};
    if (fstat(inherited_fd, &held) == 0 && stat(pin_dir.c_str(), &dir) == 0 && held.st_dev == dir.st_dev &&
        held.st_ino == dir.st_ino && flock(inherited_fd, LOCK_EX | LOCK_NB) == 0) {
      fd_ = inherited_fd;
      fcntl(fd_, F_SETFD, FD_CLOEXEC);
      return;
    }
    close(inherited_fd);  // not the lock of this instance: take it the normal way
  }
  std::error_code ec;
  std::filesystem::create_directories(pin_dir, ec);
  if (ec) {
    throw std::runtime_error("creating the pin directory " + pin_dir + ": " + ec.message() +
                             " (is a BPF filesystem mounted? `mount -t bpf bpf /sys/fs/bpf`)");
  }
  fd_ = open(pin_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd_ < 0) throw std::runtime_error("opening the pin directory " + pin_dir + ": " + errno_text(errno));
  if (flock(fd_, LOCK_EX | LOCK_NB) == 0) return;
  const int err = errno;
  close(fd_);
  fd_ = -1;
  if (err == EWOULDBLOCK) {
    const pid_t holder = flock_holder(pin_dir);
    throw AlreadyRunning("instance " + instance + " is already running" +
                         (holder > 0 ? " (pid " + std::to_string(holder) + ")" : std::string()) +
                         "; stop it first (`uplinkctl stop`), or start this one with another --instance");
  }
  throw std::runtime_error("locking the pin directory " + pin_dir + ": " + errno_text(err));
}

InstanceLock::~InstanceLock() {
  if (fd_ >= 0) close(fd_);  // releases the lock
}

void InstanceLock::relock_for_this_process(const std::string& pin_dir, const std::string& instance) {
  if (fd_ < 0) return;
  flock(fd_, LOCK_UN);
  if (flock(fd_, LOCK_EX | LOCK_NB) == 0) return;
  const pid_t holder = flock_holder(pin_dir);
  throw AlreadyRunning("instance " + instance + " is already running" +
                       (holder > 0 ? " (pid " + std::to_string(holder) + ")" : std::string()));
}

void InstanceLock::keep_across_exec() {
  if (fd_ >= 0) fcntl(fd_, F_SETFD, 0);
}

}  // namespace uplinkd::lifecycle
