// A real Orthanc server for integration tests: a generated configuration in a temporary directory, the
// process on free loopback ports, started and stopped with bounded waits, and HTTP clients for it.
//
// The server runs in its own process group with stdout and stderr (Orthanc --verbose) appended to
// <directory>/orthanc.log. It is killed (PR_SET_PDEATHSIG) when the thread that started it ends, so that a
// test runner killed by a ctest timeout leaves no server behind: construct and restart() an OrthancProcess on
// a thread that outlives it (normally the test's own thread), not on a short-lived helper thread.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "http_client.h"
#include "temp_dir.h"

namespace comcl::testing {

class OrthancProcess {
 public:
  struct Options {
    std::vector<std::string> plugins;                       // paths of plugin .so files or folders
    nlohmann::json extraConfig = nlohmann::json::object();  // top-level keys replace the generated ones
    bool authentication = true;  // AuthenticationEnabled + RegisteredUsers {user: password}
    std::string user = "alice", password = "orthanctest";
    bool dicomServer = false;  // DicomServerEnabled on a free port, DicomAet "COMCLTEST"
    int stableAge = 1;
    std::chrono::seconds startTimeout{60};  // bound on waiting for GET /system to answer 200
    std::chrono::seconds stopTimeout{30};   // bound on waiting for exit after SIGTERM, then SIGKILL
    std::string executable = "";            // default: defaultExecutable()
    // Configuration files to start from (JSON with comments, e.g. Debian's /etc/orthanc/*.json). When given,
    // Orthanc is started on a configuration folder holding them, each generated key (ports, storage,
    // plugins, ...) set in the file that already defines it, or in the first file; comments are dropped.
    std::vector<std::string> configFiles;
  };

  // Creates the temporary directory (config.json, storage/, orthanc.log), starts Orthanc and waits until
  // GET /system answers 200. Throws std::runtime_error with the exit status (or the reason it gave up) and
  // the last lines of the log when it does not come up; retries once with new ports when a port was taken.
  explicit OrthancProcess(Options options);
  ~OrthancProcess();  // stop(); never throws
  OrthancProcess(const OrthancProcess&) = delete;
  OrthancProcess& operator=(const OrthancProcess&) = delete;

  // SIGTERM, wait up to Options::stopTimeout, then SIGKILL to the process group; records the exit status.
  // Does nothing when the process is not running.
  void stop();
  // SIGKILL now (a crash, a power cut): nothing of Orthanc's or the plugins' shutdown runs.
  void kill() noexcept { killNow(); }
  // stop() then start again with the same configuration, storage and ports (so the database persists).
  void restart();
  bool running();                         // reaps the process if it has ended
  std::optional<int> exitStatus() const;  // once ended: the exit code, or 128 + signal number

  int httpPort() const { return httpPort_; }
  int dicomPort() const { return dicomPort_; }  // 0 when the DICOM server is disabled
  std::string log() const;                      // the whole log file so far (every start appends to it)
  std::string storageDir() const;
  std::string configPath() const;  // the file, or the folder when Options::configFiles are given
  const std::string& directory() const { return directoryString_; }
  const std::string& executable() const { return executable_; }
  const nlohmann::json& config() const { return config_; }  // the configuration as written

  HttpClient client() const;  // authenticated when authentication is on
  HttpClient anonymousClient() const;

  // Starts Orthanc expecting it not to come up (e.g. a bad plugin configuration). Waits at most `timeout` for
  // the process to exit or to answer GET /system. Returns the exit status if it exited (its log in `log`),
  // std::nullopt if it came up (it is then stopped, `log` also filled). Throws if neither happened in time.
  static std::optional<int> startExpectingFailure(Options options, std::string& log,
                                                  std::chrono::seconds timeout = std::chrono::seconds(60));

  // $ORTHANC_EXECUTABLE, else "Orthanc" found in $PATH, else /usr/sbin/Orthanc.
  static std::string defaultExecutable();

 private:
  enum class Outcome { Up, Exited, TimedOut };
  struct DeferStart {};

  OrthancProcess(Options options, DeferStart);
  void choosePortsAndWriteConfig();
  void launch();  // fork + exec, log appended, own process group
  Outcome waitForStartup(std::chrono::steady_clock::time_point deadline);  // polls /system and waitpid
  bool lastRunHitBusyPort() const;               // the log of the last start says a port was in use
  void startWithRetry(bool newPortsOnConflict);  // start(), or throw with the log tail
  void killNow() noexcept;                       // SIGKILL to the group and reap (failure paths)
  static void writeJson(const std::string& path, const nlohmann::json& json);
  void writeConfigFolder(const nlohmann::json& generated);  // Options::configFiles with the generated keys
  bool reap(bool block) noexcept;                           // waitpid; true when the process has ended
  std::string startFailure(const std::string& reason) const;

  Options options_;
  TempDir dir_;
  std::string directoryString_;
  std::string executable_;
  nlohmann::json config_;
  int httpPort_ = 0;
  int dicomPort_ = 0;
  pid_t pid_ = -1;  // > 0 while a started process has not been reaped
  std::optional<int> exitStatus_;
  std::uintmax_t logOffset_ = 0;  // size of the log when the last start began
  std::string lastProbe_;         // what the last GET /system poll got, for error messages
};

}  // namespace comcl::testing
