// The control socket as its clients see it (loader/control/control_server.h): a real ControlServer
// with a trivial handler, driven by a thread the way the daemon's loop drives it (wait on fd(), call
// serve()). Who may ask what, from forked clients with other credentials; garbage, oversized,
// stalled and slow clients; the bounds on clients. Needs root (setuid, chown); no namespace.
#include "control/control_server.h"

#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace uplinkd::control {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

constexpr uid_t kNobody = 65534;
constexpr size_t kBigResponse = size_t{300} * 1024;

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

bool contains(const std::string& s, std::string_view part) { return s.find(part) != std::string::npos; }

// Handler calls since the serving thread last reset it (only that thread calls the handler).
std::atomic<int> handler_calls{0};

// The handler: echoes the verb; "big" answers kBigResponse bytes, "throw" throws.
json handle(const json& request) {
  ++handler_calls;
  static const json big = {{"data", std::string(kBigResponse, 'x')}};
  const std::string verb = request["command"];
  if (verb == "big") return big;
  if (verb == "throw") throw std::runtime_error("boom");
  return {{"ok", true}, {"command", verb}};
}

// A ControlServer served from its own thread; serve() runs under a lock the test takes to change it.
class ServedControl {
 public:
  ServedControl(const std::string& path, Access access)
      : server_(std::make_unique<ControlServer>(path, handle, std::move(access))),
        thread_([this] { loop(); }) {}
  ~ServedControl() {
    stop_ = true;
    thread_.join();
  }
  ServedControl(const ServedControl&) = delete;
  ServedControl& operator=(const ServedControl&) = delete;

  template <typename F>
  auto with_server(F f) {
    std::lock_guard<std::mutex> lock(mu_);
    return f(*server_);
  }
  // The longest serve() so far, in ms.
  double max_serve_ms() const { return static_cast<double>(max_serve_ns_.load()) / 1e6; }
  // The most requests one serve() answered (handler calls): the work a wake-up may take.
  int max_answers_per_serve() const { return max_answers_.load(); }

 private:
  void loop() {
    while (!stop_) {
      pollfd p{server_->fd(), POLLIN, 0};
      if (poll(&p, 1, 5) <= 0) continue;
      std::lock_guard<std::mutex> lock(mu_);
      handler_calls = 0;
      const auto start = Clock::now();
      server_->serve();
      const int64_t ns = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count();
      max_serve_ns_ = std::max<int64_t>(max_serve_ns_.load(), ns);
      max_answers_ = std::max(max_answers_.load(), handler_calls.load());
    }
  }

  std::mutex mu_;
  std::unique_ptr<ControlServer> server_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> max_serve_ns_{0};
  std::atomic<int> max_answers_{0};
  std::thread thread_;
};

// A connected blocking client socket, or -errno.
int connect_to(const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    const int err = errno;
    close(fd);
    return -err;
  }
  return fd;
}

void send_text(int fd, const std::string& text) {
  size_t off = 0;
  while (off < text.size()) {
    const ssize_t n = send(fd, text.data() + off, text.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return;  // the server closed: what it answered is still to be read
    off += static_cast<size_t>(n);
  }
}

// Everything until end of input (or a reset after the answer), at most `timeout_ms`.
std::string read_all(int fd, int timeout_ms) {
  std::string data;
  const auto until = Clock::now() + std::chrono::milliseconds(timeout_ms);
  char chunk[16384];
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now()).count();
    pollfd p{fd, POLLIN, 0};
    if (left <= 0 || poll(&p, 1, static_cast<int>(left)) <= 0) return data + "<timeout>";
    const ssize_t n = recv(fd, chunk, sizeof chunk, 0);
    if (n <= 0) return data;
    data.append(chunk, static_cast<size_t>(n));
  }
}

// Sends `bytes` on a new connection (then ends its input when `shut`) and returns the answer.
std::string talk(const std::string& path, const std::string& bytes, bool shut = false,
                 int timeout_ms = 3000) {
  const int fd = connect_to(path);
  if (fd < 0) return std::string("<connect: ") + strerror(-fd) + ">";
  send_text(fd, bytes);
  if (shut) shutdown(fd, SHUT_WR);
  std::string answer = read_all(fd, timeout_ms);
  close(fd);
  return answer;
}

