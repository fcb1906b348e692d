// CtMarkRules through libnftables: nft's own parser and transaction, so the rules read exactly as
// `nft list table inet <table>` shows them and a whole change is one atomic commit.
#include "netlink/ct_mark.h"

#include <nftables/libnftables.h>

#include <cstdio>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>

#include "common/log.h"
#include "lifecycle/teardown.h"

namespace uplinkd::netlink {
namespace {

constexpr const char* kChain = "postrouting";
constexpr const char* kInboundChain = "prerouting";
constexpr const char* kAnswerChain = "answer";  // a reply from the LAN side to an inbound connection
constexpr size_t kMaxDeviceName = 15;           // IFNAMSIZ less its terminating zero
constexpr size_t kMaxTableName = 255;           // NFT_TABLE_MAXNAMELEN less its terminating zero

std::string hex(uint32_t value) {
  char text[16];
  std::snprintf(text, sizeof text, "0x%08x", value);
  return text;
}

bool is_letter(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

// What nft's scanner takes as an unquoted name; anything else could change the commands' meaning.
void check_table_name(const std::string& table) {
  bool ok = !table.empty() && table.size() <= kMaxTableName && (is_letter(table[0]) || table[0] == '_');
  for (char c : table) {
    ok = ok && (is_letter(c) || is_digit(c) || c == '_' || c == '.' || c == '-');
  }
  if (!ok) {
    throw std::invalid_argument("ct mark rules: table name '" + table +
                                "' is not an nft identifier (letters, digits, '_', '.', '-', at most 255, "
                                "starting with a letter or '_')");
  }
}

// Device names go into the rules as quoted strings: nothing in them may end or escape the quote.
bool is_quotable_device(const std::string& device) {
  if (device.size() > kMaxDeviceName) return false;
  for (char c : device) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte <= ' ' || byte == 0x7f || c == '"' || c == '\\') return false;
  }
  return true;
}

void check_uplinks(uint32_t mmx_mask, const std::vector<UplinkMark>& uplinks) {
  if (mmx_mask == 0) {
    throw std::invalid_argument("ct mark rules: mmx_mask is 0");
  }
  for (const UplinkMark& uplink : uplinks) {
    if (uplink.mark == 0 || (uplink.mark & ~mmx_mask) != 0) {
      throw std::invalid_argument("ct mark rules: uplink mark " + hex(uplink.mark) + " is " +
                                  (uplink.mark == 0 ? "0" : "outside mmx_mask " + hex(mmx_mask)));
    }
    if (!is_quotable_device(uplink.device)) {
      throw std::invalid_argument("ct mark rules: device name '" + uplink.device +
                                  "' is not a network device name (at most 15 bytes, no blanks, quotes or "
                                  "backslashes)");
    }
  }
}

std::string quoted(const std::string& device) { return "\"" + device + "\""; }

// `{ "wan", "wwan" }`: the uplink devices, for the reply rule's "not from an uplink".
std::string device_set(const std::vector<UplinkMark>& uplinks) {
  std::string set;
  for (const UplinkMark& uplink : uplinks) {
    if (uplink.device.empty() || set.find(quoted(uplink.device)) != std::string::npos) continue;
    set += (set.empty() ? "{ " : ", ") + quoted(uplink.device);
  }
  return set.empty() ? set : set + " }";
}

// nft keeps error text in its own buffer while buffering is on; empty when there is none.
std::string error_text(nft_ctx* nft) {
  const char* text = nft_ctx_get_error_buffer(nft);
  std::string message = text != nullptr ? text : "";
  while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) {
    message.pop_back();
  }
  return message.empty() ? "nft gave no message" : message;
}

