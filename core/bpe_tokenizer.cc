// Byte-level BPE (GPT-2 / Hugging Face "ByteLevel"): text -> GPT-2 pre-tokenizer pieces -> bytes
// mapped to printable code points -> merges by rank. Loads tokenizer.json or vocab.json + merges.txt.
#include <clocale>
#include <cwctype>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "core/error.h"
#include "core/safetensors.h"
#include "core/tokenizer.h"

namespace keel {

using nlohmann::json;
namespace fs = std::filesystem;

std::unique_ptr<Tokenizer> make_sentencepiece_tokenizer(const std::string& path);

namespace {

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// Decodes UTF-8 into code points with their byte spans; invalid bytes become U+FFFD of length 1.
struct CodePoints {
  std::vector<char32_t> cp;
  std::vector<size_t> begin;  // byte offset of each code point; begin.back() == text size
};
CodePoints decode_utf8(const std::string& s) {
  CodePoints r;
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    char32_t v = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
    bool ok = len > 0 && i + len <= s.size();
    for (int k = 1; ok && k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      ok = (cc >> 6) == 2;
      v = (v << 6) | (cc & 0x3F);
    }
    r.begin.push_back(i);
    r.cp.push_back(ok ? v : 0xFFFD);
    i += ok ? len : 1;
  }
  r.begin.push_back(s.size());
  return r;
}

// Unicode classes of the GPT-2 pattern: \p{N} from a table of the numeric blocks, \p{L} from the
// C library's UTF-8 classification (minus the numbers it counts as alphabetic), \s as in regex.
bool is_number(char32_t c) {
  static const std::pair<char32_t, char32_t> kRanges[] = {
      {0x30, 0x39},     {0xB2, 0xB3},     {0xB9, 0xB9},       {0xBC, 0xBE},      {0x660, 0x669},   {0x6F0, 0x6F9},
      {0x7C0, 0x7C9},   {0x966, 0x96F},   {0x9E6, 0x9EF},     {0xA66, 0xA6F},    {0xAE6, 0xAEF},   {0xB66, 0xB6F},
      {0xBE6, 0xBF2},   {0xC66, 0xC6F},   {0xCE6, 0xCEF},     {0xD66, 0xD78},    {0xE50, 0xE59},   {0xED0, 0xED9},
      {0xF20, 0xF33},   {0x1040, 0x1049}, {0x1369, 0x137C},   {0x16EE, 0x16F0},  {0x17E0, 0x17E9}, {0x1810, 0x1819},
      {0x2070, 0x2070}, {0x2074, 0x2079}, {0x2080, 0x2089},   {0x2150, 0x2182},  {0x2185, 0x2189}, {0x2460, 0x249B},
      {0x24EA, 0x24FF}, {0x2776, 0x2793}, {0x2CFD, 0x2CFD},   {0x3007, 0x3007},  {0x3021, 0x3029}, {0x3038, 0x303A},
      {0x3192, 0x3195}, {0x3220, 0x3229}, {0x3248, 0x324F},   {0x3251, 0x325F},  {0x3280, 0x3289}, {0x32B1, 0x32BF},
      {0xA620, 0xA629}, {0xFF10, 0xFF19}, {0x1D7CE, 0x1D7FF}, {0x1F100, 0x1F10C}};
  for (const auto& [a, b] : kRanges)
    if (c >= a && c <= b) return true;
  return false;
}
locale_t utf8_locale() {
  static locale_t loc = newlocale(LC_CTYPE_MASK, "C.UTF-8", static_cast<locale_t>(0));
  return loc;
}
bool is_space(char32_t c) {
  if (c == ' ' || (c >= 0x09 && c <= 0x0D) || c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
      c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000 || c == 0xFEFF)
    return true;
  return false;
}
bool is_letter(char32_t c) {
  if (c < 0x80) return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
  if (is_number(c) || is_space(c)) return false;
  auto loc = utf8_locale();
  return loc ? iswalpha_l(static_cast<wint_t>(c), loc) != 0 : false;
}
enum class Cls { kLetter, kNumber, kSpace, kOther };
Cls cls(char32_t c) {
  return is_letter(c) ? Cls::kLetter : is_number(c) ? Cls::kNumber : is_space(c) ? Cls::kSpace : Cls::kOther;
}

// Splits by 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ ; returns byte spans.
std::vector<std::pair<size_t, size_t>> pretokenize(const std::string& text) {
  const auto u = decode_utf8(text);
  const size_t n = u.cp.size();
  std::vector<std::pair<size_t, size_t>> out;
  auto run = [&](size_t j, Cls c) {
    while (j < n && cls(u.cp[j]) == c) ++j;
    return j;
  };
  size_t i = 0;
  while (i < n) {
    size_t end = 0;
    const char32_t c = u.cp[i];
    if (c == '\'' && i + 1 < n) {
      const char32_t a = u.cp[i + 1], b = i + 2 < n ? u.cp[i + 2] : 0;
      if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
        end = i + 3;
      else if (a == 's' || a == 't' || a == 'm' || a == 'd')
        end = i + 2;
    }
    if (!end) {
      size_t j = (c == ' ' && i + 1 < n && cls(u.cp[i + 1]) != Cls::kSpace) ? i + 1 : i;
      const Cls k = cls(u.cp[j]);
      if (k != Cls::kSpace) {
        end = run(j + 1, k);
      } else {
        const size_t k_end = run(i, Cls::kSpace);
        end = (k_end == n || k_end - i == 1) ? k_end : k_end - 1;
      }
    }
    out.emplace_back(u.begin[i], u.begin[end]);
    i = end;
  }
  return out;
}

class ByteLevelBpe : public Tokenizer {
 public:
  ByteLevelBpe(std::unordered_map<std::string, int32_t> vocab, const std::vector<std::pair<std::string, std::string>>& merges,
               std::vector<std::pair<std::string, int32_t>> added, const std::string& identity)
      : vocab_(std::move(vocab)), added_(std::move(added)) {
    identity_ = "bpe:" + identity;
    for (size_t i = 0; i < merges.size(); ++i) ranks_[merges[i].first + " " + merges[i].second] = static_cast<int>(i);
    for (const auto& [tok, id] : vocab_) {
      size_ = std::max<int64_t>(size_, id + 1);
    }
    for (const auto& [tok, id] : added_) size_ = std::max<int64_t>(size_, id + 1);
    id_to_token_.assign(size_, "");
    for (const auto& [tok, id] : vocab_) id_to_token_[id] = tok;
    for (const auto& [tok, id] : added_) {
      id_to_token_[id] = tok;
      special_ids_.push_back(id);
    }
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      const char32_t cp = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + n++);
      append_utf8(byte_to_str_[b], cp);
      str_to_byte_[cp] = static_cast<uint8_t>(b);
    }
    auto find = [&](std::initializer_list<const char*> names) {
      for (const char* s : names) {
        for (const auto& [tok, id] : added_)
          if (tok == s) return id;
        auto it = vocab_.find(s);
        if (it != vocab_.end()) return it->second;
      }
      return -1;
    };
    specials_.bos = find({"<|begin_of_text|>", "<s>", "<|endoftext|>"});
    specials_.eos = find({"<|end_of_text|>", "</s>", "<|endoftext|>"});
    specials_.pad = find({"<pad>", "<|pad|>", "[PAD]", "<|finetune_right_pad_id|>"});
    if (specials_.pad == specials_.eos) specials_.pad = -1;
    // GPT-2's own files have "<|endoftext|>" in vocab.json but no added-token list.
    if (added_.empty() && specials_.eos >= 0) special_ids_.push_back(specials_.eos);
  }

  std::vector<int32_t> encode(const std::string& text) const override {
    std::vector<int32_t> ids;
    size_t pos = 0;
    while (pos < text.size()) {
      // The earliest added token in the rest of the text is matched literally.
      size_t best = std::string::npos, best_len = 0;
      int32_t best_id = -1;
      for (const auto& [tok, id] : added_) {
        const size_t at = text.find(tok, pos);
        if (at != std::string::npos && (at < best || (at == best && tok.size() > best_len))) {
          best = at;
          best_len = tok.size();
          best_id = id;
        }
      }
      const size_t stop = best == std::string::npos ? text.size() : best;
      encode_plain(text.substr(pos, stop - pos), ids);
      if (best == std::string::npos) break;
      ids.push_back(best_id);
      pos = best + best_len;
    }
    return ids;
  }

  std::string decode(const std::vector<int32_t>& ids) const override {
    std::string mapped, out;
    for (int32_t id : ids) {
      KEEL_CHECK(id >= 0 && id < size_, "token id " << id << " outside the vocabulary of " << size_);
      if (std::find(special_ids_.begin(), special_ids_.end(), id) != special_ids_.end()) continue;
      mapped += id_to_token_[id];
    }
    for (char32_t cp : decode_utf8(mapped).cp) {
      auto it = str_to_byte_.find(cp);
      if (it != str_to_byte_.end()) out += static_cast<char>(it->second);
    }
    return out;
  }
  int64_t vocab_size() const override { return size_; }

 private:
  void encode_plain(const std::string& text, std::vector<int32_t>& ids) const {
    for (const auto& [b, e] : pretokenize(text)) {
      std::string word;
      for (size_t i = b; i < e; ++i) word += byte_to_str_[static_cast<unsigned char>(text[i])];
      {
        std::lock_guard<std::mutex> lock(cache_mu_);
        auto it = cache_.find(word);
        if (it != cache_.end()) {
          ids.insert(ids.end(), it->second.begin(), it->second.end());
          continue;
        }
      }
      auto piece = bpe(word);
      ids.insert(ids.end(), piece.begin(), piece.end());
      std::lock_guard<std::mutex> lock(cache_mu_);
      if (cache_.size() < 100000) cache_.emplace(word, std::move(piece));
    }
  }

  std::vector<int32_t> bpe(const std::string& word) const {
    std::vector<std::string> parts;
    const auto u = decode_utf8(word);
    for (size_t i = 0; i + 1 < u.begin.size(); ++i) parts.push_back(word.substr(u.begin[i], u.begin[i + 1] - u.begin[i]));
    while (parts.size() > 1) {
      int best_rank = INT32_MAX;
      size_t best_i = 0;
      for (size_t i = 0; i + 1 < parts.size(); ++i) {
        auto it = ranks_.find(parts[i] + " " + parts[i + 1]);
        if (it != ranks_.end() && it->second < best_rank) {
          best_rank = it->second;
          best_i = i;
        }
      }
      if (best_rank == INT32_MAX) break;
      const std::string a = parts[best_i], b = parts[best_i + 1];
      std::vector<std::string> merged;
      for (size_t i = 0; i < parts.size();) {
        if (i + 1 < parts.size() && parts[i] == a && parts[i + 1] == b) {
          merged.push_back(a + b);
          i += 2;
        } else {
          merged.push_back(parts[i++]);
        }
      }
      parts.swap(merged);
    }
    std::vector<int32_t> out;
    for (const auto& p : parts) {
      auto it = vocab_.find(p);
      KEEL_CHECK(it != vocab_.end(), "byte-level BPE: piece '" << p << "' is not in the vocabulary");
      out.push_back(it->second);
    }
    return out;
  }

  std::unordered_map<std::string, int32_t> vocab_;
  std::vector<std::pair<std::string, int32_t>> added_;
  std::unordered_map<std::string, int> ranks_;
  std::vector<std::string> id_to_token_;
  std::vector<int32_t> special_ids_;
  std::string byte_to_str_[256];
  std::unordered_map<char32_t, uint8_t> str_to_byte_;
  int64_t size_ = 0;
  mutable std::mutex cache_mu_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

