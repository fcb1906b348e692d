// uplinkd: multi-WAN health checking and failover with an eBPF datapath.
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>

#include "common/log.h"
#include "config/config.h"
#include "daemon/daemon.h"
#include "datapath/datapath.h"
#include "lifecycle/instance_lock.h"

namespace uplinkd {
const char* version();
}

namespace {

// Detaches from the terminal the classic way; logs go to syslog from here on.
bool daemonize() {
  pid_t pid = fork();
  if (pid < 0) return false;
  if (pid > 0) _exit(0);
  setsid();
  if (fork() > 0) _exit(0);
  if (chdir("/") != 0) return false;
  FILE* null = std::freopen("/dev/null", "r", stdin);
  (void)null;
  null = std::freopen("/dev/null", "w", stdout);
  null = std::freopen("/dev/null", "w", stderr);
  return true;
}

// Set by a daemon that executes itself again (`uplinkctl restart`): the lock it keeps open across the
// exec, and that it is already detached.
constexpr const char* kLockFdEnv = "UPLINKD_LOCK_FD";
constexpr const char* kRestartedEnv = "UPLINKD_RESTARTED";

int inherited_lock_fd() {
  const char* text = std::getenv(kLockFdEnv);
  const int fd = text != nullptr ? std::atoi(text) : -1;
  unsetenv(kLockFdEnv);
  return fd > 2 ? fd : -1;
}

// The binary to execute for a restart: the path it was started from, so an upgraded package's new
// binary is the one that runs (/proc/self/exe would name the replaced, deleted file).
std::string own_binary_path(const char* argv0) {
  std::error_code ec;
  std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  std::string path = ec ? std::string(argv0) : exe.string();
  const std::string deleted = " (deleted)";
  if (path.size() > deleted.size() &&
      path.compare(path.size() - deleted.size(), deleted.size(), deleted) == 0)
    path.erase(path.size() - deleted.size());
  return path;
}

// Executes the binary again with the same arguments, keeping the instance lock; returns only on failure.
void restart_in_place(const std::string& binary, char** argv, uplinkd::lifecycle::InstanceLock& lock) {
  lock.keep_across_exec();
  setenv(kLockFdEnv, std::to_string(lock.fd()).c_str(), 1);
  setenv(kRestartedEnv, "1", 1);
  execv(binary.c_str(), argv);
  uplinkd::log::error("restart: executing " + binary + ": " + std::strerror(errno) +
                      "; the datapath keeps forwarding: start uplinkd again to adopt it");
}

}  // namespace

