"""A fleet on one machine: a throwaway redis-server and edge node processes (tests, benchmarks, make demo)."""