json parse_json_file(const std::string& path) {
  try {
    return json::parse(read_file(path));
  } catch (const json::exception& e) {
    KEEL_FAIL_KIND(ErrorKind::kCorruptData, path << ": not valid JSON: " << e.what());
  }
}

std::unique_ptr<Tokenizer> load_hf_tokenizer_json(const std::string& path) {
  const std::string bytes = read_file(path);
  const json j = parse_json_file(path);
  KEEL_CHECK(j.contains("model") && j["model"].value("type", "") == "BPE",
             path << ": only byte-level BPE tokenizer.json files are supported (model.type must be BPE)");
  std::unordered_map<std::string, int32_t> vocab;
  for (auto it = j["model"]["vocab"].begin(); it != j["model"]["vocab"].end(); ++it) vocab[it.key()] = it.value().get<int32_t>();
  std::vector<std::pair<std::string, std::string>> merges;
  for (const auto& m : j["model"]["merges"]) {
    if (m.is_array()) {
      merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    } else {
      const auto s = m.get<std::string>();
      const auto sp = s.find(' ');
      KEEL_CHECK_KIND(ErrorKind::kCorruptData, sp != std::string::npos, path << ": bad merge '" << s << "'");
      merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
    }
  }
  std::vector<std::pair<std::string, int32_t>> added;
  if (j.contains("added_tokens"))
    for (const auto& a : j["added_tokens"]) added.emplace_back(a["content"].get<std::string>(), a["id"].get<int32_t>());
  return std::make_unique<ByteLevelBpe>(std::move(vocab), merges, std::move(added), fingerprint(bytes));
}

