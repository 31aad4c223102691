"""Security properties of the running processes: what listens where, what a process list and
the logs show, what the API lets through."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
import uuid
from pathlib import Path

import pytest
import requests
from starlette.datastructures import Secret

from bot.servers import Stack, free_port, isolated_settings
from tests.integration.conftest import BOT_TOKEN, RelayRig, relay_settings, wait_until
from tools.evaluate import RestClient
from tools.fake_bot_api import FakeTelegram

pytestmark = pytest.mark.integration


def _group(pgid: int) -> list[int]:
    """Every process in a process group (the Stack starts each server in its own session)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:
                found.append(int(entry.name))
    return found


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _hex_address(hex_addr: str) -> str:
    raw = bytes.fromhex(hex_addr)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    return str(ipaddress.IPv6Address(b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))))


def listening(pgid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket the process group listens on, from /proc/net."""
    inodes = set().union(*(_socket_inodes(pid) for pid in _group(pgid)))
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                address, port = cols[1].split(":")
                found.add((_hex_address(address), int(port, 16)))
    return found


def test_every_process_listens_on_loopback_only(stack: Stack, relay: RelayRig) -> None:
    stack.start_clinic()
    try:
        groups = {name: proc.pid for name, proc in {**stack.procs, **relay.stack.procs}.items()}
        assert set(groups) >= {"rasa", "actions", "relay", "clinic", "clinic-worker"}
        for name, pgid in groups.items():
            addresses = listening(pgid)
            if name != "relay":  # the relay long-polls: it listens on nothing
                assert addresses, f"{name} listens somewhere"
            assert all(ipaddress.ip_address(a).is_loopback for a, _ in addresses), (name, addresses)
        assert (("127.0.0.1", stack.settings.actions_port)) in listening(groups["actions"])
    finally:
        stack.stop_one("clinic")
        stack.stop_one("clinic-worker")


def test_the_api_token_is_not_in_the_process_list(stack: Stack) -> None:
    token = str(stack.settings.rasa_api_token)
    for pid in _group(stack.procs["rasa"].pid):
        assert token not in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    status = f"{stack.settings.rasa_url}/status"
    assert requests.get(status, timeout=10).status_code == 401
    assert requests.get(status, params={"token": "wrong"}, timeout=10).status_code == 401
    assert requests.get(status, params={"token": token}, timeout=10).status_code == 200, "the token reached Rasa"


def test_logs_carry_no_message_text_and_no_patient_identifiers(stack: Stack, client: RestClient, relay: RelayRig) -> None:
    marker = f"zq{uuid.uuid4().hex[:10]}"
    rest_sender = f"patient-{marker}-rest"
    client.send(rest_sender, f"I can't breathe, {marker} help")
    client.send(rest_sender, f"my temperature is 39.8 and my name is {marker}")
    chat = 880_000 + int(uuid.uuid4().int % 100_000)
    relay.fake.push_text(chat, f"my lips are blue {marker}")
    relay.fake.wait_sent(chat, 1)
    wait_until(lambda: len(relay.tracker(chat)["events"]) > 0, what="stored")
    logs = {path.name: path.read_text(errors="replace") for path in [*stack.log_dir.glob("*.log"), *relay.stack.log_dir.glob("*.log")]}
    assert {"rasa.log", "actions.log", "relay.log"} <= set(logs)
    for name, text in logs.items():
        assert marker not in text, f"message text or sender id in {name}"
        assert relay.sender(chat) not in text, f"sender id in {name}"
        assert f'"chat_id": {chat}' not in text and f"chat_id={chat}" not in text, f"chat id in {name}"


def test_the_rasa_port_refuses_other_interfaces(stack: Stack) -> None:
    """Reaching the API from another address of this machine fails (where the machine has one)."""
    addresses = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:  # the outbound interface (no packet is sent)
        probe.connect(("10.255.255.255", 1))
        addresses.add(probe.getsockname()[0])
    others = [a for a in addresses if not ipaddress.ip_address(a).is_loopback]
    if not others:
        pytest.skip("this machine has no non-loopback IPv4 address to try")
    for address in others:
        for port in (stack.settings.rasa_port, stack.settings.actions_port):
            with socket.socket() as s:
                s.settimeout(2)
                assert s.connect_ex((address, port)) != 0, (address, port)


def _all_output(log_dir: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted(log_dir.glob("*.log")))


def test_a_rejected_bot_token_is_never_printed(stack: Stack, tmp_path: Path) -> None:
    """python-telegram-bot's InvalidToken message and traceback name the token: masked."""
    fake = FakeTelegram(token=BOT_TOKEN).start()
    rejected = "5555:rejected-token-NOT-FOR-LOGS"
    settings = dataclasses.replace(relay_settings(stack, fake, tmp_path), telegram_bot_token=Secret(rejected))
    relay_stack = Stack(settings, log_dir=tmp_path)
    try:
        with pytest.raises(RuntimeError, match="exited"):
            relay_stack.start_relay(timeout=60)
    finally:
        relay_stack.stop()
        fake.stop()
    output = _all_output(tmp_path)
    assert "rejected" in output.lower() or "unauthorized" in output.lower(), "the log says what went wrong"
    assert rejected not in output and rejected.split(":")[1] not in output


def test_a_bad_database_password_is_never_printed(stack: Stack, tmp_path: Path) -> None:
    """The Rasa and action servers on a database that refuses them: their logs name the problem, not the password."""
    password = "Bad-Passw0rd-NOT-FOR-LOGS"
    settings = isolated_settings(tmp_path, database_url=f"postgresql://crs:{password}@127.0.0.1:{free_port()}/crs")
    broken = Stack(settings, log_dir=tmp_path)
    try:
        broken.start()
        probe = requests.post(
            f"{settings.rasa_url}/webhooks/rest/webhook", json={"sender": "probe", "message": "I have a fever"}, timeout=60
        )
        assert probe.status_code == 500, "not an empty 200"
    finally:
        broken.stop()
    output = _all_output(tmp_path)
    assert "database" in output.lower()
    assert password not in output
