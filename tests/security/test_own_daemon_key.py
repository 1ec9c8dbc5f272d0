"""A daemon listening with CURVE authorises its own client key as a peer daemon: the radar of a
group it leads follows this very node over CURVE, as it follows the others."""

from __future__ import annotations

import zmq.auth

from agentd.transport.auth import authorize_own_client_key, authorized_keys, load_or_create_keypair


def test_the_own_client_key_gets_the_daemon_role_once(tmp_path):
    written = authorize_own_client_key(tmp_path)
    public, _ = load_or_create_keypair(tmp_path / "keys", "client")
    assert written == tmp_path / "authorized_keys" / "daemon" / "this-node.key"
    assert zmq.auth.load_certificate(str(written))[0] == public
    held = authorized_keys(tmp_path / "authorized_keys")[public]
    assert held.role == "daemon" and held.user is None  # a peer daemon cannot submit as anybody
    assert authorize_own_client_key(tmp_path) is None  # already there: nothing written


def test_an_admin_authorisation_of_the_key_as_daemon_is_left_alone(tmp_path):
    public, _ = load_or_create_keypair(tmp_path / "keys", "client")
    d = tmp_path / "authorized_keys" / "daemon"
    d.mkdir(parents=True)
    (d / "gpu-a.key").write_text(f'curve\n    public-key = "{public.decode()}"\n')
    assert authorize_own_client_key(tmp_path) is None
    assert sorted(p.name for p in d.iterdir()) == ["gpu-a.key"]
