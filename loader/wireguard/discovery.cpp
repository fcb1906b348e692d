#include "wireguard/discovery.h"

#include <dirent.h>
#include <linux/wireguard.h>
#include <net/if.h>
#include <netlink/cache.h>
#include <netlink/genl/ctrl.h>
#include <netlink/genl/genl.h>
#include <netlink/route/link.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>

#include "netlink/nl_util.h"

namespace uplinkd::wireguard {
namespace {

using netlink::MessagePtr;
using netlink::SocketPtr;

struct CachePutter {
  void operator()(nl_cache* cache) const { nl_cache_free(cache); }
};

std::string errno_sentence(int err) {
  return std::string(std::strerror(err)) + " (errno " + std::to_string(err) + ")";
}

// A UAPI answer is a few hundred bytes per peer; this bounds a stuck or hostile socket.
constexpr size_t kMaxUapiAnswer = 1 << 20;
constexpr int kUapiTimeoutMs = 1000;

struct FdCloser {
  int fd = -1;
  ~FdCloser() {
    if (fd >= 0) close(fd);
  }
};

bool write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t sent = send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (sent < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data.remove_prefix(static_cast<size_t>(sent));
  }
  return true;
}

// Reads until the blank line that ends the answer, EOF, or the deadline.
int read_answer(int fd, std::string* answer) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kUapiTimeoutMs);
  char buffer[4096];
  while (answer->find("\n\n") == std::string::npos && answer->size() < kMaxUapiAnswer) {
    auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return ETIMEDOUT;
    pollfd readable{fd, POLLIN, 0};
    int ready = ::poll(&readable, 1, static_cast<int>(left.count()));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) return ready == 0 ? ETIMEDOUT : errno;
    ssize_t got = recv(fd, buffer, sizeof buffer, 0);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return errno;
    if (got == 0) break;
    answer->append(buffer, static_cast<size_t>(got));
  }
  return 0;
}

struct DumpContext {
  GenlDeviceParser parser;
  std::string error;
};

int on_device_message(nl_msg* message, void* context) {
  auto* dump = static_cast<DumpContext*>(context);
  std::string error;
  if (!dump->parser.add_message(nlmsg_hdr(message), &error) && dump->error.empty()) {
    dump->error = error;
  }
  return NL_OK;
}

}  // namespace

std::vector<std::string> kernel_wireguard_links(std::string* error) {
  std::vector<std::string> names;
  SocketPtr sock = netlink::connect_route_socket();
  nl_cache* raw = nullptr;
  int err = sock ? rtnl_link_alloc_cache(sock.get(), AF_UNSPEC, &raw) : -NLE_NOMEM;
  if (err < 0) {
    *error = std::string("listing links over rtnetlink: ") + nl_geterror(err);
    return names;
  }
  std::unique_ptr<nl_cache, CachePutter> cache(raw);
  for (nl_object* object = nl_cache_get_first(cache.get()); object != nullptr;
       object = nl_cache_get_next(object)) {
    auto* link = reinterpret_cast<rtnl_link*>(object);
    const char* kind = rtnl_link_get_type(link);
    if (kind != nullptr && std::strcmp(kind, "wireguard") == 0) {
      names.emplace_back(rtnl_link_get_name(link));
    }
  }
  return names;
}

