// OrderedPrefetcher is a header-only template (loader.h); this unit keeps the header compiling on its own.
#include "comcl/training/loader.h"
