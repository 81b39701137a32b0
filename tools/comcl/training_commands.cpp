// comcl pairs / pretrain / linear-eval / finetune / score: the training side of the command-line tool.
#include "commands.h"

namespace comcl::cli {

void addTrainingCommands(CLI::App& /*app*/, std::vector<Command>& /*commands*/) {}

}  // namespace comcl::cli
