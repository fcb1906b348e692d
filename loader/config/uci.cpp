#include "config/uci.h"

#include <map>
#include <optional>
#include <utility>

#include "config/config.h"

namespace uplinkd::config::uci {
namespace {

struct Token {
  std::string text;
  bool quoted = false;
};

// A problem found while splitting a line; the caller adds file, line and option.
struct LineError {
  std::string message;
  std::vector<Token> tokens_so_far;
};

// U+00A0 in UTF-8. Web pages (and so the field reports) turn blank lines and indentation into it.
constexpr std::string_view kNoBreakSpace = "\xC2\xA0";

size_t whitespace_at(std::string_view line, size_t i) {
  char c = line[i];
  if (c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f') {
    return 1;
  }
  if (line.substr(i, kNoBreakSpace.size()) == kNoBreakSpace) {
    return kNoBreakSpace.size();
  }
  return 0;
}

// Splits one line into tokens. A token is a run of bare characters and quoted strings glued together
// (libuci: 'a'"b"c is "abc"). '#' starts a comment only where a token could start, so a bare value may
// contain it. Backslash escapes the next character outside single quotes.
std::vector<Token> tokenize(std::string_view line) {
  std::vector<Token> tokens;
  size_t i = 0;
  while (i < line.size()) {
    if (size_t ws = whitespace_at(line, i)) {
      i += ws;
      continue;
    }
    if (line[i] == '#') {
      break;
    }
    Token tok;
    while (i < line.size() && whitespace_at(line, i) == 0) {
      char c = line[i];
      if (c == '\'') {
        size_t end = line.find('\'', i + 1);
        if (end == std::string_view::npos) {
          throw LineError{"unclosed ' quote (close it on the same line)", tokens};
        }
        tok.text.append(line.substr(i + 1, end - i - 1));
        tok.quoted = true;
        i = end + 1;
      } else if (c == '"') {
        size_t j = i + 1;
        bool closed = false;
        while (j < line.size()) {
          if (line[j] == '\\' && j + 1 < line.size()) {
            tok.text += line[j + 1];
            j += 2;
          } else if (line[j] == '"') {
            closed = true;
            break;
          } else {
            tok.text += line[j++];
          }
        }
        if (!closed) {
          throw LineError{"unclosed \" quote (close it on the same line)", tokens};
        }
        tok.quoted = true;
        i = j + 1;
      } else if (c == '\\') {
        if (i + 1 >= line.size()) {
          throw LineError{"backslash at the end of the line (line continuation is not supported)", tokens};
        }
        tok.text += line[i + 1];
        i += 2;
      } else {
        tok.text += c;
        ++i;
      }
    }
    tokens.push_back(std::move(tok));
  }
  return tokens;
}

bool is_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

// libuci: section and option names are letters, digits and '_'; types may also contain '-'.
bool valid_name(std::string_view s, bool allow_dash) {
  if (s.empty()) {
    return false;
  }
  for (char c : s) {
    if (!is_name_char(c) && !(allow_dash && c == '-')) {
      return false;
    }
  }
  return true;
}

std::string quote(std::string_view s) { return "'" + std::string(s) + "'"; }

class Parser {
 public:
  Parser(std::string_view text, const std::string& file) : text_(text) { pkg_.file = file; }

  Package run() {
    int line_no = 0;
    size_t pos = 0;
    while (pos <= text_.size()) {
      size_t nl = text_.find('\n', pos);
      std::string_view line =
          text_.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
      ++line_no;
      parse_line(line, line_no);
      if (nl == std::string_view::npos) {
        break;
      }
      pos = nl + 1;
    }
    return std::move(pkg_);
  }

 private:
  [[noreturn]] void fail(int line, const std::string& option, const std::string& message) const {
    throw ConfigError(pkg_.file, line, option, message);
  }

