"""Issue 14, the pure parts: the access decision, the client address behind proxies, the per-address counter,
and the settings that configure them."""

from __future__ import annotations

import pytest

from fabstir_node.config import ConfigError, Settings, markdown_table
from fabstir_node.errors import ErrorCode
from fabstir_node.service.access import Decision, Policy, decide, denial, holds_other_users_data
from fabstir_node.service.peers import PeerCounter, client_address, parse_networks

OWNER = "0xAbCdEf0000000000000000000000000000000001"
OTHER = "0x1111111111111111111111111111111111111111"


# --- the decision ------------------------------------------------------------------


@pytest.mark.parametrize("signer", [None, OWNER, OTHER])
@pytest.mark.parametrize("capability", [False, True])
@pytest.mark.parametrize("owner", [None, OWNER])
def test_open_allows_everything_without_asking_for_the_owner(signer, capability, owner):
    assert decide("open", signer=signer, capability=capability, owner=owner) is Decision.OPEN


@pytest.mark.parametrize(
    "signer, capability, owner, expected",
    [
        (None, False, None, Decision.UNSIGNED),  # plaintext: decided before anything is read
        (None, False, OWNER, Decision.UNSIGNED),
        (None, True, None, Decision.CAPABILITY),  # a directory key the manifest resolved through
        (OTHER, True, OWNER, Decision.CAPABILITY),
        (OWNER, False, None, None),  # a signer: the manifest's owner is needed first
        (OWNER, False, OWNER, Decision.OWNER),
        (OWNER.lower(), False, OWNER.upper().replace("0X", "0x"), Decision.OWNER),
        (OTHER, False, OWNER, Decision.NOT_OWNER),
        (OWNER, False, "", Decision.NOT_OWNER),
    ],
)
def test_signed(signer, capability, owner, expected):
    assert decide(Policy.SIGNED, signer=signer, capability=capability, owner=owner) is expected


def test_non_ascii_look_alikes_are_not_the_owner():
    owner = "0xabcdef000000000000000000000000000000000k"
    kelvin = owner.replace("k", "\u212a")  # KELVIN SIGN: lower() makes it an ASCII k
    assert decide("signed", signer=kelvin, capability=False, owner=owner) is Decision.NOT_OWNER


def test_unknown_policy_is_a_bug_not_a_silent_open():
    with pytest.raises(ValueError):
        decide("closed", signer=None, capability=False)


def test_only_refusals_have_an_error_and_it_names_no_address():
    for decision in Decision:
        error = denial(decision)
        assert (error is None) == decision.allowed
        if error is not None:
            assert error.code is ErrorCode.ACCESS_DENIED and not error.retryable
            assert "0x" not in error.message


@pytest.mark.parametrize(
    "settings, holds",
    [
        ({}, True),  # the local store
        ({"s5_bridge_url": "http://bridge"}, True),
        ({"s5_portal_url": "http://portal"}, False),  # native S5, shared directory keys only
        ({"s5_portal_url": "http://portal", "s5_allow_wallet_identity": True}, True),
        ({"s5_portal_url": "http://portal", "s5_seed_phrase": "x"}, True),
        ({"s5_embedded_portal_dir": "/tmp/portal"}, True),
    ],
)
def test_which_storage_holds_other_users_data(settings, holds):
    assert holds_other_users_data(Settings(**settings)) is holds


# --- the client address ------------------------------------------------------------


PROXIES = parse_networks(["127.0.0.1", "10.0.0.0/8", "fd00::/8"])