// The prerouting chain for connections that come in on an uplink. A LAN flow's packet, the most
// common by far, leaves it after two ct tests (neither new from an uplink nor a reply): a vmap keyed
// by the arrival device picks the uplink, rather than one rule per uplink testing each name.
std::string inbound_commands(const std::string& where, uint32_t mmx_mask,
                             const std::vector<UplinkMark>& uplinks, const std::string& uplink_devices) {
  const std::string mask = hex(mmx_mask);
  const std::string keep = hex(~mmx_mask);
  std::string commands;
  const auto add = [&](const char* what, const std::string& chain, const std::string& text) {
    commands.append(what).append(" ").append(where).append(" ").append(chain).append(text).append("\n");
  };
  // Chains first: a rule may only jump to a chain that exists. One device may carry two uplinks
  // (wan and wan6): the later one tags its new connections, as the rule written last did before.
  std::map<std::string, std::string> chain_of_device;
  for (size_t i = 0; i < uplinks.size(); ++i) {
    if (uplinks[i].device.empty()) continue;
    const std::string chain = "inbound_" + std::to_string(i);
    add("add chain", chain, "");
    add("add rule", chain, " ct mark set ct mark & " + keep + " | " + hex(uplinks[i].mark));
    chain_of_device[uplinks[i].device] = chain;
  }
  add("add chain", kAnswerChain, "");
  add("add rule", kAnswerChain, " iifname " + uplink_devices + " return");
  for (const UplinkMark& uplink : uplinks) {
    if (uplink.device.empty()) continue;
    const std::string m = hex(uplink.mark);
    std::string rule = " ct mark & " + mask;
    rule.append(" == ").append(m).append(" meta mark set meta mark & ").append(keep);
    add("add rule", kAnswerChain, rule.append(" | ").append(m).append(" return"));
  }
  // dstnat + 1 (-99): after a port forward's DNAT, still before the routing decision.
  add("add chain", kInboundChain, " { type filter hook prerouting priority -99; policy accept; }");
  std::string vmap;
  for (const auto& [device, chain] : chain_of_device) {
    vmap.append(vmap.empty() ? "{ " : ", ").append(quoted(device)).append(" : goto ").append(chain);
  }
  add("add rule", kInboundChain, " ct state new iifname vmap " + vmap + " }");
  add("add rule", kInboundChain, std::string(" ct direction reply goto ") + kAnswerChain);
  return commands;
}

}  // namespace

std::string CtMarkRules::commands_for(const std::string& table, uint32_t mmx_mask,
                                      const std::vector<UplinkMark>& uplinks) {
  const std::string where = "inet " + table;
  // `add` then `delete` makes the delete valid whether or not a table is there, so one transaction
  // replaces a leftover (or the current) table with the new one.
  std::string commands = "add table " + where + "\n";
  commands += "delete table " + where + "\n";
  commands += "add table " + where + "\n";
  commands += "add chain " + where + " " + kChain +
              " { type filter hook postrouting priority mangle; policy accept; }\n";
  const std::string mask = hex(mmx_mask);
  const std::string keep = hex(~mmx_mask);
  for (const UplinkMark& uplink : uplinks) {
    const std::string m = hex(uplink.mark);
    commands.append("add rule ").append(where).append(" ").append(kChain);
    commands.append(" meta mark & ").append(mask).append(" == ").append(m);
    commands.append(" ct mark & ").append(mask).append(" != ").append(m);
    commands.append(" ct mark set ct mark & ").append(keep).append(" | ").append(m).append("\n");
  }
  const std::string uplink_devices = device_set(uplinks);
  if (uplink_devices.empty()) return commands;
  return commands + inbound_commands(where, mmx_mask, uplinks, uplink_devices);
}

CtMarkRules::CtMarkRules(std::string table, uint32_t mmx_mask, std::vector<UplinkMark> uplinks)
    : table_(std::move(table)), mmx_mask_(mmx_mask) {
  check_table_name(table_);
  check_uplinks(mmx_mask_, uplinks);
  nft_ = nft_ctx_new(NFT_CTX_DEFAULT);
  if (nft_ == nullptr) {
    throw std::runtime_error("ct mark rules: cannot create an nftables context (out of memory?)");
  }
  nft_ctx_buffer_output(nft_);
  nft_ctx_buffer_error(nft_);
  try {
    run(commands_for(table_, mmx_mask_, uplinks), "installing");
  } catch (...) {
    nft_ctx_free(nft_);
    throw;
  }
  uplinks_ = std::move(uplinks);
}

CtMarkRules::~CtMarkRules() {
  if (nft_ == nullptr) {
    return;
  }
  if (lifecycle::keep_kernel_state()) {  // the table keeps marking for the next daemon
    nft_ctx_free(nft_);
    return;
  }
  try {
    run("delete table inet " + table_ + "\n", "removing");
  } catch (const std::exception& e) {
    // Someone removed it already (`nft flush ruleset`): nothing of ours is left either way.
    log::warn(e.what());
  }
  nft_ctx_free(nft_);
}

void CtMarkRules::update(std::vector<UplinkMark> uplinks) {
  check_uplinks(mmx_mask_, uplinks);
  run(commands_for(table_, mmx_mask_, uplinks), "updating");
  uplinks_ = std::move(uplinks);
}

void CtMarkRules::run(const std::string& commands, const std::string& what) {
  if (nft_run_cmd_from_buffer(nft_, commands.c_str()) != 0) {
    throw std::runtime_error("ct mark rules: " + what + " table inet " + table_ + ": " + error_text(nft_) +
                             " (needs CAP_NET_ADMIN and nf_tables)");
  }
}

}  // namespace uplinkd::netlink
