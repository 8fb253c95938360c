// keel report: flags bound to replay/run_report.h.
#include <iostream>

#include "launch/commands.h"
#include "launch/options.h"
#include "replay/run_report.h"

namespace keel {

int cmd_report(const Args& args) {
  ReportOptions o;
  po::options_description d("keel report");
  // clang-format off
  d.add_options()("runs", po::value(&o.runs)->multitoken()->required(), "run directories (also as positional arguments)")(
      "out", po::value(&o.out)->required(), "the HTML file to write")(
      "title", po::value(&o.title)->default_value(o.title), "the report's title")(
      "rollout-samples", po::value(&o.rollout_samples)->default_value(o.rollout_samples), "rollouts shown per rollout log");
  // clang-format on
  po::positional_options_description positional;
  positional.add("runs", -1);
  if (parse_options(args, "report",
                    "One self-contained HTML file: every metric of the runs plotted against the step (runs overlaid), "
                    "their configurations, and their last logged rollouts.",
                    d, {}, nullptr, &positional)
          .help)
    return 0;
  const auto s = write_run_report(o);
  std::cerr << "report: " << s.series << " runs, " << s.plots << " plots, " << s.rollout_logs << " rollout logs\n";
  std::cout << o.out << "\n";
  return 0;
}

}  // namespace keel
