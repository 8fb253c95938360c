// keel keys generate: a CURVE key pair for authenticated, encrypted transport (wire/curve.h).
#include <iostream>

#include "launch/commands.h"
#include "launch/options.h"
#include "wire/curve.h"

namespace keel {

int cmd_keys_generate(const Args& args) {
  std::string out;
  po::options_description d("keel keys generate");
  // clang-format off
  d.add_options()("out", po::value(&out)->required(), "writes OUT.pub (give to peers) and OUT.secret (mode 0600)");
  // clang-format on
  if (parse_options(args, "keys generate",
                    "Generates a CURVE key pair. Servers (learner, reward service) take --curve-key NAME.secret and "
                    "--curve-allow with the clients' .pub files; clients (actors) take their own --curve-key and "
                    "--curve-server-key SERVER.pub.",
                    d)
          .help)
    return 0;
  const auto keys = wire::generate_curve_keys();
  wire::write_curve_keys(out, keys);
  std::cout << out << ".pub: " << keys.public_key << "\n" << out << ".secret written (keep it private)\n";
  return 0;
}

}  // namespace keel
