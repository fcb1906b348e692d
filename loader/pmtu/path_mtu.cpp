#include "pmtu/path_mtu.h"

#include <sys/random.h>

#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <utility>

#include "common/log.h"
#include "datapath/datapath.h"
#include "health/monitor.h"

namespace uplinkd::pmtu {
namespace {

// A search narrows at least one target's interval every round, so it ends long before this; the
// bound only guards against a bug looping forever on the datapath.
constexpr int kMaxRounds = 12;

int64_t seconds_to_ns(double s) { return static_cast<int64_t>(s * 1e9); }

// Nonces must not be guessable by whoever could forge a reply: the kernel's CSPRNG, as the monitor.
uint64_t random_u64() {
  uint64_t v = 0;
  if (getrandom(&v, sizeof v, 0) != sizeof v) {
    v = static_cast<uint64_t>(health::monotonic_ns()) * 0x9E3779B97F4A7C15ULL;
  }
  return v;
}

std::string seconds_text(int64_t ns) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f", static_cast<double>(ns) / 1e9);
  return text;
}

const char* state_name(PathMtuProber::Result::State s) {
  switch (s) {
    case PathMtuProber::Result::State::Measuring:
      return "measuring";
    case PathMtuProber::Result::State::Measured:
      return "measured";
    case PathMtuProber::Result::State::Unknown:
      break;
  }
  return "unknown";
}

}  // namespace

PathMtuProber::PathMtuProber(std::string uplink_name, std::string device, uint32_t fwmark, int family,
                             std::vector<IpAddress> targets, datapath::Datapath& dp, Options opt)
    : uplink_name_(std::move(uplink_name)),
      device_(std::move(device)),
      fwmark_(fwmark),
      family_(family),
      dp_(dp),
      opt_(opt) {
  std::erase_if(targets, [&](const IpAddress& t) { return t.family != family_; });
  targets_ = std::move(targets);
  // Its own ident, so that no reply to these echoes can be taken for a health probe's.
  ident_ = static_cast<uint16_t>(random_u64());
  seq_ = static_cast<uint16_t>(random_u64());
}

PathMtuProber::~PathMtuProber() { stop(); }

void PathMtuProber::start(int ifindex, uint32_t datapath_id, int device_mtu, int64_t now) {
  stop();
  ifindex_ = ifindex;
  datapath_id_ = datapath_id;
  result_.device_mtu = device_mtu;
  running_ = true;
  // Same device, mark and TTL as the uplink's health probes, but none of their sockets.
  transport_ = std::make_unique<health::ProbeTransport>(device_, fwmark_, opt_.max_ttl);
  begin_measurement(now);
}

void PathMtuProber::stop() {
  forget_pending();
  if (measuring_) {
    measuring_ = false;
    result_.state =
        result_.measured_at_ns != 0 && result_.mtu ? Result::State::Measured : Result::State::Unknown;
  }
  running_ = false;
  transport_.reset();
  next_measurement_at_ = INT64_MAX;
}

void PathMtuProber::set_device_mtu(int mtu, int64_t now) {
  if (mtu == result_.device_mtu) return;
  result_.device_mtu = mtu;
  // No path carries more than the device sends: the old figure is at most the new MTU.
  if (result_.mtu && *result_.mtu > mtu) result_.mtu = mtu;
  if (running_) begin_measurement(now);
}

void PathMtuProber::request(int64_t now) {
  if (running_) begin_measurement(now);
}

void PathMtuProber::forget_pending() {
  for (const auto& [_, p] : pending_) dp_.remove_probe(p.key);
  pending_.clear();
}

std::string PathMtuProber::key_bytes(const probe_key& key) {
  return {reinterpret_cast<const char*>(&key), sizeof key};
}

void PathMtuProber::begin_measurement(int64_t now) {
  forget_pending();
  measuring_ = true;
  measurement_started_ = now;
  rounds_ = 0;
  last_send_error_ = 0;
  next_measurement_at_ = INT64_MAX;
  result_.state = Result::State::Measuring;
  searches_.assign(targets_.size(), TargetSearch{});
  if (targets_.empty()) {
    finish(now);
    return;
  }
  const std::vector<int> first = first_round_sizes(family_, result_.device_mtu, opt_.probes_per_round);
  begin_round(std::vector<std::vector<int>>(targets_.size(), first), now);
}

void PathMtuProber::begin_round(const std::vector<std::vector<int>>& sizes, int64_t now) {
  ++rounds_;
  round_started_ = now;
  round_deadline_ = now + seconds_to_ns(opt_.round_timeout_s);
  for (size_t t = 0; t < sizes.size(); ++t) {
    for (int size : sizes[t]) send_probe(t, size, now);
  }
}

void PathMtuProber::send_probe(size_t target, int size, int64_t now) {
  TargetSearch& search = searches_[target];
  search.sending(size);
  const IpAddress& ip = targets_[target];
  probe_key key{};
  std::memcpy(key.addr, ip.bytes.data(), ip.is_v4() ? 4 : 16);
  key.uplink_id = static_cast<uint16_t>(datapath_id_);
  key.kind = ip.is_v4() ? PROBE_KIND_ICMP : PROBE_KIND_ICMPV6;
  key.ident = ident_;
  key.seq = seq_++;
  probe_value value{};
  value.nonce = random_u64();
  value.sent_ns = static_cast<uint64_t>(now);
  // Registered before it leaves: a fast reply must find its entry.
  int err = dp_.insert_probe(key, value);
  if (err == 0) err = transport_->send_echo_df(ip, key.ident, key.seq, value.nonce, size);
  if (err == 0) {
    pending_[key_bytes(key)] = Pending{key, target, size};
    return;
  }
  // Refused before leaving (EMSGSIZE: larger than the device takes) fails the size at once.
  dp_.remove_probe(key);
  last_send_error_ = err;
  search.unanswered(size, err == -EMSGSIZE);
}

