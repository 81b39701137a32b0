// Runs the real comcl binary as a user would and captures what it prints; shared by the CLI test files.
#pragma once

#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "temp_dir.h"

namespace comcl::testing {

struct ProcessResult {
  int exitCode = -1;
  std::string out;
  std::string err;
};

inline std::string readText(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// `arguments` go through the shell, so quote paths with spaces.
inline ProcessResult runComcl(const std::string& arguments) {
  TempDir dir;
  const std::string command =
      std::string(COMCL_BINARY) + " " + arguments + " > " + dir.file("out") + " 2> " + dir.file("err");
  const int status = std::system(command.c_str());
  ProcessResult r;
  r.exitCode = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = readText(dir.file("out"));
  r.err = readText(dir.file("err"));
  return r;
}

inline bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace comcl::testing
