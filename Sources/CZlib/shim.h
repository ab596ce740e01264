// The system zlib (zlib1g-dev on Debian): deflate for the PNG writer.
#include <zlib.h>
