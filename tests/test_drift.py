"""The drift check (``drift_check INTERVAL``): changes the watch never delivered are found by a
list at resourceVersion=0 and repaired within one interval; normal changes are no drift.

The fake API server makes the changes but keeps their events from the open watches
(``miss_events``), as a watch that silently lost them; pydns is asked over UDP."""

from __future__ import annotations

import logging
import time

import pytest

from pydns.testing.fakeapi import FakeApiServer
from tests.conftest import free_port
from tests.kube_api_dns import answer, kube_server, metric, setup_error, wait_for
from tests.kube_cluster import cluster, endpoint, endpoint_slice, service
from tests.test_explain import explain, step_of

pytestmark = pytest.mark.timeout(60)

INTERVAL = 2.0
ZONE = "testns.svc.cluster.local"


def counted(prom, name, label):
    return metric(prom, f'{name}{{{label}}}') or 0.0


def test_missed_events_are_found_and_repaired_within_one_check_interval(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="plugin/kubernetes")
    api = FakeApiServer(cluster()).start()
    prom = free_port()
    srv = kube_server(api, tmp_path, f"  drift_check {INTERVAL:g}s\n", plugins=f" prometheus 127.0.0.1:{prom}\n")
    try:
        def checks():
            return counted(prom, "pydns_kubernetes_drift_checks_total", 'result="ok"')

        def drifted(kind):
            return counted(prom, "pydns_kubernetes_drift_objects_total", f'kind="{kind}"')

        # Changes the watch delivers are no drift, whenever the checks run.
        api.create(service("seen", ips=("10.0.0.66",)))
        api.delete("Service", "testns", "svc-ports")
        wait_for(lambda: answer(srv, f"seen.{ZONE}") == ("NOERROR", ["10.0.0.66"]), what="the watched change")
        services_before, slices_before = drifted("Service"), drifted("EndpointSlice")
        base = checks()
        wait_for(lambda: checks() >= base + 3, timeout=3 * INTERVAL, what="a round of checks (three kinds)")
        assert (drifted("Service"), drifted("EndpointSlice")) == (services_before, slices_before)

        # Right after a round, so that the next one is at least 0.8 x INTERVAL away.
        round_done = checks()
        wait_for(lambda: checks() >= round_done + 3, timeout=3 * INTERVAL, what="the next round")
        api.miss_events(4)
        api.delete("Service", "testns", "svc1")
        api.create(service("fresh", ips=("10.0.0.88",)))
        api.update(service("svcempty", ips=("10.0.0.99",)))
        api.update(endpoint_slice("hdlsprtls-abcde", "hdlsprtls", [endpoint("172.0.0.21")], ports=()))
        injected = time.monotonic()
        assert answer(srv, f"svc1.{ZONE}") == ("NOERROR", ["10.0.0.1"]), "the deletion reached pydns anyway"
        assert answer(srv, f"fresh.{ZONE}")[0] == "NXDOMAIN"

        def repaired():
            return (answer(srv, f"svc1.{ZONE}")[0] == "NXDOMAIN"
                    and answer(srv, f"fresh.{ZONE}") == ("NOERROR", ["10.0.0.88"])
                    and answer(srv, f"svcempty.{ZONE}") == ("NOERROR", ["10.0.0.99"])
                    and answer(srv, f"hdlsprtls.{ZONE}") == ("NOERROR", ["172.0.0.21"]))

        wait_for(repaired, timeout=INTERVAL + 1.0, what="the drift repaired")
        assert time.monotonic() - injected < INTERVAL + 1.0
        assert drifted("Service") == services_before + 3
        assert drifted("EndpointSlice") == slices_before + 1
        logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("drift:")]
        assert any("3 Service object(s)" in line and "testns/svc1 (deleted)" in line and "testns/fresh" in line
                   and line.endswith("repaired") for line in logged), logged
        assert any("1 EndpointSlice object(s)" in line and "testns/hdlsprtls-abcde" in line for line in logged)
    finally:
        srv.stop()
        api.stop()


def test_a_missed_change_of_the_not_ready_count_alone_is_repaired(tmp_path):
    """A drift that changes no answer, only what ``pydns explain`` says, is found and repaired too."""
    api = FakeApiServer(cluster()).start()
    prom = free_port()
    srv = kube_server(api, tmp_path, f"  drift_check {INTERVAL:g}s\n",
                      plugins=f" prometheus 127.0.0.1:{prom}\n explain 127.0.0.1:0\n")
    name = f"hdls-notready.{ZONE}."
    try:
        assert step_of(explain(srv, name), "kubernetes")["not_ready_endpoints"] == 1
        before = counted(prom, "pydns_kubernetes_drift_objects_total", 'kind="EndpointSlice"')
        api.miss_events(1)
        api.update(endpoint_slice("hdls-notready-abcde", "hdls-notready",
                                  [endpoint("172.0.0.40", ready=False), endpoint("172.0.0.41", ready=False)]))
        wait_for(lambda: step_of(explain(srv, name), "kubernetes")["not_ready_endpoints"] == 2,
                 timeout=INTERVAL + 1.0, what="the count repaired")
        assert counted(prom, "pydns_kubernetes_drift_objects_total", 'kind="EndpointSlice"') == before + 1
        assert answer(srv, name)[0] == "NXDOMAIN"
    finally:
        srv.stop()
        api.stop()


@pytest.mark.parametrize("option,message", [
    ("drift_check", "wrong argument count"),
    ("drift_check 0s", "drift_check: the interval must be greater than 0"),
    ("drift_check -5m", "drift_check: invalid interval '-5m'"),
    ("drift_check 1m 2m", "wrong argument count"),
])
def test_drift_check_setup_errors_name_file_and_line(tmp_path, option, message):
    err = setup_error(tmp_path, "  " + option)
    assert err is not None and message in err.message and str(err).startswith(f"{tmp_path / 'Corefile'}:5: ")