  void parse_line(std::string_view line, int line_no) {
    std::vector<Token> tokens;
    try {
      tokens = tokenize(line);
    } catch (const LineError& e) {
      const auto& t = e.tokens_so_far;
      bool is_value_line = !t.empty() && (t[0].text == "option" || t[0].text == "list");
      if (is_value_line && t.size() >= 2) {
        fail(line_no, t[1].text, e.message);
      }
      fail(line_no, "", e.message);
    }
    if (tokens.empty()) {
      return;  // blank, whitespace-only or comment line
    }
    const std::string& keyword = tokens[0].text;
    if (!tokens[0].quoted && keyword == "config") {
      parse_config(tokens, line_no);
    } else if (!tokens[0].quoted && (keyword == "option" || keyword == "list")) {
      parse_value(tokens, line_no, keyword == "list");
    } else if (!tokens[0].quoted && keyword == "package") {
      // `uci export` output starts with `package <name>`; the file name already says which package.
      if (tokens.size() != 2) {
        fail(line_no, "", "expected: package <name>");
      }
    } else {
      fail(line_no, "",
           "unknown keyword " + quote(keyword) +
               " (expected config, option or list; quote values that contain spaces)");
    }
  }

  void parse_config(const std::vector<Token>& tokens, int line_no) {
    if (tokens.size() < 2 || tokens.size() > 3) {
      fail(line_no, "",
           "expected: config <type> ['<name>'], got " + std::to_string(tokens.size() - 1) +
               " word(s) after config");
    }
    const std::string& type = tokens[1].text;
    if (!valid_name(type, true)) {
      fail(line_no, "", "section type " + quote(type) + " may contain only letters, digits, '_' and '-'");
    }
    std::string name = tokens.size() == 3 ? tokens[2].text : "";
    if (name.empty()) {
      Section s;
      s.type = type;
      s.name = "@" + type + "[" + std::to_string(type_count_[type]++) + "]";
      s.anonymous = true;
      s.line = line_no;
      pkg_.sections.push_back(std::move(s));
      current_ = pkg_.sections.size() - 1;
      return;
    }
    if (!valid_name(name, false)) {
      fail(line_no, "", type + " " + quote(name) + ": section name may contain only letters, digits and '_'");
    }
    auto it = by_name_.find(name);
    if (it != by_name_.end()) {
      // libuci merges a repeated named section into the first one, unless the types differ.
      const Section& prior = pkg_.sections[it->second];
      if (prior.type != type) {
        fail(line_no, "",
             type + " " + quote(name) + ": name already used by the " + prior.type + " section on line " +
                 std::to_string(prior.line) + " (names must be unique)");
      }
      current_ = it->second;
      return;
    }
    Section s;
    s.type = type;
    s.name = name;
    s.line = line_no;
    ++type_count_[type];
    pkg_.sections.push_back(std::move(s));
    current_ = pkg_.sections.size() - 1;
    by_name_[name] = *current_;
  }

  void parse_value(const std::vector<Token>& tokens, int line_no, bool is_list) {
    const char* keyword = is_list ? "list" : "option";
    if (tokens.size() < 2) {
      fail(line_no, "", std::string("expected: ") + keyword + " <name> <value>");
    }
    const std::string& name = tokens[1].text;
    if (!valid_name(name, false)) {
      fail(line_no, name, "option name may contain only letters, digits and '_'");
    }
    if (tokens.size() < 3) {
      fail(line_no, name, std::string("missing value (expected: ") + keyword + " " + name + " '<value>')");
    }
    if (tokens.size() > 3) {
      fail(line_no, name,
           "unexpected " + quote(tokens[3].text) + " after the value (quote values that contain spaces)");
    }
    if (!current_) {
      fail(line_no, name, "outside a section (add a `config <type> '<name>'` line above it)");
    }
    Section& s = pkg_.sections[*current_];
    Value v{tokens[2].text, line_no};
    for (Option& o : s.options) {
      if (o.name != name) {
        continue;
      }
      if (is_list) {
        o.is_list = true;  // libuci turns an option into a list that keeps its value
        o.values.push_back(std::move(v));
      } else {
        o.is_list = false;
        o.values = {std::move(v)};
      }
      o.line = line_no;
      return;
    }
    s.options.push_back(Option{name, is_list, {std::move(v)}, line_no});
  }

  std::string_view text_;
  Package pkg_;
  std::optional<size_t> current_;
  std::map<std::string, size_t> by_name_;
  std::map<std::string, int> type_count_;
};

}  // namespace

const Option* Section::find(std::string_view option) const {
  for (const Option& o : options) {
    if (o.name == option) {
      return &o;
    }
  }
  return nullptr;
}

const Section* Package::find(std::string_view type, std::string_view name) const {
  for (const Section& s : sections) {
    if (s.type == type && s.name == name) {
      return &s;
    }
  }
  return nullptr;
}

Package parse(std::string_view text, const std::string& file) { return Parser(text, file).run(); }

}  // namespace uplinkd::config::uci
