#include "control/use_runner.h"

#include <bpf/libbpf.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>

#include "use_sock.skel.h"

namespace uplinkd::control {
namespace {

std::string errno_text(int err) {
  return std::string(strerror(err)) + " (errno " + std::to_string(err) + ")";
}

// A cgroup2 mount made here when the mount namespace has none (e.g. under `ip netns exec`, which
// mounts a fresh /sys over the one holding /sys/fs/cgroup). The hierarchy is the same one.
class PrivateCgroupMount {
 public:
  PrivateCgroupMount() {
    char dir[] = "/run/uplinkctl-cgroup.XXXXXX";
    if (mkdtemp(dir) == nullptr) {
      throw std::runtime_error(std::string("no cgroup2 mount, and cannot create a directory for one: ") +
                               errno_text(errno));
    }
    if (mount("cgroup2", dir, "cgroup2", 0, nullptr) != 0) {
      const int err = errno;
      rmdir(dir);
      throw std::runtime_error("no cgroup2 mount in /proc/self/mounts, and mounting one failed: " +
                               errno_text(err) + " (mount cgroup2, e.g. on /sys/fs/cgroup)");
    }
    path_ = dir;
  }
  ~PrivateCgroupMount() {
    umount2(path_.c_str(), MNT_DETACH);
    rmdir(path_.c_str());
  }
  PrivateCgroupMount(const PrivateCgroupMount&) = delete;
  PrivateCgroupMount& operator=(const PrivateCgroupMount&) = delete;
  [[nodiscard]] const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A cgroup directory for one command; removed when empty (a process the command left running keeps
// it, and keeps its binding, until it ends).
class CommandCgroup {
 public:
  explicit CommandCgroup(const std::string& mount) {
    path_ = mount + "/uplinkctl-use." + std::to_string(getpid());
    if (mkdir(path_.c_str(), 0755) != 0) {
      throw std::runtime_error("creating cgroup " + path_ + ": " + errno_text(errno) +
                               " (uplinkctl use must run as root with a writable cgroup2 hierarchy)");
    }
    fd_ = open(path_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd_ < 0) {
      const int err = errno;
      rmdir(path_.c_str());
      throw std::runtime_error("opening cgroup " + path_ + ": " + errno_text(err));
    }
  }
  ~CommandCgroup() {
    close(fd_);
    // The command's exit leaves the cgroup empty a moment after waitpid() returns.
    for (int i = 0; i < 40; ++i) {
      if (rmdir(path_.c_str()) == 0 || errno != EBUSY) return;
      usleep(25000);
    }
    std::fprintf(stderr,
                 "uplinkctl: cgroup %s is still in use by processes the command left behind; "
                 "it stays until they end (rmdir it then)\n",
                 path_.c_str());
  }
  CommandCgroup(const CommandCgroup&) = delete;
  CommandCgroup& operator=(const CommandCgroup&) = delete;
  [[nodiscard]] int fd() const { return fd_; }
  [[nodiscard]] std::string procs() const { return path_ + "/cgroup.procs"; }

 private:
  std::string path_;
  int fd_ = -1;
};

struct SkeletonCloser {
  void operator()(use_sock* s) const { use_sock__destroy(s); }
};
struct LinkCloser {
  void operator()(bpf_link* l) const { bpf_link__destroy(l); }
};

// In the child: join the cgroup, then become the command. Only async-signal-safe calls.
[[noreturn]] void exec_in_cgroup(const std::string& procs, const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  int fd = open(procs.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0 || write(fd, "0", 1) != 1) {
    const char msg[] = "uplinkctl: cannot join the command's cgroup\n";
    [[maybe_unused]] ssize_t n = write(2, msg, sizeof msg - 1);
    _exit(126);
  }
  close(fd);
  execvp(args[0], args.data());
  const int err = errno;
  const char msg[] = "uplinkctl: cannot run the command: ";
  [[maybe_unused]] ssize_t n = write(2, msg, sizeof msg - 1);
  n = write(2, argv[0].c_str(), argv[0].size());
  n = write(2, ": ", 2);
  n = write(2, strerror(err), strlen(strerror(err)));
  n = write(2, "\n", 1);
  _exit(err == ENOENT ? 127 : 126);
}

int wait_for(pid_t child) {
  // Like system(): ^C goes to the command, which decides; uplinkctl waits to clean up after it.
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  struct sigaction old_int {
  }, old_quit{};
  sigaction(SIGINT, &ignore, &old_int);
  sigaction(SIGQUIT, &ignore, &old_quit);
  int status = 0;
  while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGQUIT, &old_quit, nullptr);
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

}  // namespace

std::string find_cgroup2_mount() {
  std::ifstream mounts("/proc/self/mounts");
  std::string line;
  while (std::getline(mounts, line)) {
    std::istringstream fields(line);
    std::string source, target, type;
    fields >> source >> target >> type;
    if (type == "cgroup2") return target;
  }
  return "";
}

int run_bound(const UseTarget& target, const std::vector<std::string>& argv) {
  if (argv.empty()) throw std::runtime_error("use: no command given");
  std::unique_ptr<PrivateCgroupMount> private_mount;
  std::string mount = find_cgroup2_mount();
  if (mount.empty()) {
    private_mount = std::make_unique<PrivateCgroupMount>();
    mount = private_mount->path();
  }
  CommandCgroup cgroup(mount);

  std::unique_ptr<use_sock, SkeletonCloser> skel(use_sock__open());
  if (!skel) throw std::runtime_error("opening the BPF program use_sock: " + errno_text(errno));
  skel->rodata->use_mark = target.mark;
  skel->rodata->use_ifindex = static_cast<uint32_t>(target.ifindex);
  if (int err = use_sock__load(skel.get()); err != 0) {
    throw std::runtime_error("loading the BPF program use_sock: " + errno_text(-err) +
                             " (uplinkctl use needs root: CAP_BPF and CAP_NET_ADMIN)");
  }
  std::unique_ptr<bpf_link, LinkCloser> attachment(
      bpf_program__attach_cgroup(skel->progs.use_sock, cgroup.fd()));
  if (!attachment) {
    throw std::runtime_error("attaching use_sock (cgroup/sock_create) to the command's cgroup: " +
                             errno_text(errno));
  }
  std::fflush(nullptr);
  const pid_t child = fork();
  if (child < 0) throw std::runtime_error("fork: " + errno_text(errno));
  if (child == 0) exec_in_cgroup(cgroup.procs(), argv);
  return wait_for(child);
}

}  // namespace uplinkd::control
