#include "core/corpus.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <set>
#include <string_view>

#include "core/error.h"
#include "core/hash.h"
#include "core/token_file.h"

namespace keel {

namespace fs = std::filesystem;

namespace {

uint64_t mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  return h * 0xff51afd7ed558ccdull;
}

std::vector<std::string> list_files(const CorpusOptions& o) {
  std::vector<std::string> files;
  std::set<std::string> seen;
  auto add = [&](const fs::path& p) {
    std::error_code ec;
    const auto canon = fs::canonical(p, ec).string();
    if (ec || !seen.insert(canon).second) return;
    files.push_back(p.string());
  };
  for (const auto& in : o.inputs) {
    KEEL_CHECK_KIND(ErrorKind::kIo, fs::exists(in), "corpus input " << in << " does not exist");
    if (fs::is_directory(in)) {
      std::vector<fs::path> found;
      for (const auto& e : fs::recursive_directory_iterator(in))
        if (e.is_regular_file()) found.push_back(e.path());
      std::sort(found.begin(), found.end());
      for (const auto& p : found) add(p);
    } else {
      add(in);
    }
  }
  return files;
}

bool looks_binary(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  char buf[4096];
  f.read(buf, sizeof buf);
  return std::find(buf, buf + f.gcount(), '\0') != buf + f.gcount();
}

}  // namespace

CorpusSplit parse_corpus_split(const std::string& name) {
  if (name == "auto") return CorpusSplit::kAuto;
  if (name == "document") return CorpusSplit::kDocument;
  if (name == "paragraph") return CorpusSplit::kParagraph;
  if (name == "block") return CorpusSplit::kBlock;
  if (name == "tail") return CorpusSplit::kTail;
  KEEL_FAIL("--split must be auto, document, paragraph, block or tail, not '" << name << "'");
}

void CorpusOptions::validate() const {
  KEEL_CHECK(val_fraction >= 0 && val_fraction < 1, "--val-fraction must be in [0, 1), not " << val_fraction);
  KEEL_CHECK(block_chars >= 1, "--block-chars must be at least 1, not " << block_chars);
}

namespace {

bool blank(std::string_view text) { return text.find_first_not_of(" \t\r\n") == std::string_view::npos; }

// Start offsets of a document's pieces (the first is 0), then the document's size.
std::vector<size_t> piece_bounds(const std::string& doc, CorpusSplit mode, const CorpusOptions& o) {
  std::vector<size_t> b{0};
  auto line_start_at_or_after = [&](size_t pos) {
    if (pos == 0 || pos >= doc.size()) return std::min(pos, doc.size());
    const size_t nl = doc.find('\n', pos - 1);
    return nl == std::string::npos ? doc.size() : nl + 1;
  };
  if (mode == CorpusSplit::kTail) {
    b.push_back(line_start_at_or_after(static_cast<size_t>(static_cast<double>(doc.size()) * (1.0 - o.val_fraction))));
  } else if (mode == CorpusSplit::kBlock) {
    for (size_t next; (next = line_start_at_or_after(b.back() + static_cast<size_t>(o.block_chars))) < doc.size();)
      b.push_back(next);
  } else {  // paragraph: a piece starts at each non-blank line that follows a blank one
    bool after_blank = false;
    for (size_t pos = 0; pos < doc.size();) {
      const size_t nl = doc.find('\n', pos);
      const size_t end = nl == std::string::npos ? doc.size() : nl + 1;
      const bool is_blank = blank(std::string_view(doc).substr(pos, end - pos));
      if (!is_blank && after_blank && pos > 0) b.push_back(pos);
      after_blank = is_blank;
      pos = end;
    }
  }
  b.push_back(doc.size());
  return b;
}

// Emits a document's pieces. `h` is the document's hash: it seeds the held-out sample.
void emit_pieces(const std::string& doc, CorpusSplit mode, uint64_t h, const CorpusOptions& o,
                 const std::function<void(const CorpusPiece&)>& fn) {
  const auto b = piece_bounds(doc, mode, o);
  std::vector<std::pair<size_t, size_t>> pieces;  // non-blank [begin, end)
  for (size_t i = 0; i + 1 < b.size(); ++i)
    if (b[i + 1] > b[i] && !blank(std::string_view(doc).substr(b[i], b[i + 1] - b[i]))) pieces.emplace_back(b[i], b[i + 1]);
  const double u = static_cast<double>(h >> 11) * 0x1.0p-53;  // the systematic sample's offset in [0, 1)
  for (size_t i = 0; i < pieces.size(); ++i) {
    const bool held_out = mode == CorpusSplit::kTail ? pieces[i].first > 0 && pieces[i].first == b[1]
                                                     : std::floor(u + static_cast<double>(i + 1) * o.val_fraction) >
                                                           std::floor(u + static_cast<double>(i) * o.val_fraction);
    const std::string text = doc.substr(pieces[i].first, pieces[i].second - pieces[i].first);
    fn({text, held_out, i + 1 == pieces.size()});
  }
}

}  // namespace