// NOLINTNEXTLINE(bugprone-exception-escape): only allocation failure can escape; dying then is right.
int main(int argc, char** argv) {
  uplinkd::DaemonOptions options;
  bool foreground = false;
  bool no_hook = false;
  std::string hook;
  std::string network;
  std::string level = "notice";
  bool check_only = false;

  CLI::App app{"uplinkd: multi-WAN failover with an eBPF datapath; reads the mwan3 configuration"};
  app.set_version_flag("--version", uplinkd::version());
  app.add_option("-c,--config", options.config_path, "mwan3 UCI configuration file")->capture_default_str();
  app.add_option("-n,--network", network, "OpenWrt network configuration (resolves interfaces to devices)");
  app.add_option("-s,--socket", options.socket_path, "control socket path")->capture_default_str();
  app.add_option("-i,--instance", options.instance, "instance name (pins under <bpffs>/uplinkd/<instance>)")
      ->capture_default_str();
  app.add_option("--hook", hook, "hook run on every event (default: /etc/mwan3.user when present)");
  app.add_flag("--no-hook", no_hook, "run no hook");
  app.add_option("--bpffs", options.bpffs, "BPF filesystem mount point")->capture_default_str();
  app.add_option("--state-dir", options.state_dir,
                 "where mwan3's state files go (mwan3/iface_state, mwan3track); '' for none")
      ->capture_default_str();
  app.add_option("--log-level", level, "debug, info, notice, warn, error")->capture_default_str();
  app.add_flag("-f,--foreground", foreground, "stay in the foreground and log to stderr");
  app.add_flag("--check-config", check_only, "parse the configuration, print the result and exit");
  CLI11_PARSE(app, argc, argv);

  uplinkd::log::Level lvl;
  if (!uplinkd::log::parse_level(level, &lvl)) {
    std::fprintf(stderr, "uplinkd: --log-level '%s': expected debug, info, notice, warn or error\n",
                 level.c_str());
    return 2;
  }
  uplinkd::log::set_level(lvl);
  if (!network.empty()) options.network_path = network;
  if (no_hook) {
    options.hook_path.clear();
  } else if (!hook.empty()) {
    options.hook_path = hook;
  } else if (access("/etc/mwan3.user", X_OK) == 0) {
    options.hook_path = "/etc/mwan3.user";
  }
  if (!options.hook_path.empty() && access(options.hook_path.c_str(), X_OK) != 0) {
    std::fprintf(stderr, "uplinkd: hook %s is not an executable file (chmod +x it, or pass --no-hook)\n",
                 options.hook_path.c_str());
    return 2;
  }

  uplinkd::config::Config config;
  try {
    // Rules and policies are checked now too, so their errors name file and line before anything
    // is attached (the daemon compiles them again against the devices present at start).
    config = uplinkd::load_checked_config(options.config_path, options.network_path);
  } catch (const uplinkd::config::ConfigError& e) {
    std::fprintf(stderr, "uplinkd: %s\n", e.what());
    return 2;
  }
  if (check_only) {
    for (const std::string& w : config.warnings) std::fprintf(stderr, "uplinkd: warning: %s\n", w.c_str());
    const std::string warned =
        config.warnings.empty() ? "" : " (" + std::to_string(config.warnings.size()) + " warning(s) above)";
    std::printf("%s: %zu interface(s), %zu member(s), %zu policy(ies), %zu rule(s): OK%s\n",
                config.file.c_str(), config.interfaces.size(), config.members.size(), config.policies.size(),
                config.rules.size(), warned.c_str());
    return 0;
  }

  if (std::string missing = uplinkd::check_privileges(); !missing.empty()) {
    std::fprintf(stderr, "uplinkd: %s\n", missing.c_str());
    return 1;
  }
  if (!uplinkd::datapath::is_bpffs(options.bpffs)) {
    std::fprintf(stderr,
                 "uplinkd: no BPF filesystem at %s: mount it with `mount -t bpf bpf %s` (or pass --bpffs)\n",
                 options.bpffs.c_str(), options.bpffs.c_str());
    return 1;
  }
  // One daemon per instance, decided before anything is touched: a second start changes nothing.
  const std::string pin_dir = options.bpffs + "/uplinkd/" + options.instance;
  const bool restarted = std::getenv(kRestartedEnv) != nullptr;
  unsetenv(kRestartedEnv);
  std::unique_ptr<uplinkd::lifecycle::InstanceLock> lock;
  try {
    lock = std::make_unique<uplinkd::lifecycle::InstanceLock>(pin_dir, options.instance, inherited_lock_fd());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "uplinkd: %s\n", e.what());
    return 1;
  }
  if (!foreground) {
    if (restarted) {
      uplinkd::log::use_syslog(true);  // detached already: the same pid continues
    } else {
      if (!daemonize()) return 1;
      uplinkd::log::use_syslog(true);
      try {
        lock->relock_for_this_process(pin_dir, options.instance);
      } catch (const std::exception& e) {
        uplinkd::log::error(e.what());
        return 1;
      }
    }
  }
  const std::string binary = own_binary_path(argv[0]);
  uplinkd::Daemon::ExitAction action = uplinkd::Daemon::ExitAction::Stop;
  int status = 0;
  try {
    uplinkd::Daemon daemon(options, std::move(config));
    status = daemon.run();
    action = daemon.exit_action();
  } catch (const std::exception& e) {
    uplinkd::log::error(std::string("cannot start: ") + e.what());
    return 1;
  }
  if (action == uplinkd::Daemon::ExitAction::Restart) {
    restart_in_place(binary, argv, *lock);
    return 1;
  }
  return status;
}
