#include "orthanc_process.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace comcl::testing {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr std::chrono::milliseconds kPollInterval{50};
constexpr std::chrono::milliseconds kProbeTimeout{2000};
constexpr std::size_t kLogTailLines = 60;

// A file descriptor closed on every path.
class UniqueFd {
 public:
  explicit UniqueFd(int fd = -1) : fd_(fd) {}
  ~UniqueFd() { reset(); }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  int get() const { return fd_; }
  void reset() {
    if (fd_ >= 0)
      ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

std::string systemError(const std::string& what) {
  return what + ": " + std::strerror(errno);
}

std::string readFile(const std::string& path, std::uintmax_t offset = 0) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return {};
  in.seekg(static_cast<std::streamoff>(offset));
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::string lastLines(const std::string& text, std::size_t count) {
  std::size_t pos = text.size();
  if (pos > 0 && text[pos - 1] == '\n')
    --pos;  // a trailing newline does not start another line
  for (std::size_t n = 0; n < count; ++n) {
    const std::size_t newline = pos == 0 ? std::string::npos : text.rfind('\n', pos - 1);
    if (newline == std::string::npos)
      return text;
    pos = newline;
  }
  return text.substr(pos + 1);
}

// Closes every descriptor from `first` on except `keep`; async-signal-safe (used between fork and exec).
void closeFrom(int first, int keep) {
  const auto closeRange = [](unsigned low, unsigned high) {
    if (low > high)
      return;
    if (::close_range(low, high, 0) != 0) {  // kernels before 5.9: close them one by one
      const unsigned limit = high < 65536 ? high : 65535;
      for (unsigned fd = low; fd <= limit; ++fd)
        ::close(static_cast<int>(fd));
    }
  };
  closeRange(static_cast<unsigned>(first), static_cast<unsigned>(keep) - 1);
  closeRange(static_cast<unsigned>(keep) + 1, ~0U);
}

// Orthanc 1.10.1's CivetWeb master thread notices a stop request only when its poll() on the listening socket
// returns, which without traffic takes up to 2 s (SOCKET_TIMEOUT_QUANTUM). A bare connection wakes it, so a
// clean shutdown takes about 0.5 s instead of 2.5 s. Non-blocking: never waits, errors are irrelevant.
void wakeHttpServer(int port) noexcept {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  ::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address);
  ::close(fd);
}

}  // namespace

std::string OrthancProcess::defaultExecutable() {
  if (const char* env = std::getenv("ORTHANC_EXECUTABLE"); env != nullptr && *env != '\0')
    return env;
  if (const char* path = std::getenv("PATH"); path != nullptr) {
    std::istringstream dirs(path);
    for (std::string dir; std::getline(dirs, dir, ':');) {
      const fs::path candidate = fs::path(dir.empty() ? "." : dir) / "Orthanc";
      std::error_code ec;
      if (fs::is_regular_file(candidate, ec) && ::access(candidate.c_str(), X_OK) == 0)
        return candidate.string();
    }
  }
  return "/usr/sbin/Orthanc";
}

OrthancProcess::OrthancProcess(Options options, DeferStart)
    : options_(std::move(options)),
      directoryString_(dir_.path().string()),
      executable_(options_.executable.empty() ? defaultExecutable() : options_.executable) {
  if (!options_.extraConfig.is_object())
    throw std::invalid_argument("OrthancProcess: extraConfig must be a JSON object");
  fs::create_directories(storageDir());
}

OrthancProcess::OrthancProcess(Options options) : OrthancProcess(std::move(options), DeferStart{}) {
  choosePortsAndWriteConfig();
  startWithRetry(true);
}

OrthancProcess::~OrthancProcess() {
  try {
    stop();
  } catch (...) {
    killNow();
  }
}

std::string OrthancProcess::storageDir() const {
  return dir_.file("storage");
}
std::string OrthancProcess::configPath() const {
  if (!options_.configFiles.empty())
    return dir_.file("configuration");
  return dir_.file("config.json");
}
std::string OrthancProcess::log() const {
  return readFile(dir_.file("orthanc.log"));
}