std::string error_of(const std::string& answer) {
  try {
    return json::parse(answer).value("error", "");
  } catch (const std::exception& e) {
    return std::string("<not JSON: ") + e.what() + "> " + answer.substr(0, 100);
  }
}

struct Credentials {
  uid_t uid = kNobody;
  gid_t gid = kNobody;
  std::vector<gid_t> groups;
};

// Asks each request with uplinkctl's client (control::request) from a child process running with
// `who`'s credentials. An answer is the daemon's JSON, or {"exception": what} when the client threw.
std::vector<json> ask_as(const Credentials& who, const std::string& path, const std::vector<json>& requests) {
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) return {};
  const pid_t pid = fork();
  if (pid == 0) {
    close(pipe_fds[0]);
    if (setgroups(who.groups.size(), who.groups.data()) != 0 || setgid(who.gid) != 0 ||
        setuid(who.uid) != 0) {
      _exit(3);
    }
    json answers = json::array();
    for (const json& r : requests) {
      try {
        answers.push_back(request(path, r, 2000));
      } catch (const std::exception& e) {
        answers.push_back({{"exception", e.what()}});
      }
    }
    const std::string text = answers.dump();
    size_t off = 0;
    while (off < text.size()) {
      const ssize_t n = write(pipe_fds[1], text.data() + off, text.size() - off);
      if (n <= 0) _exit(4);
      off += static_cast<size_t>(n);
    }
    _exit(0);
  }
  close(pipe_fds[1]);
  std::string text;
  char chunk[4096];
  ssize_t n = 0;
  while ((n = read(pipe_fds[0], chunk, sizeof chunk)) > 0) text.append(chunk, static_cast<size_t>(n));
  close(pipe_fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "client child status " << status;
  try {
    return json::parse(text).get<std::vector<json>>();
  } catch (const std::exception&) {
    return {};
  }
}

json ask_one(const Credentials& who, const std::string& path, const std::string& verb) {
  std::vector<json> answers = ask_as(who, path, {{{"command", verb}}});
  return answers.empty() ? json{{"exception", "no answer from the client child"}} : answers.front();
}

// A gid no group of this system has, so the test adds nothing to /etc/group.
gid_t unused_gid() {
  for (gid_t gid = 47000;; ++gid) {
    if (getgrgid(gid) == nullptr) return gid;
  }
}

const std::vector<std::string> kReadOnly = {"status",    "interfaces", "policies", "rules",
                                            "connected", "flows",      "wireguard"};
const std::vector<std::string> kRootOnly = {"reload", "interface_info", "stop", "restart", "frobnicate"};

class ControlServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root (clients run as other users; the socket is chown'ed)";
    char tmpl[] = "/tmp/uplinkd-control-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr) << strerror(errno);
    dir_ = tmpl;
    chmod(dir_.c_str(), 0755);  // clients running as nobody reach the socket through it
    path_ = dir_ + "/control.sock";
    group_ = unused_gid();
    access_ = Access{group_, "ctltest"};
  }
  void TearDown() override {
    served_.reset();
    if (!dir_.empty()) {
      unlink(path_.c_str());
      rmdir(dir_.c_str());
    }
  }
  void start(Access access) { served_ = std::make_unique<ServedControl>(path_, std::move(access)); }

  struct stat socket_stat() const {
    struct stat st {};
    EXPECT_EQ(stat(path_.c_str(), &st), 0) << strerror(errno);
    return st;
  }

  std::string dir_;
  std::string path_;
  gid_t group_ = 0;
  Access access_;
  std::unique_ptr<ServedControl> served_;
};

// ---- who may ask what --------------------------------------------------------------------------

