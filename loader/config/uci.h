// A small reader for OpenWrt's UCI file format (mwan3 and network files): sections with a type and a
// name, options and lists with the line each came from. Grammar in ../shared/reference/mwan3-behaviour.md
// section 1; merge rules follow libuci (a repeated named section adds to the first one).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace uplinkd::config::uci {

struct Value {
  std::string text;
  int line = 0;
};

struct Option {
  std::string name;
  bool is_list = false;       // set by `list`; `option` replaces whatever was there
  std::vector<Value> values;  // one for `option`, one per `list` line otherwise
  int line = 0;               // line of the last `option`/`list` line that set it

  [[nodiscard]] const Value& last() const { return values.back(); }
};

struct Section {
  std::string type;
  std::string name;  // the given name, or mwan3's "@type[N]" (N counts sections of that type) when unnamed
  bool anonymous = false;
  int line = 0;                 // line of the `config` header (the first one when merged)
  std::vector<Option> options;  // in order of first appearance

  [[nodiscard]] const Option* find(std::string_view option) const;
};

struct Package {
  std::string file;
  std::vector<Section> sections;  // in file order

  [[nodiscard]] const Section* find(std::string_view type, std::string_view name) const;
};

// Parses UCI text. Throws config::ConfigError ("<file>:<line>: option '<o>': ...") on anything that is
// not a `config`, `option`, `list` or `package` line, a comment or a blank line.
// Whitespace between tokens is spaces, tabs, CR and U+00A0 (no-break space, as copied from web pages).
Package parse(std::string_view text, const std::string& file);

}  // namespace uplinkd::config::uci
