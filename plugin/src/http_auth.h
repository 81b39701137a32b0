// Who sent a REST request: the user name of an HTTP Basic "Authorization" header. Orthanc has already
// checked the password against RegisteredUsers when AuthenticationEnabled is on; the plugin only decides
// which of those users may change things (PluginConfig::privilegedUsers).
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace comcl::plugin {

// "Basic <base64 of user:password>" -> "user"; empty for another scheme, bad base64 or no colon.
std::optional<std::string> basicAuthUser(std::string_view authorization);

}  // namespace comcl::plugin
