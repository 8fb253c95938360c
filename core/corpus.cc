#include "core/corpus.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <set>

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

void for_each_document(const CorpusOptions& o, const std::function<void(const std::string&, bool)>& fn) {
  int64_t index = 0;
  auto emit = [&](const std::string& path, const std::string& doc) {
    if (doc.find_first_not_of(" \t\r\n") == std::string::npos) return;
    const uint64_t h = mix(mix(o.seed, fnv1a64(path)), static_cast<uint64_t>(index++));
    const bool held_out = static_cast<double>(h % 1000000) < o.val_fraction * 1e6;
    fn(doc, held_out);
  };
  for (const auto& path : list_files(o)) {
    if (looks_binary(path)) {
      std::cerr << "corpus: skipped binary file " << path << "\n";
      continue;
    }
    if (path.size() > 6 && path.compare(path.size() - 6, 6, ".jsonl") == 0) {
      read_jsonl(path, o.bad_lines, [&](const nlohmann::json& j) {
        KEEL_CHECK(j.is_object() && j.contains("text") && j["text"].is_string(), "missing string field 'text'");
        emit(path, j["text"].get<std::string>());
      });
      continue;
    }
    std::ifstream f(path);
    std::string line, doc;
    while (std::getline(f, line)) {
      if (!o.doc_separator.empty() && line == o.doc_separator) {
        emit(path, doc);
        doc.clear();
      } else {
        doc += line;
        doc += '\n';
      }
    }
    emit(path, doc);
  }
}

CorpusStats tokenize_corpus(const CorpusOptions& o, const Tokenizer& tok, const std::string& out_dir) {
  KEEL_CHECK(tok.specials().eos >= 0, "the tokenizer has no EOS token to separate documents");
  fs::create_directories(out_dir);
  TokenFileWriter train(out_dir + "/train.bin", tok.vocab_size(), tok.specials().eos);
  TokenFileWriter val(out_dir + "/val.bin", tok.vocab_size(), tok.specials().eos);
  CorpusStats s;
  s.files = static_cast<int64_t>(list_files(o).size());
  for_each_document(o, [&](const std::string& doc, bool held_out) {
    auto ids = tok.encode(doc);
    ids.push_back(tok.specials().eos);
    (held_out ? val : train).append(ids);
    (held_out ? s.docs_val : s.docs_train)++;
  });
  KEEL_CHECK(s.docs_train > 0, "corpus has no training documents");
  KEEL_CHECK(s.docs_val > 0, "corpus has no held-out documents; raise --val-fraction");
  s.tokens_train = train.count();
  s.tokens_val = val.count();
  train.finish();
  val.finish();
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
