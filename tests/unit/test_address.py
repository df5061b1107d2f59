"""Broker addresses as users write them and as sockpool prints them."""

from __future__ import annotations

import pytest

from sockpool.net.connection import join_address, parse_address
from sockpool.protocol import DEFAULT_HOST, DEFAULT_PORT


@pytest.mark.parametrize(
    "address,parsed",
    [
        ("example.org:9000", ("example.org", 9000)),
        ("10.0.0.5:1", ("10.0.0.5", 1)),
        (":9000", (DEFAULT_HOST, 9000)),
        ("example.org", ("example.org", DEFAULT_PORT)),
        ("[::1]:9000", ("::1", 9000)),
        ("[fe80::1]:80", ("fe80::1", 80)),
        ("::1", ("::1", DEFAULT_PORT)),
        ("2001:db8::7", ("2001:db8::7", DEFAULT_PORT)),
    ],
)
def test_parse_address(address, parsed):
    assert parse_address(address) == parsed


def test_parse_address_falls_back_to_the_environment_then_the_default(monkeypatch):
    monkeypatch.setenv("SOCKPOOL_BROKER", "elsewhere:7")
    assert parse_address(None) == ("elsewhere", 7)
    monkeypatch.delenv("SOCKPOOL_BROKER")
    assert parse_address(None) == (DEFAULT_HOST, DEFAULT_PORT)


@pytest.mark.parametrize("address", ["host:port", "host:", "[::1]:x"])
def test_parse_address_refuses_a_port_that_is_no_number(address):
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        parse_address(address)


@pytest.mark.parametrize("host", ["127.0.0.1", "example.org", "::1", "2001:db8::7"])
def test_join_address_round_trips_through_parse_address(host):
    joined = join_address(host, 9000)
    assert ("[" in joined) == (":" in host)
    assert parse_address(joined) == (host, 9000)
