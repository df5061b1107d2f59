"""Imported by the worker's forkserver only (as a preload module): tunes
its malloc as `heap.keep_freed_buffers` says, before it forks any pool
process, so that every pool process inherits the tuning (a forked child
keeps its parent's allocator settings)."""

from .heap import keep_freed_buffers

keep_freed_buffers()
