"""gRPC plumbing every service shares: servers, channels, the one interceptor, status translation."""