TEST_F(ControlServerTest, GroupMemberReadsButCannotReload) {
  start(access_);
  const struct stat st = socket_stat();
  EXPECT_EQ(st.st_mode & 0777, 0660U);
  EXPECT_EQ(st.st_gid, group_);
  EXPECT_EQ(st.st_uid, 0U);

  std::vector<json> requests;
  requests.reserve(kReadOnly.size() + kRootOnly.size() + 1);
  for (const auto& v : kReadOnly) requests.push_back({{"command", v}});
  for (const auto& v : kRootOnly) requests.push_back({{"command", v}});
  requests.push_back({{"command", "interface_info"}, {"interface", "wan"}});  // what `uplinkctl use` sends
  const Credentials supplementary{kNobody, kNobody, {group_}};
  const Credentials primary{kNobody, group_, {}};
  for (const Credentials& member : {supplementary, primary}) {
    SCOPED_TRACE(member.gid == group_ ? "primary group" : "supplementary group");
    const std::vector<json> answers = ask_as(member, path_, requests);
    ASSERT_EQ(answers.size(), requests.size());
    for (size_t i = 0; i < answers.size(); ++i) {
      const std::string verb = requests[i]["command"];
      if (i < kReadOnly.size()) {
        EXPECT_EQ(answers[i], (json{{"ok", true}, {"command", verb}})) << answers[i].dump();
      } else {
        EXPECT_EQ(answers[i], (json{{"error", "permission denied: '" + verb + "' needs root"}}))
            << answers[i].dump();
      }
    }
  }
}

TEST_F(ControlServerTest, NonMemberIsRefusedEvenStatus) {
  start(access_);
  const Credentials other{kNobody, kNobody, {}};
  // The socket file keeps others out ...
  json answer = ask_one(other, path_, "status");
  EXPECT_TRUE(contains(answer.value("exception", ""), "Permission denied")) << answer.dump();
  // ... and so does the server when the file lets them in.
  ASSERT_EQ(chmod(path_.c_str(), 0666), 0);
  answer = ask_one(other, path_, "status");
  EXPECT_EQ(answer, (json{{"error", "permission denied: 'status' needs root or group ctltest"}}))
      << answer.dump();
  answer = ask_one(other, path_, "reload");
  EXPECT_EQ(answer, (json{{"error", "permission denied: 'reload' needs root"}})) << answer.dump();
}

TEST_F(ControlServerTest, WithoutGroupOnlyRoot) {
  start(Access{});
  EXPECT_EQ(socket_stat().st_mode & 0777, 0600U);
  ASSERT_EQ(chmod(path_.c_str(), 0666), 0);
  const Credentials in_gid_zero{kNobody, 0, {0}};
  json answer = ask_one(in_gid_zero, path_, "status");
  EXPECT_EQ(answer, (json{{"error", "permission denied: 'status' needs root"}})) << answer.dump();
}

TEST_F(ControlServerTest, RootMayDoEverything) {
  for (const Access& access : {Access{}, access_}) {
    start(access);
    for (const auto& verbs : {kReadOnly, kRootOnly}) {
      for (const auto& v : verbs) {
        EXPECT_EQ(request(path_, {{"command", v}}), (json{{"ok", true}, {"command", v}})) << v;
      }
    }
    EXPECT_EQ(request(path_, {{"command", "throw"}}),
              (json{{"error", "internal error answering 'throw': boom"}}));
    served_.reset();
  }
}

TEST_F(ControlServerTest, SetAccessChangesTheFileAndTheChecks) {
  start(Access{});
  const Credentials member{kNobody, kNobody, {group_}};
  EXPECT_TRUE(contains(ask_one(member, path_, "status").value("exception", ""), "Permission denied"));

  served_->with_server([&](ControlServer& s) { s.set_access(access_); });
  EXPECT_EQ(socket_stat().st_mode & 0777, 0660U);
  EXPECT_EQ(socket_stat().st_gid, group_);
  EXPECT_EQ(ask_one(member, path_, "status"), (json{{"ok", true}, {"command", "status"}}));

  served_->with_server([&](ControlServer& s) { s.set_access(Access{}); });
  EXPECT_EQ(socket_stat().st_mode & 0777, 0600U);
  EXPECT_EQ(socket_stat().st_gid, getegid());
  ASSERT_EQ(chmod(path_.c_str(), 0666), 0);
  EXPECT_EQ(ask_one(member, path_, "status"), (json{{"error", "permission denied: 'status' needs root"}}));
}

// ---- what is a request -------------------------------------------------------------------------

