"""The long-running compression worker: jobs from a Redis Stream, a resumable pipeline, a gate, publishing."""