HttpClient OrthancProcess::client() const {
  if (!options_.authentication)
    return anonymousClient();
  return HttpClient(httpPort_, std::make_pair(options_.user, options_.password));
}

HttpClient OrthancProcess::anonymousClient() const {
  return HttpClient(httpPort_);
}

std::optional<int> OrthancProcess::exitStatus() const {
  return exitStatus_;
}

void OrthancProcess::choosePortsAndWriteConfig() {
  const std::vector<int> ports = freeLoopbackPorts(options_.dicomServer ? 2 : 1);
  httpPort_ = ports[0];
  dicomPort_ = options_.dicomServer ? ports[1] : 0;

  nlohmann::json plugins = nlohmann::json::array();
  for (const std::string& plugin : options_.plugins)
    plugins.push_back(fs::absolute(plugin).lexically_normal().string());

  nlohmann::json config = {
      {"Name", "comcl-test"},
      {"HttpPort", httpPort_},
      {"RemoteAccessAllowed", false},
      {"AuthenticationEnabled", options_.authentication},
      {"DicomServerEnabled", options_.dicomServer},
      {"DicomAet", "COMCLTEST"},
      {"StorageDirectory", storageDir()},
      {"IndexDirectory", storageDir()},
      {"StableAge", options_.stableAge},
      {"Plugins", plugins},
      {"SaveJobs", false},
      {"JobsHistorySize", 100},
      {"ConcurrentJobs", 2},
      {"HttpThreadsCount", 10},
  };
  if (options_.authentication)
    config["RegisteredUsers"] = {{options_.user, options_.password}};
  if (options_.dicomServer)
    config["DicomPort"] = dicomPort_;
  for (const auto& [key, value] : options_.extraConfig.items())
    config[key] = value;

  // extraConfig may have set the ports or the DICOM server itself: report what Orthanc will use
  if (config.at("HttpPort").is_number_integer())
    httpPort_ = config.at("HttpPort").get<int>();
  const nlohmann::json& dicomEnabled = config.at("DicomServerEnabled");
  if (dicomEnabled.is_boolean() && dicomEnabled.get<bool>()) {
    const nlohmann::json port = config.contains("DicomPort") ? config.at("DicomPort") : nlohmann::json(4242);
    dicomPort_ = port.is_number_integer() ? port.get<int>() : 0;
  } else {
    dicomPort_ = 0;
  }

  if (options_.configFiles.empty()) {
    writeJson(configPath(), config);
  } else {
    writeConfigFolder(config);
  }
  config_ = std::move(config);
}

void OrthancProcess::writeJson(const std::string& path, const nlohmann::json& json) {
  std::ofstream out(path, std::ios::trunc);
  out << json.dump(2) << '\n';
  out.close();
  if (!out)
    throw std::runtime_error("cannot write " + path);
}

void OrthancProcess::writeConfigFolder(const nlohmann::json& generated) {
  std::vector<std::pair<std::string, nlohmann::json>> files;
  for (const std::string& path : options_.configFiles) {
    std::ifstream in(path);
    if (!in)
      throw std::runtime_error("cannot read configuration file " + path);
    files.emplace_back(fs::path(path).filename().string(),
                       nlohmann::json::parse(in, nullptr, true, /*ignore_comments=*/true));
  }
  for (const auto& [key, value] : generated.items()) {
    auto owner =
        std::find_if(files.begin(), files.end(), [&](const auto& file) { return file.second.contains(key); });
    (owner == files.end() ? files.front() : *owner).second[key] = value;
  }
  fs::remove_all(configPath());
  fs::create_directories(configPath());
  for (const auto& [name, json] : files)
    writeJson((fs::path(configPath()) / name).string(), json);
}

