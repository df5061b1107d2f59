"""The socket layer every side shares: `Connection` (frames over a socket,
plain or TLS), the TLS contexts, and the credentials a peer presents.

The wire format itself is `sockpool.protocol`, which does no I/O; this
package is where it meets the socket.
"""
