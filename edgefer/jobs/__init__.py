"""The compression job protocol, torch-free: what a job asks for (spec), the Redis Stream that carries jobs
(queue), their status records (status), and `edgefer-jobs` (cli). Submitters (the demo, operators) and the
worker share it; only the worker runs jobs."""