std::optional<Device> query_kernel_device(const std::string& name, std::string* error) {
  error->clear();
  SocketPtr sock(nl_socket_alloc());
  if (!sock || genl_connect(sock.get()) < 0) {
    *error = name + ": cannot open a generic netlink socket";
    return std::nullopt;
  }
  int family = genl_ctrl_resolve(sock.get(), WG_GENL_NAME);
  if (family < 0) {
    *error = name + ": the kernel has no \"wireguard\" generic netlink family (" + nl_geterror(family) +
             "); is the wireguard module loaded?";
    return std::nullopt;
  }
  MessagePtr request(nlmsg_alloc());
  if (!request ||
      genlmsg_put(request.get(), NL_AUTO_PORT, NL_AUTO_SEQ, family, 0, NLM_F_DUMP, WG_CMD_GET_DEVICE,
                  WG_GENL_VERSION) == nullptr ||
      nla_put_string(request.get(), WGDEVICE_A_IFNAME, name.c_str()) < 0) {
    *error = name + ": cannot build the WG_CMD_GET_DEVICE request";
    return std::nullopt;
  }
  DumpContext dump;
  nl_socket_modify_cb(sock.get(), NL_CB_VALID, NL_CB_CUSTOM, on_device_message, &dump);
  int err = nl_send_auto(sock.get(), request.get());
  if (err >= 0) err = nl_recvmsgs_default(sock.get());
  if (err < 0) {
    if (err == -NLE_NODEV || err == -NLE_OBJ_NOTFOUND) {
      return std::nullopt;  // vanished since it was listed
    }
    *error = name + ": WG_CMD_GET_DEVICE: " + nl_geterror(err) +
             (err == -NLE_PERM ? " (run as root or with CAP_NET_ADMIN)" : "");
    return std::nullopt;
  }
  if (!dump.error.empty()) {
    *error = name + ": " + dump.error;
    return std::nullopt;
  }
  Device device = dump.parser.device();
  if (device.name.empty()) device.name = name;
  return device;
}

std::optional<Device> query_userspace_device(const std::string& uapi_dir, const std::string& name,
                                             std::string* error) {
  error->clear();
  const std::string path = uapi_dir + "/" + name + ".sock";
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.size() >= sizeof address.sun_path) {
    *error = path + ": path too long for a unix socket";
    return std::nullopt;
  }
  std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
  FdCloser sock{socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)};
  if (sock.fd < 0) {
    *error = path + ": socket: " + errno_sentence(errno);
    return std::nullopt;
  }
  if (connect(sock.fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    int err = errno;
    if (err == ECONNREFUSED || err == ENOENT) {
      return std::nullopt;  // nobody listens: the implementation stopped
    }
    *error = path + ": connect: " + errno_sentence(err) + (err == EACCES ? "; run as root" : "");
    return std::nullopt;
  }
  std::string answer;
  int err = write_all(sock.fd, "get=1\n\n") ? read_answer(sock.fd, &answer) : errno;
  if (err != 0) {
    *error = path + ": reading the UAPI answer: " + errno_sentence(err);
    return std::nullopt;
  }
  std::optional<Device> device = parse_uapi_get(answer, name, error);
  if (device) {
    device->ifindex = static_cast<int>(if_nametoindex(name.c_str()));
  }
  return device;
}

Discovery discover_devices(const std::string& uapi_dir) {
  Discovery found;
  std::string error;
  for (const std::string& name : kernel_wireguard_links(&error)) {
    if (std::optional<Device> device = query_kernel_device(name, &error)) {
      found.devices.push_back(std::move(*device));
    } else if (!error.empty()) {
      found.problems.push_back(error);
    }
  }
  if (!error.empty() && found.problems.empty()) {
    found.problems.push_back(error);
  }
  DIR* dir = opendir(uapi_dir.c_str());
  if (dir == nullptr) {
    return found;  // no userspace implementation has run here
  }
  while (dirent* entry = readdir(dir)) {
    std::string file = entry->d_name;
    constexpr std::string_view kSuffix = ".sock";
    if (file.size() <= kSuffix.size() ||
        file.compare(file.size() - kSuffix.size(), kSuffix.size(), kSuffix) != 0) {
      continue;
    }
    std::string name = file.substr(0, file.size() - kSuffix.size());
    if (if_nametoindex(name.c_str()) == 0) {
      continue;  // a device of another network namespace (the directory is shared), or gone
    }
    if (std::optional<Device> device = query_userspace_device(uapi_dir, name, &error)) {
      found.devices.push_back(std::move(*device));
    } else if (!error.empty()) {
      found.problems.push_back(error);
    }
  }
  closedir(dir);
  return found;
}

}  // namespace uplinkd::wireguard