void for_each_piece(const CorpusOptions& o, const std::function<void(const CorpusPiece&)>& fn) {
  o.validate();
  int64_t index = 0;  // non-blank documents so far
  auto emit = [&](const std::string& path, const std::string& doc, bool unseparated_plain_text) {
    if (blank(doc)) return;
    const uint64_t h = mix(mix(o.seed, fnv1a64(path)), static_cast<uint64_t>(index++));
    CorpusSplit mode = o.split;
    if (mode == CorpusSplit::kAuto) {
      // A file short enough to be one block keeps the document rule: a directory of small text
      // files splits as it always has.
      const bool blocks = unseparated_plain_text && piece_bounds(doc, CorpusSplit::kBlock, o).size() > 2;
      mode = blocks ? CorpusSplit::kBlock : CorpusSplit::kDocument;
    }
    if (mode == CorpusSplit::kDocument)
      fn({doc, static_cast<double>(h % 1000000) < o.val_fraction * 1e6, true});
    else
      emit_pieces(doc, mode, h, o, fn);
  };
  for (const auto& path : list_files(o)) {
    if (looks_binary(path)) {
      std::cerr << "corpus: skipped binary file " << path << "\n";
      continue;
    }
    if (path.size() > 6 && path.compare(path.size() - 6, 6, ".jsonl") == 0) {
      read_jsonl(path, o.bad_lines, [&](const nlohmann::json& j) {
        KEEL_CHECK(j.is_object() && j.contains("text") && j["text"].is_string(), "missing string field 'text'");
        emit(path, j["text"].get<std::string>(), false);
      });
      continue;
    }
    std::ifstream f(path);
    std::string line, doc;
    while (std::getline(f, line)) {
      if (!o.doc_separator.empty() && line == o.doc_separator) {
        emit(path, doc, false);
        doc.clear();
      } else {
        doc += line;
        doc += '\n';
      }
    }
    emit(path, doc, o.doc_separator.empty());
  }
}

namespace {

// Appends pieces to the two token files. Consecutive pieces of one document that go to the same
// part are one stretch of the original text, encoded at once (as it would be unsplit); a stretch
// ends, with EOS, at the end of a document and where the next piece goes to the other part.
class PartWriter {
 public:
  PartWriter(const Tokenizer& tok, const std::string& out_dir)
      : tok_(tok), eos_(tok.specials().eos), train_(out_dir + "/train.bin", tok.vocab_size(), eos_),
        val_(out_dir + "/val.bin", tok.vocab_size(), eos_) {}
  void add(const CorpusPiece& p, CorpusStats& s) {
    if (open_ && p.held_out != held_out_) flush();
    stretch_ += p.text;
    held_out_ = p.held_out;
    open_ = true;
    (p.held_out ? s.docs_val : s.docs_train)++;
    if (p.ends_document) flush();
  }
  void finish(CorpusStats& s) {
    if (open_) flush();
    s.tokens_train = train_.count();
    s.tokens_val = val_.count();
    train_.finish();
    val_.finish();
  }

 private:
  void flush() {
    auto ids = tok_.encode(stretch_);
    ids.push_back(eos_);
    (held_out_ ? val_ : train_).append(ids);
    stretch_.clear();
    open_ = false;
  }
  const Tokenizer& tok_;
  int32_t eos_;
  TokenFileWriter train_, val_;
  std::string stretch_;
  bool open_ = false, held_out_ = false;
};

}  // namespace

CorpusStats tokenize_corpus(const CorpusOptions& o, const Tokenizer& tok, const std::string& out_dir) {
  KEEL_CHECK(tok.specials().eos >= 0, "the tokenizer has no EOS token to separate documents");
  fs::create_directories(out_dir);
  PartWriter parts(tok, out_dir);
  CorpusStats s;
  s.files = static_cast<int64_t>(list_files(o).size());
  for_each_piece(o, [&](const CorpusPiece& p) { parts.add(p, s); });
  KEEL_CHECK(s.docs_train > 0, "corpus has no training text: all "
                                   << s.docs_val << " piece(s) drawn for held-out at --val-fraction " << o.val_fraction
                                   << "; lower --val-fraction, or cut the text finer with "
                                      "--split block (--block-chars), --split paragraph or --split tail");
  KEEL_CHECK(s.docs_val > 0,
             "corpus has no held-out text: " << s.docs_train << " piece(s), none drawn at --val-fraction " << o.val_fraction
                                             << "; raise --val-fraction, or cut the text finer with "
                                                "--split block (--block-chars), --split paragraph or --split tail");
  parts.finish(s);
  return s;
}

double unigram_cross_entropy(const std::string& train_file, const std::string& eval_file) {
  TokenFile tr(train_file), ev(eval_file);
  std::vector<double> counts(static_cast<size_t>(tr.vocab_size()), 1.0);
  for (int64_t i = 0; i < tr.size(); ++i) counts[static_cast<size_t>(tr[i])] += 1.0;
  const double total = static_cast<double>(tr.size() + tr.vocab_size());
  double nll = 0;
  for (int64_t i = 0; i < ev.size(); ++i) nll -= std::log(counts[static_cast<size_t>(ev[i])] / total);
  return nll / static_cast<double>(ev.size());
}

}  // namespace keel
