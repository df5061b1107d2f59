"""A sockpool worker node: a process pool joined to a broker."""
