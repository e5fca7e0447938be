#include "cli/common.h"

#include <charconv>
#include <ctime>

#include "base/log.h"

namespace profctl::cli {

void add_common_options(CLI::App& app, CommonOptions& opts) {
  app.add_flag("-v,--verbose", opts.verbose, "Diagnostics on stderr (-v debug, -vv trace)");
  app.add_option("--log", opts.log_spec, "Per-stage log levels, e.g. attach=debug,unwind=trace");
  app.add_flag("--debuginfod", opts.debuginfod,
               "Let libdwfl fetch missing debug info from debuginfod (DEBUGINFOD_URLS)");
}

void apply_logging(const CommonOptions& opts) {
  auto level = opts.verbose >= 2   ? spdlog::level::trace
               : opts.verbose == 1 ? spdlog::level::debug
                                   : spdlog::level::warn;
  if (!configure_logging(level, opts.log_spec)) {
    throw UserError(ExitCode::kUsage, "bad --log value '" + opts.log_spec + "'",
                    "use STAGE=LEVEL[,STAGE=LEVEL...], levels trace debug info warn error off");
  }
}

pid_t parse_pid(const std::string& text) {
  long v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || p != text.data() + text.size() || v <= 0 || v > 0x3fffffff) {
    throw UserError(ExitCode::kUsage, "'" + text + "' is not a process id",
                    "give a positive number, e.g. profctl stack $(pidof app)");
  }
  return static_cast<pid_t>(v);
}

void throw_attach_error(const AttachError& e) {
  throw UserError(ExitCode::kAttach, e.message, e.hint);
}

std::string utc_now_rfc3339() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace profctl::cli