std::unique_ptr<Tokenizer> load_vocab_merges(const std::string& dir) {
  const std::string vpath = dir + "/vocab.json", mpath = dir + "/merges.txt";
  const json v = parse_json_file(vpath);
  std::unordered_map<std::string, int32_t> vocab;
  for (auto it = v.begin(); it != v.end(); ++it) vocab[it.key()] = it.value().get<int32_t>();
  std::ifstream f(mpath);
  KEEL_CHECK_KIND(ErrorKind::kIo, f, "cannot open " << mpath);
  std::vector<std::pair<std::string, std::string>> merges;
  std::string line;
  int64_t lineno = 0;
  while (std::getline(f, line)) {
    ++lineno;
    if (line.empty() || line.rfind("#version", 0) == 0) continue;
    const auto sp = line.find(' ');
    KEEL_CHECK_KIND(ErrorKind::kCorruptData, sp != std::string::npos, mpath << ":" << lineno << ": merge line without a space");
    merges.emplace_back(line.substr(0, sp), line.substr(sp + 1));
  }
  return std::make_unique<ByteLevelBpe>(std::move(vocab), merges, std::vector<std::pair<std::string, int32_t>>{},
                                        fingerprint(read_file(vpath) + read_file(mpath)));
}

}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path) {
  KEEL_CHECK_KIND(ErrorKind::kIo, fs::exists(path), "tokenizer " << path << " does not exist");
  if (fs::is_directory(path)) {
    if (fs::exists(path + "/tokenizer.model")) return make_sentencepiece_tokenizer(path + "/tokenizer.model");
    if (fs::exists(path + "/tokenizer.json")) return load_hf_tokenizer_json(path + "/tokenizer.json");
    if (fs::exists(path + "/vocab.json") && fs::exists(path + "/merges.txt")) return load_vocab_merges(path);
    KEEL_FAIL_KIND(ErrorKind::kIo,
                   "directory " << path << " holds no tokenizer.model, tokenizer.json or vocab.json + merges.txt");
  }
  if (path.size() >= 5 && path.compare(path.size() - 5, 5, ".json") == 0) return load_hf_tokenizer_json(path);
  return make_sentencepiece_tokenizer(path);
}

}  // namespace keel
