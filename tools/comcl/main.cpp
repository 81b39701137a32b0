// comcl: the command-line tool for offline work on a DICOM archive (decode, index, synthesise, train,
// evaluate, score). Each module registers its subcommands; main parses and runs the chosen one.
#include <exception>
#include <iostream>

#include "commands.h"

int main(int argc, char** argv) {
  CLI::App app{"comcl: contrastive learning from a DICOM archive (offline tools)"};
  app.require_subcommand(1);
  bool verbose = false;
  app.add_flag("-v,--verbose", verbose, "Show the libraries' own warnings and errors");

  std::vector<comcl::cli::Command> commands;
#ifdef COMCL_WITH_IMAGING
  comcl::cli::addImagingCommands(app, commands);
  comcl::cli::addImportCommands(app, commands);
#endif
  comcl::cli::addTrainingCommands(app, commands);
  comcl::cli::addLesionCommands(app, commands);

  CLI11_PARSE(app, argc, argv);
#ifdef COMCL_WITH_IMAGING
  comcl::cli::quietDicomToolkit(verbose);
#endif
  try {
    for (const auto& command : commands) {
      if (*command.subcommand)
        return command.run();
    }
  } catch (const std::exception& e) {
    std::cerr << "comcl: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
