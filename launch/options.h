// Command-line and INI configuration for every subcommand (Boost.Program_options).
// Options bind straight into each role's options struct; unknown options are errors; --config FILE
// reads "key = value" lines (command line wins); the resolved configuration is printed at start
// and stored with checkpoints; --check-config prints it and stops before any work.
#pragma once

#include <boost/program_options.hpp>
#include <map>
#include <string>
#include <vector>

#include "actors/sampler.h"
#include "core/model_config.h"
#include <memory>

#include "learner/train_loop.h"

namespace keel {

namespace po = boost::program_options;

struct ParsedOptions {
  bool help = false;     // --help or --check-config was given: usage or the configuration is printed; stop
  bool check = false;    // it was --check-config
  std::string resolved;  // INI text of every option's final value
};

// The [section] parts of a --config file, for a command that starts others (keel launch): the
// options under each header as command-line words, in pairs ("--key", "value"), values kept whole
// (to the end of the line: quotes stay, and as everywhere in Boost's INI files # starts a comment).
using ConfigSections = std::map<std::string, std::vector<std::string>>;

// Parses `args` (after the subcommand words). Throws KeelError naming an unknown or bad option,
// or a config file section that is not one of `section_names` (then `sections` receives them).
ParsedOptions parse_options(const std::vector<std::string>& args, const std::string& command, const std::string& summary,
                            po::options_description& desc, const std::vector<std::string>& section_names = {},
                            ConfigSections* sections = nullptr, const po::positional_options_description* positional = nullptr);

// Shared option groups.
void add_model_options(po::options_description& d, ModelConfig& c, std::string& family);
void add_train_options(po::options_description& d, TrainOptions& o);
void add_runtime_options(po::options_description& d, int& threads, std::string& device);
void add_sampling_options(po::options_description& d, SamplingConfig& s);

// Transport security (wire/curve.h) of a process that binds or connects ZeroMQ sockets.
struct TransportOptions {
  std::string key;                           // this process's NAME.secret
  std::string server_key;                    // the servers' NAME.pub (or .secret)
  std::string allow;                         // file of allowed client keys, or a directory of *.pub
  std::vector<std::string> as_args() const;  // the same options, to pass on to a child process
};
void add_transport_options(po::options_description& d, TransportOptions& t);
// Reads the key files and installs the process-wide policy; without --curve-key, sockets stay
// plain and may bind only to loopback.
void apply_transport(const TransportOptions& t);

// Applies --threads and --device; returns the device to compute on, which the caller must use in
// place of the --device string: plain `cuda` in a data-parallel rank becomes that rank's own GPU,
// cuda:(LOCAL_RANK mod GPUs). A CUDA device is also made the process's current one, so work that
// names no index (NCCL's own buffers, a synchronisation) goes to it and not to GPU 0.
[[nodiscard]] torch::Device apply_runtime(int threads, const std::string& device);

}  // namespace keel