TEST_F(ControlServerTest, GarbageAndOversizedRequestsGetErrors) {
  start(Access{});
  const struct {
    std::string bytes;
    bool shut;
    std::string error_prefix;
  } cases[] = {
      {"hello\n", false, "bad request: not JSON ("},
      {"[1,2]\n", false, "bad request: got array"},
      {"{\"command\":5}\n", false, R"(bad request: "command" is a number, not a string)"},
      {"{}\n", false, R"(bad request: no "command" in the object)"},
      {"\n", false, "bad request: empty line"},
      {"{\"command\":\"st\xff\"}\n", false, "bad request: not JSON ("},
      {"{\"command\":\"status\",\"n\":1E400}\n", false, "bad request: not JSON (number overflow"},
      {std::string(100000, '[') + "\n", false, "request too large (limit 65536 bytes)"},
      {std::string(1000, '[') + "\n", false, "bad request: JSON nested deeper than 32 levels"},
      {std::string(70000, 'a'), false, "request too large (limit 65536 bytes)"},
      {std::string(70000, 'a') + "\n", true, "request too large (limit 65536 bytes)"},
      {"garbage without newline", true, "bad request: not JSON ("},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.bytes.substr(0, 40));
    const std::string answer = talk(path_, c.bytes, c.shut);
    EXPECT_EQ(error_of(answer).rfind(c.error_prefix, 0), 0U) << answer.substr(0, 300);
    EXPECT_EQ(std::count(answer.begin(), answer.end(), '\n'), 1) << "one line, then the end";
  }
  // A request at the limit is read whole (and answered by the handler as an unknown verb would be).
  std::string at_limit = R"({"command":"status","pad":")";
  at_limit += std::string(kMaxRequestBytes - at_limit.size() - 2, 'p') + "\"}";
  ASSERT_EQ(at_limit.size(), kMaxRequestBytes);
  EXPECT_EQ(json::parse(talk(path_, at_limit + "\n")), (json{{"ok", true}, {"command", "status"}}));
  // Old clients: a request without newline, then end of input.
  EXPECT_EQ(json::parse(talk(path_, R"({"command":"status"})", true)),
            (json{{"ok", true}, {"command", "status"}}));
  // uplinkctl's client, unchanged.
  EXPECT_EQ(request(path_, {{"command", "rules"}}), (json{{"ok", true}, {"command", "rules"}}));
  // A client that connects and goes away without a word is simply closed.
  EXPECT_EQ(talk(path_, "", true), "");
}

// ---- bounded in time and size ------------------------------------------------------------------

TEST_F(ControlServerTest, StalledClientsDoNotDelayOthers) {
  start(Access{});
  const auto stalled_at = Clock::now();
  const int silent = connect_to(path_);
  const int half = connect_to(path_);
  ASSERT_GE(silent, 0);
  ASSERT_GE(half, 0);
  send_text(half, R"({"command":"sta)");

  double max_ms = 0;
  for (int i = 0; i < 50; ++i) {
    const auto t = Clock::now();
    const std::string answer = talk(path_, R"({"command":"status"})"
                                           "\n");
    max_ms = std::max(max_ms, ms_since(t));
    ASSERT_EQ(json::parse(answer), (json{{"ok", true}, {"command", "status"}})) << answer;
  }
  std::printf("50 requests beside 2 stalled clients: slowest %.2f ms; slowest serve() %.2f ms\n", max_ms,
              served_->max_serve_ms());
  EXPECT_LT(max_ms, 100.0);

  // The stalled clients are told and closed at their deadline, 2 s after they connected.
  for (int fd : {silent, half}) {
    const std::string answer = read_all(fd, 5000);
    const double at_ms = ms_since(stalled_at);
    EXPECT_EQ(error_of(answer), "timeout: no complete request within 2 s") << answer;
    EXPECT_GE(at_ms, ControlServer::kRequestDeadlineMs - 50.0);
    EXPECT_LT(at_ms, ControlServer::kRequestDeadlineMs + 1000.0);
    close(fd);
  }
  EXPECT_EQ(served_->with_server([](ControlServer& s) { return s.client_count(); }), 0U);
  EXPECT_LT(served_->max_serve_ms(), 100.0);
}

