"""The sockpool broker: a threaded TCP server around a pure queue core."""
