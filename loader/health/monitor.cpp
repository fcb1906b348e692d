#include "health/monitor.h"

#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstring>

#include "common/log.h"
#include "datapath/datapath.h"

namespace uplinkd::health {
namespace {

constexpr size_t kWindow = 20;  // recent results per target for rtt_ms and loss_pct
constexpr int64_t kNsPerSec = 1000000000;

int64_t seconds_to_ns(double s) { return static_cast<int64_t>(s * 1e9); }

// Nonces must not be guessable by whoever could forge a reply, so they come from the kernel's CSPRNG.
uint64_t random_u64() {
  uint64_t v = 0;
  if (getrandom(&v, sizeof v, 0) != sizeof v)
    v = static_cast<uint64_t>(monotonic_ns()) * 0x9E3779B97F4A7C15ULL;
  return v;
}

TrackerParams params_from(const config::InterfaceConfig& c) {
  TrackerParams p;
  p.reliability = c.reliability;
  p.count = c.count;
  p.down = c.down;
  p.up = c.up;
  p.interval_s = c.interval_s;
  p.failure_interval_s = c.failure_interval_s;
  p.recovery_interval_s = c.recovery_interval_s;
  p.keep_failure_interval = c.keep_failure_interval;
  p.check_quality = c.check_quality;
  p.failure_latency_ms = c.failure_latency_ms;
  p.failure_loss_pct = c.failure_loss_pct;
  p.recovery_latency_ms = c.recovery_latency_ms;
  p.recovery_loss_pct = c.recovery_loss_pct;
  p.initial_online = c.initial_state == config::InitialState::Online;
  p.every_reply_needed = config::needs_every_reply(c.track_method);
  return p;
}

std::optional<AdaptiveTimeoutBounds> adaptive_bounds(const config::InterfaceConfig& c) {
  if (!c.timeout_auto) return std::nullopt;
  return AdaptiveTimeoutBounds{c.timeout_auto->min_s, c.timeout_auto->max_s};
}

// nping-udp's local port: drawn from the fixed range the XDP program checks first.
uint16_t udp_probe_port() {
  return static_cast<uint16_t>(UPLINKD_UDP_PROBE_PORT_MIN + random_u64() % UPLINKD_UDP_PROBE_PORT_COUNT);
}

// How the status page shades a tracker state (a disabled tracker decides no cycle, so never seen).
observability::PointState point_state(State s) {
  switch (s) {
    case State::Online:
      return observability::PointState::Online;
    case State::Offline:
      return observability::PointState::Offline;
    case State::Connecting:
      return observability::PointState::Connecting;
    case State::Disconnecting:
      return observability::PointState::Disconnecting;
    case State::Disabled:
      break;
  }
  return observability::PointState::Unknown;
}

}  // namespace

int64_t monotonic_ns() {
  struct timespec ts {};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * kNsPerSec + ts.tv_nsec;
}

UplinkMonitor::UplinkMonitor(const config::InterfaceConfig& cfg, uint32_t mark, datapath::Datapath& dp,
                             ActionHandler on_action)
    : cfg_(cfg),
      mark_(mark),
      dp_(dp),
      on_action_(std::move(on_action)),
      tracker_(params_from(cfg)),
      params_(params_from(cfg)),
      windows_(cfg.track_ip.size()) {
  echo_ident_ = static_cast<uint16_t>(random_u64());
  seq_ = static_cast<uint16_t>(random_u64());
  if (cfg.track_method == config::TrackMethod::Httping)
    http_ = std::make_unique<HttpProber>(cfg.device, mark, cfg.max_ttl, cfg.httping_ssl);
}

UplinkMonitor::~UplinkMonitor() { forget_pending(); }

void UplinkMonitor::adopt(int ifindex, uint32_t datapath_id, double phase_s, int64_t now, State state) {
  start(ifindex, datapath_id, phase_s, now, state);
}

void UplinkMonitor::start(int ifindex, uint32_t datapath_id, double phase_s, int64_t now) {
  start(ifindex, datapath_id, phase_s, now, std::nullopt);
}

void UplinkMonitor::start(int ifindex, uint32_t datapath_id, double phase_s, int64_t now,
                          std::optional<State> adopted) {
  ifindex_ = ifindex;
  datapath_id_ = datapath_id;
  running_ = true;
  running_since_ = now;
  transport_ = std::make_unique<ProbeTransport>(cfg_.device, mark_, cfg_.max_ttl);
  cycle_ = Cycle{};
  cycle_.decided = true;  // no cycle in flight yet
  next_cycle_at_ = now + seconds_to_ns(phase_s);
  // A (re)started uplink may have a new path: each estimate starts over from the cap.
  if (const auto bounds = adaptive_bounds(cfg_)) {
    for (Window& w : windows_) w.timeout.emplace(*bounds);
  }
  apply(adopted ? tracker_.adopt(*adopted) : tracker_.start(), true);
}

void UplinkMonitor::stop(int64_t /*now*/) {
  if (!running_) return;
  running_ = false;
  forget_pending();
  transport_.reset();
  cycle_ = Cycle{};
  cycle_.decided = true;
  apply(tracker_.on_device_down(), false);
}

void UplinkMonitor::forget_pending() {
  for (const auto& [_, p] : pending_) {
    if (p.http_id == 0) dp_.remove_probe(p.key);
    release(p);
  }
  pending_.clear();
}

// What a probe holds besides its map entry: a UDP port (nslookup, nping-udp) or an HTTP exchange.
void UplinkMonitor::release(const Pending& p) {
  if (p.dns_port != 0 && transport_) transport_->release_dns(p.dns_port);
  if (p.http_id != 0 && http_) http_->cancel(p.http_id);
}

void UplinkMonitor::apply(const Step& step, bool first) {
  if (tracker_.state() != last_state_) {
    last_state_ = tracker_.state();
    state_since_ = monotonic_ns();
  }
  for (Action a : step.actions) on_action_(*this, a, first);
}

uint8_t UplinkMonitor::probe_kind() const {
  switch (cfg_.track_method) {
    case config::TrackMethod::Arping:
    case config::TrackMethod::NpingArp:
      return PROBE_KIND_ARP;
    case config::TrackMethod::NpingTcp:
      return PROBE_KIND_TCP;
    case config::TrackMethod::Nslookup:
      return PROBE_KIND_DNS;
    case config::TrackMethod::NpingUdp:
      return PROBE_KIND_UDP;
    case config::TrackMethod::Httping:
      return 0;  // not matched at XDP (http_probe.h says why)
    case config::TrackMethod::Ping:
    case config::TrackMethod::NpingIcmp:
      break;
  }
  return cfg_.family == config::Family::Ipv6 ? PROBE_KIND_ICMPV6 : PROBE_KIND_ICMP;
}

// nping --icmp sends echoes without payload; ours carry the 8-byte nonce and no more. `size` is
// ping's option (mwan3 does not pass it to nping).
int UplinkMonitor::echo_payload_size() const {
  return cfg_.track_method == config::TrackMethod::NpingIcmp ? static_cast<int>(sizeof(uint64_t)) : cfg_.size;
}

std::string UplinkMonitor::key_bytes(const probe_key& key) const {
  return std::string(reinterpret_cast<const char*>(&key), sizeof key);
}

void UplinkMonitor::run(int64_t now) {
  if (!running_) return;
  finish_http(now);  // before expiring: an exchange that completed by now is not a loss
  expire(now);
  if (cycle_.decided && now >= next_cycle_at_) begin_cycle(now);
  send_due(now);
}

int64_t UplinkMonitor::next_wakeup() const {
  if (!running_) return INT64_MAX;
  int64_t t = INT64_MAX;
  if (cycle_.decided) t = next_cycle_at_;
  if (!cycle_.decided && cycle_.next < cycle_.plan.size()) t = std::min(t, cycle_.plan[cycle_.next].send_at);
  for (const auto& [_, p] : pending_) t = std::min(t, p.deadline);
  return t;
}

void UplinkMonitor::begin_cycle(int64_t now) {
  const size_t targets = cfg_.track_ip.size();
  const size_t probes = targets * static_cast<size_t>(cfg_.count);
  // Planned from when the cycle was due, so a loop that was held up shows in the probes' lateness
  // and the cadence does not drift. A start missed by a whole interval (a stopped process, say)
  // starts afresh from now instead of sending a burst.
  const int64_t due = now - next_cycle_at_ < seconds_to_ns(cfg_.interval_s) ? next_cycle_at_ : now;
  cycle_ = Cycle{};
  cycle_.number = ++cycles_started_;
  cycle_.start = due;
  cycle_.samples.assign(targets, TargetSample{});
  cycle_.unresolved.assign(targets, cfg_.count);
  cycle_.verdicts.assign(targets, std::nullopt);
  const double spread_s = cycle_spread_s(cfg_.interval_s, cfg_.timeout_s, adaptive_bounds(cfg_));
  const int64_t gap = probes > 0 ? seconds_to_ns(spread_s) / static_cast<int64_t>(probes) : 0;
  int64_t at = due;
  // mwan3 probes its targets in list order, `count` probes each.
  for (size_t t = 0; t < targets; ++t) {
    for (int c = 0; c < cfg_.count; ++c) {
      cycle_.plan.push_back({t, at});
      at += gap;
    }
  }
  if (targets == 0) cycle_.decided = true;
}

void UplinkMonitor::send_due(int64_t now) {
  while (!cycle_.decided && cycle_.next < cycle_.plan.size() && cycle_.plan[cycle_.next].send_at <= now) {
    lateness_.add(static_cast<double>(now - cycle_.plan[cycle_.next].send_at) / 1e6);
    send_one(cycle_.plan[cycle_.next].target, now);
    ++cycle_.next;
  }
}

// httping: an exchange in the HttpProber stands for the probe; its Pending carries a key of kind
// 0 (never in the BPF map) made unique by the exchange id.
void UplinkMonitor::send_http(size_t target, int64_t now) {
  const IpAddress& ip = cfg_.track_ip[target];
  probe_key key{};
  std::memcpy(key.addr, ip.bytes.data(), ip.is_v4() ? 4 : 16);
  key.uplink_id = static_cast<uint16_t>(datapath_id_);
  Pending p{key, cycle_.number, target, now + probe_timeout_ns(target), 0, now};
  ++sent_;
  ++windows_[target].sent;
  ++cycle_.samples[target].sent;
  const int64_t id = http_->start(ip, now);
  if (id < 0) {
    resolve(p, std::nullopt, now);  // cannot leave (no route, device gone): lost, as for the others
    return;
  }
  p.http_id = static_cast<uint64_t>(id);
  p.key.ident = static_cast<uint16_t>(p.http_id);
  p.key.seq = static_cast<uint16_t>(p.http_id >> 16);
  pending_[key_bytes(p.key)] = p;
}

void UplinkMonitor::finish_http(int64_t now) {
  if (!http_ || http_->in_flight() == 0) return;
  for (const HttpResult& r : http_->poll(now)) {
    for (auto it = pending_.begin(); it != pending_.end(); ++it) {
      if (it->second.http_id != r.id) continue;
      Pending p = it->second;
      pending_.erase(it);
      if (!r.rtt_ms) log::debug(cfg_.name + ": httping " + cfg_.track_ip[p.target].str() + ": " + r.reason);
      resolve(p, r.rtt_ms, now);
      break;
    }
  }
}

void UplinkMonitor::send_one(size_t target, int64_t now) {
  if (http_) {
    send_http(target, now);
    return;
  }
  const IpAddress& ip = cfg_.track_ip[target];
  probe_key key{};
  std::memcpy(key.addr, ip.bytes.data(), ip.is_v4() ? 4 : 16);
  key.uplink_id = static_cast<uint16_t>(datapath_id_);
  key.kind = probe_kind();
  uint64_t nonce = random_u64();
  probe_value value{};
  value.nonce = nonce;

  switch (key.kind) {
    case PROBE_KIND_ICMP:
    case PROBE_KIND_ICMPV6:
      key.ident = echo_ident_;
      key.seq = seq_++;
      break;
    case PROBE_KIND_TCP:
      key.ident = static_cast<uint16_t>(32768 + random_u64() % 28000);
      key.seq = cfg_.track_port;
      value.nonce = nonce & 0xFFFFFFFFULL;
      break;
    case PROBE_KIND_DNS:
      key.ident = static_cast<uint16_t>(32768 + random_u64() % 28000);
      key.seq = static_cast<uint16_t>(nonce);
      value.nonce = 0;
      break;
    case PROBE_KIND_UDP:
      key.ident = udp_probe_port();
      key.seq = cfg_.track_port;
      break;
    case PROBE_KIND_ARP:
      value.nonce = 0;
      // An ARP reply carries nothing of ours, so only one request per target may be outstanding:
      // a request still in flight answers for this planned probe too.
      if (auto it = pending_.find(key_bytes(key)); it != pending_.end()) {
        if (it->second.cycle == cycle_.number) {
          --cycle_.unresolved[target];
        } else {
          it->second.cycle = cycle_.number;
          ++cycle_.samples[target].sent;
        }
        return;
      }
      break;
  }

  // A probe still watched for a late reply keeps its key: draw another port (bounded; a clash
  // left over only replaces the watched entry, which costs the estimator one sample).
  for (int redraw = 0; redraw < 4 && pending_.count(key_bytes(key)) != 0; ++redraw) {
    if (key.kind == PROBE_KIND_TCP || key.kind == PROBE_KIND_DNS) {
      key.ident = static_cast<uint16_t>(32768 + random_u64() % 28000);
    } else if (key.kind == PROBE_KIND_UDP) {
      key.ident = udp_probe_port();
    }
  }
  Pending p{key, cycle_.number, target, now + probe_timeout_ns(target), 0, now};
  int err = 0;
  for (int attempt = 0; attempt < 4; ++attempt) {
    value.sent_ns = static_cast<uint64_t>(monotonic_ns());
    // Registered before it leaves: a fast reply must find its entry.
    err = dp_.insert_probe(key, value);
    if (err != 0) break;
    switch (key.kind) {
      case PROBE_KIND_ICMP:
      case PROBE_KIND_ICMPV6:
        err = transport_->send_echo(ip, key.ident, key.seq, nonce, echo_payload_size());
        break;
      case PROBE_KIND_UDP:
        err = transport_->send_udp_probe(ip, cfg_.track_port, key.ident, nonce);
        if (err == 0) p.dns_port = key.ident;
        break;
      case PROBE_KIND_TCP:
        err = transport_->send_tcp_syn(ip, cfg_.track_port, key.ident, static_cast<uint32_t>(value.nonce));
        break;
      case PROBE_KIND_DNS:
        err = transport_->send_dns_query(ip, key.ident, key.seq, cfg_.dns_query_name);
        if (err == 0) p.dns_port = key.ident;
        break;
      case PROBE_KIND_ARP:
        err = transport_->send_arp_request(ip);
        break;
    }
    if (err != -EADDRINUSE) break;
    dp_.remove_probe(key);
    key.ident =
        key.kind == PROBE_KIND_UDP ? udp_probe_port() : static_cast<uint16_t>(32768 + random_u64() % 28000);
  }
  p.key = key;
  p.value = value;
  ++sent_;
  ++windows_[target].sent;
  ++cycle_.samples[target].sent;
  if (err != 0) {
    // A probe that cannot leave (no route, device gone) counts as lost, as a failing ping would.
    dp_.remove_probe(key);
    resolve(p, std::nullopt, now);
    return;
  }
  pending_[key_bytes(key)] = p;
}

void UplinkMonitor::on_reply(const probe_reply_event& event, int64_t now) {
  auto it = pending_.find(key_bytes(event.key));
  if (it == pending_.end()) return;  // answered after we gave up on it, or from a previous run
  Pending p = it->second;
  pending_.erase(it);
  release(p);
  const double rtt_ms = static_cast<double>(event.rtt_ns) / 1e6;
  if (p.late_watch) {
    // Counted lost already; the RTT it measured is still true, and tells the estimator how far
    // the queue has grown past the timeout.
    log::debug(cfg_.name + ": " + cfg_.track_ip[p.target].str() + " replied " + std::to_string(rtt_ms) +
               " ms, after its timeout");
    learn_rtt(p.target, rtt_ms);
    return;
  }
  resolve(p, rtt_ms, now);
}

void UplinkMonitor::learn_rtt(size_t target, std::optional<double> rtt_ms) {
  auto& estimator = windows_[target].timeout;
  if (!estimator || !rtt_ms) return;  // fixed timeout; or a loss, which teaches nothing (Karn)
  estimator->on_result(*rtt_ms / 1e3);
  // Every target's: one that has not answered yet borrows this one's estimate.
  for (auto& [_, p] : pending_) {
    if (!p.late_watch) p.deadline = std::max(p.deadline, p.sent_at + probe_timeout_ns(p.target));
  }
}

int64_t UplinkMonitor::probe_timeout_ns(size_t target) const {
  const auto& estimator = windows_[target].timeout;
  if (!estimator) return seconds_to_ns(cfg_.timeout_s);
  if (estimator->samples() > 0) return seconds_to_ns(estimator->timeout_s());
  // No reply from this target yet: mwan3 probes a later target only when the earlier ones fail, so
  // with reliability 1 the second target is first probed in an outage, where the cap would stretch
  // detection to down x cap. Its probes wait behind the same access link's queue as the others':
  // the longest estimate among them; with none, the cap.
  double borrowed_s = -1;
  for (const Window& w : windows_) {
    if (w.timeout && w.timeout->samples() > 0) borrowed_s = std::max(borrowed_s, w.timeout->timeout_s());
  }
  return seconds_to_ns(borrowed_s >= 0 ? borrowed_s : estimator->timeout_s());
}

// Only probes whose reply the XDP program matches by a key of their own: an ARP request's key is
// its target's (the next request would find it taken), and httping's exchange ends at its timeout.
bool UplinkMonitor::may_watch_late(const Pending& p) const {
  return cfg_.timeout_auto && p.http_id == 0 && p.key.kind != PROBE_KIND_ARP;
}

void UplinkMonitor::expire(int64_t now) {
  std::vector<std::string> due;
  for (const auto& [k, p] : pending_) {
    if (p.deadline <= now) due.push_back(k);
  }
  for (const auto& k : due) expire_one(k, now);
}

void UplinkMonitor::expire_one(const std::string& k, int64_t now) {
  auto it = pending_.find(k);
  if (it == pending_.end()) return;
  if (it->second.http_id == 0 && !dp_.remove_probe(it->second.key)) {
    // XDP took the entry a moment ago: its event is in the ring buffer, read it now.
    dp_.poll_replies();
    it = pending_.find(k);
    if (it == pending_.end()) return;
  }
  Pending p = it->second;
  if (p.late_watch) {  // the watch is over: nothing came within the cap
    pending_.erase(it);
    release(p);
    return;
  }
  const int64_t watch_until = p.sent_at + seconds_to_ns(cfg_.timeout_auto ? cfg_.timeout_auto->max_s : 0);
  if (may_watch_late(p) && watch_until > now && dp_.insert_probe(p.key, p.value) == 0) {
    it->second.late_watch = true;
    it->second.deadline = watch_until;
  } else {
    pending_.erase(it);
    release(p);
  }
  resolve(p, std::nullopt, now);
}

void UplinkMonitor::resolve(const Pending& p, std::optional<double> rtt_ms, int64_t now) {
  Window& w = windows_[p.target];
  learn_rtt(p.target, rtt_ms);
  w.results.push_back(rtt_ms);
  if (w.results.size() > kWindow) w.results.pop_front();
  if (rtt_ms) {
    ++replied_;
    ++w.replied;
    w.rtt.add(*rtt_ms);
  } else {
    ++lost_;
    ++w.lost;
    if (first_failure_sent_ == 0) first_failure_sent_ = p.sent_at;
  }
  if (p.cycle != cycle_.number || cycle_.decided) return;  // a late result of an earlier cycle
  TargetSample& s = cycle_.samples[p.target];
  if (rtt_ms) {
    s.mean_rtt_ms = (s.mean_rtt_ms * s.replied + *rtt_ms) / (s.replied + 1);
    ++s.replied;
  }
  if (--cycle_.unresolved[p.target] == 0) {
    const TargetVerdict v = classify(s, params_);
    cycle_.verdicts[p.target] = v;
    w.state = v == TargetVerdict::Up ? "up" : v == TargetVerdict::Down ? "down" : "skipped";
  }
  try_decide(now);
}

void UplinkMonitor::try_decide(int64_t now) {
  auto result = evaluate_cycle(cycle_.verdicts, cfg_.reliability);
  if (!result) return;
  cycle_.decided = true;
  // Targets the cycle did not need are "skipped", as mwan3track reports them.
  for (size_t t = 0; t < cycle_.verdicts.size(); ++t) {
    if (!cycle_.verdicts[t] && cycle_.samples[t].sent == 0) windows_[t].state = "skipped";
  }
  const Step step = tracker_.on_cycle(*result);
  next_cycle_at_ = std::max(cycle_.start + seconds_to_ns(step.sleep_s), now);
  const bool went_offline =
      std::find(step.actions.begin(), step.actions.end(), Action::Disconnected) != step.actions.end();
  if (went_offline && first_failure_sent_ != 0) {
    last_detection_s_ = static_cast<double>(now - first_failure_sent_) / 1e9;
  }
  // A cycle that passed ends the run of failures an outage's detection is measured from.
  if (result->host_up_count >= cfg_.reliability || went_offline) first_failure_sent_ = 0;
  apply(step, false);
  observe_cycle(now);
}

// The cycle's point for the status page: per target the mean RTT of its replies (NaN when it had
// none), and the share of the resolved probes that were lost.
void UplinkMonitor::observe_cycle(int64_t now) {
  if (!cycle_observer_) return;
  observability::CyclePoint point;
  point.t_ns = now;
  point.state = point_state(tracker_.state());
  int resolved = 0, lost = 0;
  for (size_t t = 0; t < cycle_.samples.size(); ++t) {
    const TargetSample& s = cycle_.samples[t];
    point.rtt_ms.push_back(s.replied > 0 ? static_cast<float>(s.mean_rtt_ms) : std::nanf(""));
  }
  for (size_t t = 0; t < cycle_.samples.size(); ++t) {
    if (!cycle_.verdicts[t]) continue;  // still in flight when the cycle was decided
    resolved += cycle_.samples[t].sent;
    lost += cycle_.samples[t].sent - cycle_.samples[t].replied;
  }
  point.loss_pct = resolved > 0 ? 100.0F * static_cast<float>(lost) / static_cast<float>(resolved) : 0.0F;
  cycle_observer_(point);
}

std::vector<TargetStatus> UplinkMonitor::targets() const {
  std::vector<TargetStatus> out;
  for (size_t i = 0; i < cfg_.track_ip.size(); ++i) {
    const Window& w = windows_[i];
    TargetStatus t;
    t.ip = cfg_.track_ip[i];
    t.state = running_ ? w.state : "unknown";
    t.sent = w.sent;
    t.replied = w.replied;
    t.lost = w.lost;
    t.rtt_histogram = w.rtt.json();
    if (w.timeout) t.timeout_ms = static_cast<double>(probe_timeout_ns(i)) / 1e6;
    double sum = 0;
    int replies = 0;
    for (const auto& r : w.results) {
      if (r) {
        sum += *r;
        ++replies;
      }
    }
    t.rtt_ms = replies > 0 ? sum / replies : 0;
    t.loss_pct =
        w.results.empty() ? 0 : 100.0 * static_cast<double>(w.results.size() - replies) / w.results.size();
    out.push_back(t);
  }
  return out;
}

// The interface's figures come from the targets its cycles still probe: a skipped target's window
// holds results from whenever it was last needed (e.g. an old outage).
double UplinkMonitor::rtt_ms() const {
  double sum = 0;
  int n = 0;
  for (const auto& t : targets()) {
    if (t.state != "skipped" && t.replied > 0 && t.loss_pct < 100) {
      sum += t.rtt_ms;
      ++n;
    }
  }
  return n > 0 ? sum / n : 0;
}

double UplinkMonitor::loss_pct() const {
  size_t total = 0, lost = 0;
  for (const auto& w : windows_) {
    if (w.state == "skipped") continue;
    total += w.results.size();
    for (const auto& r : w.results) lost += r ? 0 : 1;
  }
  return total > 0 ? 100.0 * static_cast<double>(lost) / static_cast<double>(total) : 0;
}

}  // namespace uplinkd::health
