// Non-blocking socket plumbing for the HTTP front: binding its port, reading and writing what a socket allows now,
// and connecting to uvicorn's Unix socket. Kept apart so http_front.cc reads as the connection logic alone.
#pragma once

#include <string>

namespace twofour {

// A listening, non-blocking TCP socket on `address` ("host:port", "[v6]:port"; port 0: any), or -1 and `error`.
int BindListener(const std::string& address, int* port, std::string* error);

// Appends whatever `fd` has to read now to `buffer`; false at the end of the stream or on an error.
bool ReadInto(int fd, std::string* buffer);

// Sends what `fd` takes now from the front of `data` and removes it; false when the peer is gone.
bool SendSome(int fd, std::string* data);

// A connected, non-blocking Unix stream socket, or -1.
int ConnectUnix(const std::string& path);

}  // namespace twofour
