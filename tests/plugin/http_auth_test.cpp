// The user name of an HTTP Basic Authorization header (what Comcl.PrivilegedUsers is checked against).
#include "http_auth.h"

#include <gtest/gtest.h>

namespace comcl::plugin {
namespace {

TEST(BasicAuthUser, ReadsTheUserNameOfBasicCredentials) {
  EXPECT_EQ(basicAuthUser("Basic YWxpY2U6b3J0aGFuY3Rlc3Q="), "alice");  // alice:orthanctest
  EXPECT_EQ(basicAuthUser("basic Ym9iOnBhOnNz"), "bob");                // bob:pa:ss, the scheme in any case
  EXPECT_EQ(basicAuthUser("  Basic w6k6eA==\r"), "\xc3\xa9");           // UTF-8 names, padding
}

TEST(BasicAuthUser, RefusesOtherSchemesAndMalformedCredentials) {
  EXPECT_FALSE(basicAuthUser(""));
  EXPECT_FALSE(basicAuthUser("Basic "));
  EXPECT_FALSE(basicAuthUser("Bearer YWxpY2U6b3J0aGFuY3Rlc3Q="));
  EXPECT_FALSE(basicAuthUser("Basic bm9jb2xvbg=="));             // "nocolon"
  EXPECT_FALSE(basicAuthUser("Basic YWxpY2U6b3J0aGFuY3Rlc3Q"));  // length not a multiple of 4
  EXPECT_FALSE(basicAuthUser("Basic YWxp!2U6"));
  EXPECT_FALSE(basicAuthUser("Basic YW=pY2U6"));  // padding inside
}

}  // namespace
}  // namespace comcl::plugin
