// Tests of the integration-test harness itself, against a real Orthanc without plugins.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "http_client.h"
#include "orthanc_process.h"
#include "temp_dir.h"

namespace comcl::testing {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

const std::string kInstanceFile =
    std::string(COMCL_SHARED_DATA) + "/mhh_covid_cxr/dicom/024e7871/fff13f3a.dcm";
const std::string kInstanceId = "18f8c405-03ca58af-9bc8f4f2-42df3fe2-e88a19e6";

std::string readBinary(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw std::runtime_error("cannot read " + path);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

struct CommandResult {
  int exitStatus = -1;  // exit code, or 128 + signal
  std::string output;   // stdout and stderr
};

// Runs a command (looked up in PATH) with stdout+stderr to a temporary file; killed after `timeout`.
CommandResult runCommand(const std::vector<std::string>& args, std::chrono::seconds timeout = 60s) {
  TempDir dir;
  const std::string outputPath = dir.file("output.txt");
  std::vector<std::string> copy = args;
  std::vector<char*> argv;
  for (std::string& arg : copy)
    argv.push_back(arg.data());
  argv.push_back(nullptr);
  const int outFd = ::open(outputPath.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (outFd < 0)
    throw std::runtime_error("cannot open " + outputPath);
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(outFd);
    throw std::runtime_error("fork failed");
  }
  if (pid == 0) {
    ::dup2(outFd, STDOUT_FILENO);
    ::dup2(outFd, STDERR_FILENO);
    ::execvp(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(outFd);
  CommandResult result;
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    int status = 0;
    const pid_t done = ::waitpid(pid, &status, WNOHANG);
    if (done == pid) {
      result.exitStatus = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      break;
    }
    if (Clock::now() >= deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      result.exitStatus = 128 + SIGKILL;
      break;
    }
    std::this_thread::sleep_for(20ms);
  }
  result.output = readBinary(outputPath);
  return result;
}

// The version `Orthanc --version` prints on its first line ("Orthanc 1.10.1").
std::string versionOf(const std::string& executable) {
  const CommandResult result = runCommand({executable, "--version"}, 30s);
  const std::string firstLine = result.output.substr(0, result.output.find('\n'));
  const std::size_t space = firstLine.rfind(' ');
  return space == std::string::npos ? firstLine : firstLine.substr(space + 1);
}

bool listsInstance(const HttpClient& client, const std::string& id) {
  const HttpResponse response = client.get("/instances");
  if (response.status != 200)
    return false;
  const nlohmann::json ids = response.json();
  return std::find(ids.begin(), ids.end(), id) != ids.end();
}

// Polls GET /instances until `id` is listed or the deadline passes.
bool waitForInstance(const HttpClient& client, const std::string& id, std::chrono::seconds bound = 30s) {
  const auto deadline = Clock::now() + bound;
  for (;;) {
    if (listsInstance(client, id))
      return true;
    if (Clock::now() >= deadline)
      return false;
    std::this_thread::sleep_for(50ms);
  }
}

// True once nothing accepts connections on the port any more (bounded).
bool waitUntilRefused(int port, std::chrono::seconds bound = 10s) {
  const HttpClient client(port, std::nullopt, 2s);
  const auto deadline = Clock::now() + bound;
  for (;;) {
    try {
      client.get("/system");
    } catch (const std::runtime_error&) {
      return true;
    }
    if (Clock::now() >= deadline)
      return false;
    std::this_thread::sleep_for(50ms);
  }
}

TEST(OrthancHarness, StartsAndAnswersSystemWithAuthentication) {
  OrthancProcess orthanc({});
  ASSERT_TRUE(orthanc.running());

  const HttpResponse system = orthanc.client().get("/system");
  ASSERT_EQ(system.status, 200) << system.body;
  const nlohmann::json info = system.json();
  EXPECT_EQ(info.at("Version").get<std::string>(), versionOf(orthanc.executable()));
  EXPECT_EQ(info.at("Name").get<std::string>(), "comcl-test");
  EXPECT_EQ(info.at("HttpPort").get<int>(), orthanc.httpPort());
  EXPECT_EQ(info.at("DicomAet").get<std::string>(), "COMCLTEST");
  EXPECT_NE(system.headers.count("content-type"), 0u);
  EXPECT_NE(system.headers.at("content-type").find("application/json"), std::string::npos);

  EXPECT_EQ(orthanc.anonymousClient().get("/system").status, 401);
  const HttpResponse wrongPassword =
      HttpClient(orthanc.httpPort(), std::make_pair("alice", "wrong")).get("/system");
  EXPECT_EQ(wrongPassword.status, 401);
  EXPECT_EQ(orthanc.dicomPort(), 0);  // DICOM server disabled by default
  EXPECT_NE(orthanc.log().find("Orthanc has started"), std::string::npos);

  // HTTP errors are answers, not exceptions
  const HttpResponse missing = orthanc.client().get("/instances/no-such-instance");
  EXPECT_EQ(missing.status, 404);
}

TEST(OrthancHarness, AuthenticationCanBeTurnedOff) {
  OrthancProcess::Options options;
  options.authentication = false;
  OrthancProcess orthanc(options);
  EXPECT_EQ(orthanc.anonymousClient().get("/system").status, 200);
  EXPECT_EQ(orthanc.client().get("/system").status, 200);
  EXPECT_FALSE(orthanc.config().contains("RegisteredUsers"));
}

TEST(OrthancHarness, UploadedInstanceSurvivesRestart) {
  OrthancProcess orthanc({});
  const HttpResponse upload =
      orthanc.client().post("/instances", readBinary(kInstanceFile), "application/dicom");
  ASSERT_EQ(upload.status, 200) << upload.body;
  EXPECT_EQ(upload.json().at("ID").get<std::string>(), kInstanceId);
  EXPECT_EQ(upload.json().at("Status").get<std::string>(), "Success");

  const int httpPort = orthanc.httpPort();
  orthanc.restart();
  EXPECT_TRUE(orthanc.running());
  EXPECT_EQ(orthanc.exitStatus(), std::nullopt);
  EXPECT_EQ(orthanc.httpPort(), httpPort);
  EXPECT_TRUE(listsInstance(orthanc.client(), kInstanceId));
  EXPECT_EQ(orthanc.client().get("/instances/" + kInstanceId).status, 200);

  // it really was a second process: the log holds both starts
  const std::string log = orthanc.log();
  std::size_t starts = 0;
  for (std::size_t at = log.find("Orthanc has started"); at != std::string::npos;
       at = log.find("Orthanc has started", at + 1))
    ++starts;
  EXPECT_EQ(starts, 2u);
  EXPECT_NE(log.find("Orthanc has stopped"), std::string::npos);
}

TEST(OrthancHarness, StorescuStoresThroughTheDicomServer) {
  OrthancProcess::Options options;
  options.dicomServer = true;
  OrthancProcess orthanc(options);
  ASSERT_GT(orthanc.dicomPort(), 0);
  EXPECT_NE(orthanc.dicomPort(), orthanc.httpPort());
  EXPECT_EQ(orthanc.client().get("/system").json().at("DicomPort").get<int>(), orthanc.dicomPort());

  const CommandResult storescu =
      runCommand({"storescu", "-aec", "COMCLTEST", "-to", "30", "-ta", "30", "-td", "30", "127.0.0.1",
                  std::to_string(orthanc.dicomPort()), kInstanceFile});
  ASSERT_EQ(storescu.exitStatus, 0) << storescu.output;
  EXPECT_TRUE(waitForInstance(orthanc.client(), kInstanceId)) << orthanc.log();
}

TEST(OrthancHarness, ExtraConfigIsMergedAndPutAndDeleteWork) {
  OrthancProcess::Options options;
  options.extraConfig = {{"UserMetadata", {{"comcl-note", 1024}}}, {"StableAge", 3}};
  OrthancProcess orthanc(options);
  EXPECT_EQ(orthanc.config().at("StableAge").get<int>(), 3);  // top-level key replaced
  const HttpClient client = orthanc.client();
  ASSERT_EQ(client.post("/instances", readBinary(kInstanceFile), "application/dicom").status, 200);

  const std::string metadata = "/instances/" + kInstanceId + "/metadata/comcl-note";
  const HttpResponse put = client.put(metadata, "hello", "text/plain");
  ASSERT_EQ(put.status, 200) << put.body;  // only accepted because UserMetadata came through extraConfig
  EXPECT_EQ(client.get(metadata).body, "hello");

  EXPECT_EQ(client.del("/instances/" + kInstanceId).status, 200);
  EXPECT_EQ(client.get("/instances/" + kInstanceId).status, 404);
}

TEST(OrthancHarness, BadConfigurationMakesOrthancExitWithTheReasonInTheLog) {
  OrthancProcess::Options options;
  options.extraConfig = {{"HttpPort", "not-a-number"}};
  std::string log;
  const std::optional<int> status = OrthancProcess::startExpectingFailure(options, log, 30s);
  ASSERT_TRUE(status.has_value()) << log;
  EXPECT_EQ(*status, 255);  // Orthanc 1.10.1 exits with -1 on an uncaught exception
  EXPECT_NE(log.find("The configuration option \"HttpPort\" must be an integer"), std::string::npos) << log;
}

TEST(OrthancHarness, ConstructorThrowsWithExitStatusAndLogTail) {
  OrthancProcess::Options options;
  options.extraConfig = {{"HttpPort", "not-a-number"}};
  try {
    OrthancProcess orthanc(options);
    FAIL() << "Orthanc started with a bad HttpPort";
  } catch (const std::runtime_error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("exited with status 255"), std::string::npos) << message;
    EXPECT_NE(message.find("must be an integer"), std::string::npos) << message;
  }
}

TEST(OrthancHarness, PluginThatIsNotASharedLibraryMakesOrthancExit) {
  TempDir dir;
  dir.write("libnot-a-plugin.so", {'n', 'o', 't', ' ', 'E', 'L', 'F'});
  OrthancProcess::Options options;
  options.plugins = {dir.file("libnot-a-plugin.so")};
  std::string log;
  const std::optional<int> status = OrthancProcess::startExpectingFailure(options, log, 30s);
  ASSERT_TRUE(status.has_value()) << log;
  EXPECT_EQ(*status, 255);
  EXPECT_NE(log.find("dlopen(" + dir.file("libnot-a-plugin.so") + ") failed"), std::string::npos) << log;
}

// Orthanc 1.10.1 only logs a plugin path that does not exist and starts anyway: plugin tests must check that
// their plugin really loaded (e.g. GET /plugins), not just that Orthanc came up.
TEST(OrthancHarness, MissingPluginPathIsOnlyLoggedAndOrthancStarts) {
  OrthancProcess::Options options;
  options.plugins = {"/nonexistent/libcomcl-missing.so"};
  std::string log;
  const std::optional<int> status = OrthancProcess::startExpectingFailure(options, log, 30s);
  EXPECT_FALSE(status.has_value()) << "exit status " << status.value_or(-1) << "\n" << log;
  EXPECT_NE(log.find("Inexistent path to plugins: /nonexistent/libcomcl-missing.so"), std::string::npos)
      << log;
}

TEST(OrthancHarness, StopIsBoundedAndReapsTheProcess) {
  OrthancProcess orthanc({});
  const int port = orthanc.httpPort();
  const auto start = Clock::now();
  orthanc.stop();
  EXPECT_LT(Clock::now() - start, 30s);
  EXPECT_FALSE(orthanc.running());
  EXPECT_EQ(orthanc.exitStatus(), 0);  // a clean shutdown on SIGTERM
  EXPECT_NE(orthanc.log().find("Orthanc has stopped"), std::string::npos);
  EXPECT_TRUE(waitUntilRefused(port));
  orthanc.stop();  // a second stop does nothing
  EXPECT_EQ(orthanc.exitStatus(), 0);
}

TEST(OrthancHarness, DestructorOfARunningServerStopsIt) {
  int port = 0;
  const auto start = Clock::now();
  {
    OrthancProcess orthanc({});
    port = orthanc.httpPort();
    ASSERT_EQ(orthanc.client().get("/system").status, 200);
  }
  EXPECT_LT(Clock::now() - start, 60s);
  EXPECT_TRUE(waitUntilRefused(port));
}

TEST(OrthancHarness, StopKillsTheGroupWhenSigtermIsIgnored) {
  // a wrapper that ignores SIGTERM and runs Orthanc as its child: only SIGKILL to the group ends both
  TempDir dir;
  const std::string script =
      "#!/bin/sh\ntrap '' TERM\n'" + OrthancProcess::defaultExecutable() + "' \"$@\" &\nwait\n";
  dir.write("stubborn-orthanc.sh", std::vector<char>(script.begin(), script.end()));
  ASSERT_EQ(::chmod(dir.file("stubborn-orthanc.sh").c_str(), 0755), 0);

  OrthancProcess::Options options;
  options.executable = dir.file("stubborn-orthanc.sh");
  options.stopTimeout = 2s;
  OrthancProcess orthanc(options);
  const int port = orthanc.httpPort();
  const auto start = Clock::now();
  orthanc.stop();
  const auto elapsed = Clock::now() - start;
  EXPECT_GE(elapsed, 2s);
  EXPECT_LT(elapsed, 20s);
  EXPECT_FALSE(orthanc.running());
  EXPECT_EQ(orthanc.exitStatus(), 128 + SIGKILL);
  EXPECT_TRUE(waitUntilRefused(port));  // the Orthanc child was killed with its parent
}

TEST(OrthancHarness, TwoServersAtOnceUseDifferentPortsAndStorage) {
  OrthancProcess::Options options;
  options.dicomServer = true;
  OrthancProcess first(options);
  OrthancProcess second(options);
  const std::set<int> ports{first.httpPort(), first.dicomPort(), second.httpPort(), second.dicomPort()};
  EXPECT_EQ(ports.size(), 4u);
  EXPECT_NE(first.directory(), second.directory());

  ASSERT_EQ(first.client().post("/instances", readBinary(kInstanceFile), "application/dicom").status, 200);
  EXPECT_TRUE(listsInstance(first.client(), kInstanceId));
  EXPECT_FALSE(listsInstance(second.client(), kInstanceId));
  EXPECT_EQ(second.client().get("/system").status, 200);
}

TEST(OrthancHarness, MissingExecutableThrows) {
  OrthancProcess::Options options;
  options.executable = "/nonexistent/Orthanc";
  try {
    OrthancProcess orthanc(options);
    FAIL() << "started a missing executable";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot execute /nonexistent/Orthanc"), std::string::npos)
        << e.what();
  }
}

TEST(OrthancHarness, ServerThatNeverAnswersIsKilledAtTheStartDeadline) {
  TempDir dir;
  const std::string script = "#!/bin/sh\necho 'silent server' \"$@\"\nexec sleep 120\n";
  dir.write("silent-server.sh", std::vector<char>(script.begin(), script.end()));
  ASSERT_EQ(::chmod(dir.file("silent-server.sh").c_str(), 0755), 0);
  OrthancProcess::Options options;
  options.executable = dir.file("silent-server.sh");
  options.startTimeout = 1s;

  const auto start = Clock::now();
  try {
    OrthancProcess orthanc(options);
    FAIL() << "a server that never answers was reported as started";
  } catch (const std::runtime_error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("did not answer GET /system with 200 within 1 s"), std::string::npos) << message;
    EXPECT_NE(message.find("exit status 137"), std::string::npos) << message;          // SIGKILL
    EXPECT_NE(message.find("silent server --verbose"), std::string::npos) << message;  // the log tail
  }
  EXPECT_LT(Clock::now() - start, 10s);

  std::string log;
  EXPECT_THROW(OrthancProcess::startExpectingFailure(options, log, 1s), std::runtime_error);
  EXPECT_NE(log.find("silent server"), std::string::npos) << log;
}

TEST(HttpClient, ConnectionRefusedThrows) {
  const HttpClient client(freeLoopbackPort(), std::nullopt, 5s);
  EXPECT_THROW(client.get("/system"), std::runtime_error);
}

TEST(HttpClient, SilentServerTimesOut) {
  // a socket that accepts connections (in the kernel backlog) and never answers
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  ASSERT_EQ(::bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address), 0);
  ASSERT_EQ(::listen(fd, 8), 0);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length), 0);

  const HttpClient client(ntohs(address.sin_port), std::nullopt, 300ms);
  const auto start = Clock::now();
  try {
    client.get("/system");
    ADD_FAILURE() << "a server that never answers produced a response";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("read failed"), std::string::npos) << e.what();
  }
  const auto elapsed = Clock::now() - start;
  EXPECT_GE(elapsed, 250ms);
  EXPECT_LT(elapsed, 5s);
  ::close(fd);
}

TEST(HttpClient, JsonOfANonJsonBodyThrowsWithTheBody) {
  HttpResponse response;
  response.status = 500;
  response.body = "<html>not json</html>";
  try {
    response.json();
    FAIL() << "parsed HTML as JSON";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("<html>not json</html>"), std::string::npos) << e.what();
  }
  response.body = R"({"a": [1, 2]})";
  EXPECT_EQ(response.json().at("a").size(), 2u);
}

TEST(FreeLoopbackPort, PortsAreDistinctAndBindable) {
  const std::vector<int> ports = freeLoopbackPorts(5);
  EXPECT_EQ(std::set<int>(ports.begin(), ports.end()).size(), 5u);
  const int port = freeLoopbackPort();
  ASSERT_GT(port, 0);
  ASSERT_LT(port, 65536);
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  EXPECT_EQ(::bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address), 0);
  ::close(fd);
}

}  // namespace
}  // namespace comcl::testing
