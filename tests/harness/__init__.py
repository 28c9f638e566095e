"""Test and local-run harness for cmk-ingest: starts the local stack (Cosmos
REST server behind a signature check, Storage queue emulator) and serves the
built component in a real Wasm runtime."""
