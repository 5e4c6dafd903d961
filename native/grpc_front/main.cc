// twofour-grpc-front: the public gRPC port of `twofour serve --grpc-frontend native`, in C++, and with
// --http-address also the public HTTP port (http_front.h).
//
// Why: the Python front process (server/transport/grpc_front.py) spends ~330 us of CPU per RPC in grpc.aio on a
// machine where client, front and model share two cores; gRPC's C++ callback server does the same job (raw bytes,
// never parsed) for a fraction of that. Same command line, same stdout contract and same lifecycle as the Python
// front, so server/transport/grpc_front_process.py runs either one:
//   - prints one JSON line, {"port": N} once bound ({"port": N, "http_port": M} with --http-address) or
//     {"error": "..."}, then serves;
//   - SIGTERM (sent after the server's drain): stop accepting, end the public gRPC connections (port_close.h),
//     finish what is left within --grace-secs, exit 0; SIGINT is ignored (the server
//     decides); exits by itself when its parent (the server) is gone, so an orphan never keeps the port.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>

#include <grpcpp/grpcpp.h>

#include "fast_link.h"
#include "http_front.h"
#include "json_text.h"
#include "port_close.h"
#include "reactors.h"

namespace {

using twofour::JsonString;

int Fail(const std::string& message) {
  std::printf("{\"error\": %s}\n", JsonString(message).c_str());
  std::fflush(stdout);
  return 1;
}

// --name value or --name=value; every option is required but --grace-secs, --relay-connect-secs and the --http-*
// ones (HttpArgs).
bool ParseArgs(int argc, char** argv, std::map<std::string, std::string>* args, std::string* error) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0) {
      *error = "unexpected argument " + arg;
      return false;
    }
    size_t equals = arg.find('=');
    if (equals != std::string::npos) {
      (*args)[arg.substr(2, equals - 2)] = arg.substr(equals + 1);
    } else if (i + 1 < argc) {
      (*args)[arg.substr(2)] = argv[++i];
    } else {
      *error = arg + " needs a value";
      return false;
    }
  }
  for (const char* name : {"address", "fast-socket", "relay-socket", "max-message-bytes", "max-concurrent-streams"}) {
    if (args->count(name) == 0) {
      *error = std::string("--") + name + " is required";
      return false;
    }
  }
  return true;
}

// The --http-* options, every one required once --http-address is given.
bool HttpArgs(std::map<std::string, std::string>* args, twofour::HttpOptions* options, std::string* error) {
  for (const char* name : {"http-relay-socket", "http-max-head-bytes", "http-max-body-bytes",
                           "http-body-timeout-secs", "http-keep-alive-secs"}) {
    if (args->count(name) == 0) {
      *error = std::string("--") + name + " is required with --http-address";
      return false;
    }
  }
  options->address = (*args)["http-address"];
  options->relay_socket = (*args)["http-relay-socket"];
  options->max_head = std::strtoull((*args)["http-max-head-bytes"].c_str(), nullptr, 10);
  options->max_body = std::strtoull((*args)["http-max-body-bytes"].c_str(), nullptr, 10);
  options->body_timeout_s = std::atof((*args)["http-body-timeout-secs"].c_str());
  options->keep_alive_s = std::atof((*args)["http-keep-alive-secs"].c_str());
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::string> args;
  std::string error;
  if (!ParseArgs(argc, argv, &args, &error)) return Fail(error);
  const int message_limit = std::atoi(args["max-message-bytes"].c_str());
  const double grace = args.count("grace-secs") ? std::atof(args["grace-secs"].c_str()) : 1.0;
  const double relay_connect =
      args.count("relay-connect-secs") ? std::atof(args["relay-connect-secs"].c_str()) : 10.0;

  // Before any thread exists, so that every gRPC thread inherits the mask and only sigtimedwait sees these.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);
  const pid_t parent = getppid();

  grpc::ChannelArguments relay_args;
  relay_args.SetMaxReceiveMessageSize(message_limit);
  relay_args.SetMaxSendMessageSize(message_limit);
  auto relay_channel = grpc::CreateCustomChannel("unix:" + args["relay-socket"],
                                                 grpc::InsecureChannelCredentials(), relay_args);
  // Connected before the port is reported (as grpc_front.py): a client's first relayed call never meets the relay's
  // first connection, and a relay that cannot be reached fails the start rather than that call.
  if (!relay_channel->WaitForConnected(std::chrono::system_clock::now() +
                                       std::chrono::milliseconds(static_cast<long>(relay_connect * 1000)))) {
    return Fail("cannot reach the server's gRPC socket " + args["relay-socket"]);
  }
  twofour::FastLink link(args["fast-socket"], static_cast<uint32_t>(message_limit) + 1024);
  twofour::FrontService service(&link, relay_channel);

  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(args["address"], grpc::InsecureServerCredentials(), &port);
  builder.SetMaxReceiveMessageSize(message_limit);
  builder.SetMaxSendMessageSize(message_limit);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, std::atoi(args["max-concurrent-streams"].c_str()));
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);  // a taken port must fail, not be shared
  builder.RegisterCallbackGenericService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    return Fail("cannot bind gRPC to " + args["address"] + ": the address is taken or invalid");
  }
  std::unique_ptr<twofour::HttpFront> http;
  int http_port = 0;
  if (args.count("http-address")) {
    twofour::HttpOptions options;
    if (!HttpArgs(&args, &options, &error)) return Fail(error);
    http = std::make_unique<twofour::HttpFront>(&link, options);
    if (!http->Start(&http_port, &error)) return Fail(error);
    std::printf("{\"port\": %d, \"http_port\": %d}\n", port, http_port);
  } else {
    std::printf("{\"port\": %d}\n", port);
  }
  std::fflush(stdout);

  const timespec tick{1, 0};
  while (getppid() == parent) {
    siginfo_t info;
    int got = sigtimedwait(&signals, &info, &tick);
    if (got == SIGTERM) break;  // SIGINT (Ctrl-C reaches the whole group) is the server's to act on
  }
  auto deadline = std::chrono::system_clock::now() +
                  std::chrono::milliseconds(static_cast<long>(grace * 1000));
  if (http) {  // stop accepting HTTP; infer calls in flight get their answers until the deadline
    http->Shutdown(std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<long>(grace * 1000)));
  }
  // The server has drained: refuse new connections and end the accepted ones before gRPC's Shutdown, which would
  // answer CANCELLED to calls reaching it meanwhile (port_close.h); then nothing is left for it to cancel.
  twofour::ClosePublicPort(port);
  server->Shutdown(deadline);
  std::fflush(stdout);
  std::_Exit(0);  // the link's reader thread is detached and blocked in read(): no orderly teardown is owed
}