void OrthancProcess::launch() {
  const std::string logPath = dir_.file("orthanc.log");
  std::vector<std::string> args{executable_, "--verbose", configPath()};
  {
    std::ofstream marker(logPath, std::ios::app);
    marker << "=== comcl test harness: starting " << args[0] << ' ' << args[1] << ' ' << args[2]
           << " (HTTP port " << httpPort_ << ", DICOM port " << dicomPort_ << ") ===\n";
  }
  std::error_code ec;
  logOffset_ = fs::file_size(logPath, ec);
  if (ec)
    logOffset_ = 0;

  // Everything the child needs is prepared before fork(): in the child only async-signal-safe calls follow.
  std::vector<char*> argv;
  for (std::string& arg : args)
    argv.push_back(arg.data());
  argv.push_back(nullptr);
  const UniqueFd logFd(::open(logPath.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
  if (logFd.get() < 0)
    throw std::runtime_error(systemError("cannot open " + logPath));
  const UniqueFd devNull(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (devNull.get() < 0)
    throw std::runtime_error(systemError("cannot open /dev/null"));
  int pipeFds[2];
  if (::pipe2(pipeFds, O_CLOEXEC) != 0)  // the child reports a failed exec through it
    throw std::runtime_error(systemError("pipe2"));
  UniqueFd errorRead(pipeFds[0]);
  UniqueFd errorWrite(pipeFds[1]);
  const pid_t parent = ::getpid();
  const char* workDir = directoryString_.c_str();

  const pid_t pid = ::fork();
  if (pid < 0)
    throw std::runtime_error(systemError("fork"));
  if (pid == 0) {
    ::setpgid(0, 0);                     // its own process group: stop() can signal all of it
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // no orphaned server if the test runner dies (e.g. ctest timeout)
    if (::getppid() != parent)
      ::_exit(127);
    ::dup2(devNull.get(), STDIN_FILENO);
    ::dup2(logFd.get(), STDOUT_FILENO);
    ::dup2(logFd.get(), STDERR_FILENO);
    sigset_t none;
    ::sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    for (int sig : {SIGPIPE, SIGINT, SIGTERM, SIGQUIT, SIGHUP, SIGCHLD})
      ::signal(sig, SIG_DFL);
    if (::chdir(workDir) != 0) {
      const int error = errno;
      [[maybe_unused]] auto written = ::write(errorWrite.get(), &error, sizeof error);
      ::_exit(127);
    }
    closeFrom(3, errorWrite.get());
    ::execv(argv[0], argv.data());
    const int error = errno;
    [[maybe_unused]] auto written = ::write(errorWrite.get(), &error, sizeof error);
    ::_exit(127);
  }

  ::setpgid(pid, pid);  // also from the parent, so the group exists whichever runs first
  pid_ = pid;
  exitStatus_.reset();
  errorWrite.reset();
  int childError = 0;
  ssize_t got;
  do {  // returns 0 (end of file) as soon as the exec succeeded and closed the close-on-exec pipe
    got = ::read(errorRead.get(), &childError, sizeof childError);
  } while (got < 0 && errno == EINTR);
  if (got == static_cast<ssize_t>(sizeof childError)) {
    reap(true);
    throw std::runtime_error("cannot execute " + executable_ + ": " + std::strerror(childError));
  }
}

OrthancProcess::Outcome OrthancProcess::waitForStartup(Clock::time_point deadline) {
  std::optional<std::pair<std::string, std::string>> auth;
  if (options_.authentication)
    auth = std::make_pair(options_.user, options_.password);
  const HttpClient probe(httpPort_, auth, kProbeTimeout);
  lastProbe_ = "none";
  for (;;) {
    if (reap(false))
      return Outcome::Exited;
    try {
      const HttpResponse response = probe.get("/system");
      lastProbe_ = "HTTP " + std::to_string(response.status);
      if (response.status == 200)
        return Outcome::Up;
    } catch (const std::exception& e) {
      lastProbe_ = e.what();
    }
    if (Clock::now() >= deadline)
      return reap(false) ? Outcome::Exited : Outcome::TimedOut;
    std::this_thread::sleep_for(kPollInterval);
  }
}

bool OrthancProcess::lastRunHitBusyPort() const {
  // Orthanc 1.10.1: "The TCP port of the HTTP server is privileged or already in use" (error 2003), and the
  // same for the DICOM server (2004)
  return readFile(dir_.file("orthanc.log"), logOffset_).find("already in use") != std::string::npos;
}

std::string OrthancProcess::startFailure(const std::string& reason) const {
  return reason + "\n  executable: " + executable_ + "\n  configuration: " + configPath() +
         "\n--- last lines of " + dir_.file("orthanc.log") + " ---\n" + lastLines(log(), kLogTailLines);
}

void OrthancProcess::startWithRetry(bool newPortsOnConflict) {
  const auto deadline = Clock::now() + options_.startTimeout;
  for (int attempt = 1;; ++attempt) {
    launch();
    const Outcome outcome = waitForStartup(deadline);
    if (outcome == Outcome::Up)
      return;
    if (outcome == Outcome::Exited && lastRunHitBusyPort()) {
      // someone took a port between freeLoopbackPort() and Orthanc's bind
      if (newPortsOnConflict && attempt < 2) {
        choosePortsAndWriteConfig();
        continue;
      }
      // a restart keeps its ports: wait (bounded) for them to become free again
      if (!newPortsOnConflict && Clock::now() + kPollInterval < deadline) {
        std::this_thread::sleep_for(kPollInterval);
        continue;
      }
    }
    if (outcome == Outcome::TimedOut) {
      killNow();
      throw std::runtime_error(startFailure("Orthanc did not answer GET /system with 200 within " +
                                            std::to_string(options_.startTimeout.count()) +
                                            " s (last poll: " + lastProbe_ + "); killed, exit status " +
                                            std::to_string(exitStatus_.value_or(-1))));
    }
    throw std::runtime_error(
        startFailure("Orthanc exited with status " + std::to_string(exitStatus_.value_or(-1)) +
                     " before answering GET /system (attempt " + std::to_string(attempt) + ")"));
  }
}

std::optional<int> OrthancProcess::startExpectingFailure(Options options, std::string& log,
                                                         std::chrono::seconds timeout) {
  OrthancProcess process(std::move(options), DeferStart{});
  process.choosePortsAndWriteConfig();
  const auto deadline = Clock::now() + timeout;
  for (int attempt = 1;; ++attempt) {
    process.launch();
    const Outcome outcome = process.waitForStartup(deadline);
    if (outcome == Outcome::Exited && attempt < 2 && process.lastRunHitBusyPort()) {
      process.choosePortsAndWriteConfig();  // a harness port race, not the failure the caller looks for
      continue;
    }
    if (outcome == Outcome::Up) {
      process.stop();
      log = process.log();
      return std::nullopt;
    }
    if (outcome == Outcome::Exited) {
      log = process.log();
      return process.exitStatus_;
    }
    process.killNow();
    log = process.log();
    throw std::runtime_error(process.startFailure("Orthanc neither exited nor answered GET /system within " +
                                                  std::to_string(timeout.count()) +
                                                  " s (last poll: " + process.lastProbe_ + ")"));
  }
}

bool OrthancProcess::reap(bool block) noexcept {
  if (pid_ <= 0)
    return true;
  int status = 0;
  pid_t result;
  do {
    result = ::waitpid(pid_, &status, block ? 0 : WNOHANG);
  } while (result < 0 && errno == EINTR);
  if (result == 0)
    return false;
  if (result == pid_)
    exitStatus_ = WIFEXITED(status) ? WEXITSTATUS(status) : WIFSIGNALED(status) ? 128 + WTERMSIG(status) : -1;
  else
    exitStatus_ = -1;  // already reaped elsewhere (ECHILD): status unknown
  pid_ = -1;
  return true;
}

bool OrthancProcess::running() {
  return !reap(false);
}

void OrthancProcess::stop() {
  if (reap(false))
    return;
  ::kill(pid_, SIGTERM);
  const auto deadline = Clock::now() + options_.stopTimeout;
  while (Clock::now() < deadline) {
    if (reap(false))
      return;
    wakeHttpServer(httpPort_);
    std::this_thread::sleep_for(kPollInterval);
  }
  killNow();
}

void OrthancProcess::killNow() noexcept {
  if (pid_ <= 0)
    return;
  ::kill(-pid_, SIGKILL);  // the whole process group (a wrapper script and its children included)
  ::kill(pid_, SIGKILL);
  reap(true);
}

void OrthancProcess::restart() {
  stop();
  startWithRetry(false);
}

}  // namespace comcl::testing
