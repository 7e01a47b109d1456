"""What every service shares: settings, gRPC plumbing (auth, errors, health), logging, the local stack."""