TEST_F(ControlServerTest, ManySlowReadersOfABigResponse) {
  start(Access{});
  constexpr int kReaders = 20;
  std::vector<std::string> answers(kReaders);
  std::vector<std::thread> readers;
  readers.reserve(kReaders);
  std::atomic<int> reading{0};  // readers that have the first bytes of their answer
  for (int r = 0; r < kReaders; ++r) {
    readers.emplace_back([&, r] {
      const int fd = connect_to(path_);
      if (fd < 0) {
        ++reading;
        return;
      }
      send_text(fd, R"({"command":"big"})"
                    "\n");
      // About 4 KiB every 2 ms: some 150 ms for the answer, while the socket buffer fills and drains.
      char chunk[4096];
      for (;;) {
        const ssize_t n = recv(fd, chunk, sizeof chunk, 0);
        if (n <= 0) break;
        if (answers[r].empty()) ++reading;
        answers[r].append(chunk, static_cast<size_t>(n));
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
      close(fd);
    });
  }
  // All answered, each still being read (the first bursts of a burst of answers are the handler's
  // time, which serve() spreads over wake-ups of kAnswersPerServe).
  const auto wait_from = Clock::now();
  while (reading < kReaders && ms_since(wait_from) < 5000)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));

  // Others are answered at once meanwhile.
  double max_ms = 0;
  for (int i = 0; i < 20; ++i) {
    const auto t = Clock::now();
    EXPECT_EQ(request(path_, {{"command", "status"}}), (json{{"ok", true}, {"command", "status"}}));
    max_ms = std::max(max_ms, ms_since(t));
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  for (auto& t : readers) t.join();
  std::printf(
      "%d slow readers of %zu KiB: slowest other request %.2f ms; slowest serve() %.2f ms, "
      "at most %d answers in one\n",
      kReaders, kBigResponse / 1024, max_ms, served_->max_serve_ms(), served_->max_answers_per_serve());
  EXPECT_LT(max_ms, 100.0);
  // A serve() takes the handler's time for what it answers (2.4 MB of JSON for 8 big answers: over
  // 100 ms in a VM under software emulation), so what is bounded is how many it answers per wake-up,
  // not the wall-clock time; the slow readers' sends never wait (the line above).
  EXPECT_LE(served_->max_answers_per_serve(), ControlServer::kAnswersPerServe);
  EXPECT_GE(served_->max_answers_per_serve(), 1);
  for (const std::string& a : answers) {
    ASSERT_EQ(a.back(), '\n');
    EXPECT_EQ(json::parse(a)["data"].get_ref<const std::string&>().size(), kBigResponse);
  }
}

TEST_F(ControlServerTest, TooManyClientsAreRefused) {
  start(Access{});
  std::vector<int> stalled;
  for (size_t i = 0; i < ControlServer::kMaxClients; ++i) {
    stalled.push_back(connect_to(path_));
    ASSERT_GE(stalled.back(), 0);
  }
  const std::string answer = talk(path_, R"({"command":"status"})"
                                         "\n");
  EXPECT_EQ(error_of(answer).rfind("busy: 32 clients connected", 0), 0U) << answer;
  EXPECT_EQ(served_->with_server([](ControlServer& s) { return s.client_count(); }),
            ControlServer::kMaxClients);
  for (int fd : stalled) close(fd);
  // Their slots are free again once the server has seen them go.
  const auto t = Clock::now();
  while (served_->with_server([](ControlServer& s) { return s.client_count(); }) != 0 && ms_since(t) < 1000) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(request(path_, {{"command", "status"}}), (json{{"ok", true}, {"command", "status"}}));
}

TEST_F(ControlServerTest, RefusesToStealALiveSocket) {
  start(Access{});
  try {
    ControlServer second(path_, handle);
    ADD_FAILURE() << "a second server bound " << path_;
  } catch (const std::runtime_error& e) {
    EXPECT_TRUE(contains(e.what(), "another uplinkd answers on " + path_)) << e.what();
  }
  EXPECT_EQ(request(path_, {{"command", "status"}}), (json{{"ok", true}, {"command", "status"}}));
}

}  // namespace
}  // namespace uplinkd::control
