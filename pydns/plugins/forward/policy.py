"""The order in which a query tries the upstreams: random, round_robin or sequential."""

from __future__ import annotations

import random


class Random:
    """A fresh random order per query (the default)."""

    def order(self, proxies: list) -> list:
        n = len(proxies)
        if n == 1:
            return proxies
        if n == 2:
            return proxies if random.getrandbits(1) else [proxies[1], proxies[0]]
        return random.sample(proxies, n)


class RoundRobin:
    """Each query starts one further along the list; the others follow in list order."""

    def __init__(self) -> None:
        self.robin = 0

    def order(self, proxies: list) -> list:
        self.robin += 1
        i = self.robin % len(proxies)
        return [proxies[i], *proxies[:i], *proxies[i + 1:]]


class Sequential:
    """Always the list order: the first upstream unless it fails."""

    def order(self, proxies: list) -> list:
        return proxies


POLICIES = {"random": Random, "round_robin": RoundRobin, "sequential": Sequential}
