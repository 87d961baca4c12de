"""Progressive delivery of model versions: a rollout spec, its record in Redis, the canary analysis and the
controller that walks a version through its steps (promote, wait or roll back) by itself."""