void PathMtuProber::on_reply(const probe_reply_event& event, int64_t /*now*/) {
  if (!measuring_ || event.key.ident != ident_) return;
  auto it = pending_.find(key_bytes(event.key));
  if (it == pending_.end()) return;  // not ours, or answered after its round gave up on it
  const Pending p = it->second;
  pending_.erase(it);
  searches_[p.target].answered(p.size);
}

void PathMtuProber::run(int64_t now) {
  if (!running_) return;
  if (measuring_ && (pending_.empty() || now >= round_deadline_)) end_round(now);
  if (!measuring_ && now >= next_measurement_at_) begin_measurement(now);
}

int64_t PathMtuProber::next_wakeup() const {
  if (!running_) return INT64_MAX;
  if (measuring_) return pending_.empty() ? round_started_ : round_deadline_;
  return next_measurement_at_;
}

void PathMtuProber::end_round(int64_t now) {
  std::vector<std::string> unanswered;
  for (const auto& [k, _] : pending_) unanswered.push_back(k);
  for (const std::string& k : unanswered) {
    auto it = pending_.find(k);
    if (it == pending_.end()) continue;
    if (!dp_.remove_probe(it->second.key)) {
      // XDP took the entry a moment ago: its event is in the ring buffer, read it now.
      dp_.poll_replies();
      it = pending_.find(k);
      if (it == pending_.end()) continue;
    }
    searches_[it->second.target].unanswered(it->second.size, false);
    pending_.erase(it);
  }

  const int floor = search_floor(family_, result_.device_mtu);
  std::vector<std::vector<int>> next(targets_.size());
  bool more = false;
  for (size_t t = 0; t < targets_.size(); ++t) {
    if (searches_[t].done(floor)) continue;
    next[t] = next_round_sizes(searches_[t], opt_.probes_per_round);
    more = more || !next[t].empty();
  }
  if (more && rounds_ < kMaxRounds) {
    begin_round(next, now);
  } else {
    finish(now);
  }
}

void PathMtuProber::finish(int64_t now) {
  measuring_ = false;
  result_.per_target.clear();
  for (size_t t = 0; t < targets_.size(); ++t) {
    if (searches_[t].lo > 0) result_.per_target[targets_[t].str()] = searches_[t].lo;
  }
  Verdict verdict = judge(result_.per_target, result_.device_mtu);
  if (targets_.empty()) verdict.note = "no targets of this family";
  if (!verdict.mtu && result_.per_target.empty() && last_send_error_ != 0) {
    verdict.note += " (sending failed: " + std::string(std::strerror(-last_send_error_)) + ")";
  }
  result_.mtu = verdict.mtu;
  result_.note = verdict.note;
  result_.state = verdict.mtu ? Result::State::Measured : Result::State::Unknown;
  result_.measured_at_ns = now;
  if (opt_.interval_s > 0) next_measurement_at_ = now + seconds_to_ns(opt_.interval_s);
  log_result(now);
  measured_before_ = true;
  measured_mtu_ = result_.mtu;
}

// Once per measurement; at notice when the figure differs from the previous measurement's (or is
// the first), else at info, so the periodic re-measurement is quiet while nothing changes.
void PathMtuProber::log_result(int64_t now) const {
  const std::string took = ", measured in " + seconds_text(now - measurement_started_) + " s";
  const std::string device_mtu = "device MTU " + std::to_string(result_.device_mtu);
  std::string message = "interface " + uplink_name_ + ": path MTU ";
  message += result_.mtu ? std::to_string(*result_.mtu) + " (" + device_mtu
                         : "unknown (" + device_mtu + "): " + result_.note;
  const bool changed = !measured_before_ || measured_mtu_ != result_.mtu;
  if (changed && measured_before_) {
    message += result_.mtu ? ", was " : "; was ";
    message += measured_mtu_ ? std::to_string(*measured_mtu_) : "unknown";
  }
  if (result_.mtu) message += ")";
  message += took;
  if (changed) {
    log::notice(message);
  } else {
    log::info(message);
  }
}

nlohmann::json PathMtuProber::json(int64_t now) const {
  nlohmann::json j;
  j["state"] = state_name(result_.state);
  j["mtu"] = result_.mtu ? nlohmann::json(*result_.mtu) : nlohmann::json(nullptr);
  j["device_mtu"] = result_.device_mtu;
  if (result_.measured_at_ns != 0) {
    j["measured_ago_s"] = std::round(static_cast<double>(now - result_.measured_at_ns) / 1e8) / 10;
  } else {
    j["measured_ago_s"] = nullptr;
  }
  j["note"] = result_.note;
  j["targets"] = nlohmann::json::object();
  for (const auto& [ip, size] : result_.per_target) j["targets"][ip] = size;
  return j;
}

}  // namespace uplinkd::pmtu
