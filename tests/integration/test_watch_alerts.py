"""The alert rules: promtool's unit tests, then the whole chain for real — `drledger watch` scraped by a
Prometheus evaluating the packaged rules, an Alertmanager, and a webhook that hears the alert when the
relay is killed under load."""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
import time
from importlib.resources import files
from pathlib import Path

import psycopg
import pytest

from drledger.drill.alerting import LocalAlerting, binaries
from tests.helpers import REPO, RelayFactory, run_cli, slot_active, start_watch, wait_for


def test_rules_pass_promtool_unit_tests(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed; make install installs it (Debian package prometheus)")
    rules = files("drledger.watch").joinpath("rules")
    for name in ("drledger-rules.yml", "drledger-rules.test.yml"):
        (tmp_path / name).write_text(rules.joinpath(name).read_text())
    checked = subprocess.run(
        [promtool, "check", "rules", "drledger-rules.yml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert checked.returncode == 0 and "SUCCESS: 9 rules found" in checked.stdout, (
        checked.stdout + checked.stderr
    )
    tested = subprocess.run(
        [promtool, "test", "rules", "drledger-rules.test.yml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr
    # The deploy/ copy is the packaged file itself.
    deployed = REPO / "deploy" / "prometheus" / "drledger-rules.yml"
    assert deployed.read_text() == rules.joinpath("drledger-rules.yml").read_text()


@pytest.mark.debezium
def test_relay_death_reaches_the_alertmanager_webhook(
    database: str, workdir: Path, relay_factory: RelayFactory
) -> None:
    if binaries() is None:
        pytest.fail("Prometheus and Alertmanager are not installed; make install installs them")
    url = f"sqlite:///{workdir}/ledger.db"
    assert run_cli("init", "--db", database, "--table", "orders").returncode == 0
    relay = relay_factory(database, url)
    wait_for(lambda: slot_active(database, "drledger_slot"), 120, "the relay to start")
    watcher = start_watch(database, url, workdir / "watch.log", "--interval", "1s", "--grace", "5s")
    stop = threading.Event()

    def load() -> None:  # the application keeps writing, 20 transactions a second
        with psycopg.connect(database, autocommit=True) as conn:
            while not stop.is_set():
                conn.execute("INSERT INTO orders (customer, amount) VALUES ('load', 1)")
                time.sleep(0.05)

    writer = threading.Thread(target=load, daemon=True)
    try:
        with LocalAlerting([f"127.0.0.1:{watcher.port}"]) as alerting:
            writer.start()
            wait_for(lambda: alerting.query("drledger_relay_up == 1"), 60, "Prometheus to see the relay up")
            assert not alerting.query("ALERTS")  # healthy: nothing pending or firing
            killed_at = time.time()
            relay.kill(signal.SIGKILL)
            down = alerting.webhook.first("DrledgerRelayDown", timeout_s=120)
            assert down is not None, "DrledgerRelayDown never reached the webhook"
            assert down.labels["severity"] == "critical"
            missing = alerting.webhook.first("DrledgerEventsMissingFromLedger", timeout_s=150)
            assert missing is not None, "DrledgerEventsMissingFromLedger never reached the webhook"
            relay_down_s = down.received_at - killed_at
            missing_s = missing.received_at - killed_at
            print(
                f"\nrelay killed → DrledgerRelayDown at the webhook: {relay_down_s:.1f} s; "
                f"→ DrledgerEventsMissingFromLedger: {missing_s:.1f} s"
            )
            # The rules wait 30 s and 1 m (+ the 5 s grace); scrapes and evaluations add seconds, not minutes.
            assert 30 <= relay_down_s <= 50
            assert 65 <= missing_s <= 90
            assert not [
                n for n in alerting.webhook.received if n.alertname == "DrledgerUnrecoverableIfFailover"
            ]
    finally:
        stop.set()
        assert watcher.stop() == 0
    log = (workdir / "watch.log").read_text()
    assert "relay: down (was alive)" in log and "ledger completeness: missing events" in log, log
