"""sockpool's benchmark suite: the same workloads on sockpool, on a local
`multiprocessing.Pool` in the same run, and on Dask distributed when it is
installed. Run it with `python -m bench` (see bench/README.md).

Nothing here is imported by sockpool itself, and nothing here asserts a
speed: the numbers are for people to read, as ratios to the local pool.
"""
