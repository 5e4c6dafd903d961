// The last step of the front's drain, before grpc::Server::Shutdown: refuse new connections on the public gRPC
// port and end the accepted ones. gRPC core's Shutdown answers CANCELLED to calls it has received but not handed
// over yet and to streams that reach a connection before the client reads the GOAWAY (grpc/grpc#41785); a
// client cannot tell whether a CANCELLED call ran. Ending the connections first makes every such call fail
// UNAVAILABLE (true: the server has drained, nothing new can run). Same as server/transport/grpc_drain.py.
#pragma once

namespace twofour {

// shutdown(SHUT_RD) on this process's listening TCP sockets on `port`, shutdown(SHUT_RDWR) on its connections
// accepted there (found among /proc/self/fd; shut down, never closed: the descriptors stay gRPC's). Returns the
// number of connections ended.
int ClosePublicPort(int port);

}  // namespace twofour
