// CtMarkRules through libnftables: nft's own parser and transaction, so the rules read exactly as
// `nft list table inet <table>` shows them and a whole change is one atomic commit.
#include "netlink/ct_mark.h"

#include <nftables/libnftables.h>

#include <cstdio>
#include <stdexcept>
#include <string>
#include <utility>

#include "common/log.h"

namespace uplinkd::netlink {
namespace {

constexpr const char* kChain = "postrouting";
constexpr size_t kMaxTableName = 255;  // NFT_TABLE_MAXNAMELEN less its terminating zero

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

void check_marks(uint32_t mmx_mask, const std::vector<uint32_t>& marks) {
  if (mmx_mask == 0) {
    throw std::invalid_argument("ct mark rules: mmx_mask is 0");
  }
  for (uint32_t mark : marks) {
    if (mark == 0 || (mark & ~mmx_mask) != 0) {
      throw std::invalid_argument("ct mark rules: uplink mark " + hex(mark) + " is " +
                                  (mark == 0 ? "0" : "outside mmx_mask " + hex(mmx_mask)));
    }
  }
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

}  // namespace

std::string CtMarkRules::commands_for(const std::string& table, uint32_t mmx_mask,
                                      const std::vector<uint32_t>& uplink_marks) {
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
  for (uint32_t mark : uplink_marks) {
    const std::string m = hex(mark);
    commands.append("add rule ").append(where).append(" ").append(kChain);
    commands.append(" meta mark & ").append(mask).append(" == ").append(m);
    commands.append(" ct mark & ").append(mask).append(" != ").append(m);
    commands.append(" ct mark set ct mark & ").append(keep).append(" | ").append(m).append("\n");
  }
  return commands;
}

CtMarkRules::CtMarkRules(std::string table, uint32_t mmx_mask, std::vector<uint32_t> uplink_marks)
    : table_(std::move(table)), mmx_mask_(mmx_mask) {
  check_table_name(table_);
  check_marks(mmx_mask_, uplink_marks);
  nft_ = nft_ctx_new(NFT_CTX_DEFAULT);
  if (nft_ == nullptr) {
    throw std::runtime_error("ct mark rules: cannot create an nftables context (out of memory?)");
  }
  nft_ctx_buffer_output(nft_);
  nft_ctx_buffer_error(nft_);
  try {
    run(commands_for(table_, mmx_mask_, uplink_marks), "installing");
  } catch (...) {
    nft_ctx_free(nft_);
    throw;
  }
  marks_ = std::move(uplink_marks);
}

CtMarkRules::~CtMarkRules() {
  if (nft_ == nullptr) {
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

void CtMarkRules::update(std::vector<uint32_t> uplink_marks) {
  check_marks(mmx_mask_, uplink_marks);
  run(commands_for(table_, mmx_mask_, uplink_marks), "updating");
  marks_ = std::move(uplink_marks);
}

void CtMarkRules::run(const std::string& commands, const std::string& what) {
  if (nft_run_cmd_from_buffer(nft_, commands.c_str()) != 0) {
    throw std::runtime_error("ct mark rules: " + what + " table inet " + table_ + ": " + error_text(nft_) +
                             " (needs CAP_NET_ADMIN and nf_tables)");
  }
}

}  // namespace uplinkd::netlink