@pytest.mark.parametrize(
    "peer, forwarded, expected",
    [
        ("203.0.113.5", ["198.51.100.1"], "203.0.113.5"),  # not a proxy: its header is not believed
        ("127.0.0.1", [], "127.0.0.1"),  # a proxy that sent no header
        ("127.0.0.1", ["198.51.100.1"], "198.51.100.1"),
        ("127.0.0.1", ["6.6.6.6, 198.51.100.1"], "198.51.100.1"),  # left of the client: the client wrote it
        ("127.0.0.1", ["198.51.100.1, 10.1.2.3"], "198.51.100.1"),  # through two trusted proxies
        ("127.0.0.1", ["198.51.100.1", "10.1.2.3"], "198.51.100.1"),  # the header twice
        ("127.0.0.1", ["10.9.9.9, 10.1.2.3"], "10.9.9.9"),  # all trusted: the left-most
        ("127.0.0.1", ["6.6.6.6, garbage, 10.1.2.3"], "10.1.2.3"),  # garbage: believe nothing left of it
        ("127.0.0.1", ["garbage"], "127.0.0.1"),
        ("127.0.0.1", ["198.51.100.1:4711"], "198.51.100.1"),
        ("127.0.0.1", ['"[2001:db8::1]:443"'], "2001:db8::1"),
        ("fd00::1", ["2001:db8::2"], "2001:db8::2"),
        ("::ffff:127.0.0.1", ["198.51.100.1"], "198.51.100.1"),  # an IPv4 peer on a dual-stack socket
        ("::ffff:203.0.113.5", [], "203.0.113.5"),
        (None, ["198.51.100.1"], "unknown"),
        ("not-an-ip", ["198.51.100.1"], "not-an-ip"),
    ],
)
def test_client_address(peer, forwarded, expected):
    assert client_address(peer, forwarded, PROXIES) == expected


def test_without_trusted_proxies_the_header_never_counts():
    assert client_address("127.0.0.1", ["198.51.100.1"], ()) == "127.0.0.1"


def test_the_counter_caps_each_address_and_gives_slots_back():
    counter = PeerCounter(2)
    assert counter.acquire("a") and counter.acquire("a") and not counter.acquire("a")
    assert counter.acquire("b")  # another address has its own slots
    counter.release("a")
    assert counter.count("a") == 1 and counter.acquire("a")
    for _ in range(3):
        counter.release("a")
    counter.release("b")
    assert counter.count("a") == 0 and len(counter) == 0  # nothing kept for closed addresses
    unlimited = PeerCounter(0)
    assert all(unlimited.acquire("a") for _ in range(1000))


# --- settings --------------------------------------------------------------------------


def test_defaults_keep_the_earlier_behaviour_and_cap_connections():
    settings = Settings.from_sources({})
    assert settings.access_policy == "open"
    assert settings.max_connections_per_ip == 32 and settings.trusted_proxies is None
    table = markdown_table()
    for env in ("FABSTIR_ACCESS_POLICY", "FABSTIR_MAX_CONNECTIONS_PER_IP", "FABSTIR_TRUSTED_PROXIES"):
        assert f"`{env}`" in table


def test_settings_from_the_environment():
    settings = Settings.from_sources({
        "FABSTIR_ACCESS_POLICY": "Signed", "FABSTIR_MAX_CONNECTIONS_PER_IP": "0",
        "FABSTIR_TRUSTED_PROXIES": " 127.0.0.1, 10.0.0.0/8 ,fd00::1/8",
    })
    assert settings.access_policy == "signed" and settings.max_connections_per_ip == 0
    assert settings.trusted_proxies == ("127.0.0.1/32", "10.0.0.0/8", "fd00::/8")
    assert Settings.from_sources({}, {"access_policy": "signed"}).access_policy == "signed"


@pytest.mark.parametrize(
    "env, name",
    [
        ({"FABSTIR_ACCESS_POLICY": "closed"}, "FABSTIR_ACCESS_POLICY"),
        ({"FABSTIR_MAX_CONNECTIONS_PER_IP": "-1"}, "FABSTIR_MAX_CONNECTIONS_PER_IP"),
        ({"FABSTIR_TRUSTED_PROXIES": "proxy.example"}, "FABSTIR_TRUSTED_PROXIES"),
    ],
)
def test_bad_values_name_the_variable(env, name):
    with pytest.raises(ConfigError, match=name):
        Settings.from_sources(env)
