"""Hosts as Linux network namespaces on a bridge of their own (iproute2; needs root).

The bridge lives in a namespace of its own too, so nothing is added to the machine's own network: the
subnet exists only inside the namespaces, with no default route and no NAT. Every name carries the run's
prefix, and `teardown` removes whatever carries it, also after a failed run.
"""
from __future__ import annotations

import ctypes
import os
import subprocess
from dataclasses import dataclass, field

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/var/run/netns"


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def supported() -> tuple[bool, str]:
    """Whether this process may build namespaces, and why not."""
    if os.geteuid() != 0:
        return False, "needs root (ip netns add)"
    try:
        probe = ip("netns", "list", check=False)
    except FileNotFoundError:
        return False, "iproute2's ip command is missing"
    return probe.returncode == 0, probe.stderr.strip()


@dataclass
class Network:
    """One bridge and the hosts on it: `10.<b>.<c>.<n>/24`, each host's link a veth port on the bridge."""

    prefix: str
    subnet: str = "10.213.7"
    hosts: dict[str, str] = field(default_factory=dict)  # host name -> its address
    ports: dict[str, str] = field(default_factory=dict)  # host name -> its bridge port

    @property
    def switch(self) -> str:
        return f"{self.prefix}-switch"

    def namespace(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def create(self) -> None:
        ip("netns", "add", self.switch)
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", self.switch, "link", "set", "br0", "up")

    def add_host(self, host: str) -> str:
        """A namespace for `host` with its own loopback and one link to the bridge; its address."""
        number = len(self.hosts) + 2
        address, port, namespace = f"{self.subnet}.{number}", f"p{number}", self.namespace(host)
        ip("netns", "add", namespace)
        ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", namespace)
        ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
        ip("-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
        ip("-n", namespace, "link", "set", "eth0", "up")
        ip("-n", namespace, "link", "set", "lo", "up")
        self.hosts[host], self.ports[host] = address, port
        return address

    def set_link(self, host: str, up: bool) -> None:
        """Cut (or restore) `host`'s only link, as a pulled cable: no FIN or RST reaches its peers."""
        ip("-n", self.switch, "link", "set", self.ports[host], "up" if up else "down")

    def teardown(self) -> None:
        """Delete every namespace of this run (their veth pairs go with them)."""
        for name in namespaces_with_prefix(self.prefix):
            ip("netns", "delete", name, check=False)


def namespaces_with_prefix(prefix: str) -> list[str]:
    listed = ip("netns", "list", check=False).stdout.split("\n")
    return [line.split()[0] for line in listed if line.strip() and line.split()[0].startswith(prefix + "-")]


def enter(namespace: str) -> None:
    """Move this thread (call it before starting any other) into `namespace`'s network."""
    libc = ctypes.CDLL(None, use_errno=True)
    descriptor = os.open(os.path.join(NETNS_DIR, namespace), os.O_RDONLY)
    try:
        if libc.setns(descriptor, CLONE_NEWNET) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"setns into {namespace}: {os.strerror(error)}")
    finally:
        os.close(descriptor)
