"""Shared test harness: real Redis processes and real gRPC services on free ports, in-process."""
