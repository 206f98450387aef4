"""The drill's results as the spec's comparison tables, with the measured numbers."""

from __future__ import annotations

from rich.table import Table

from drledger.drill.run import DrillResult


def comparison_table(result: DrillResult, tps: float) -> Table:
    table = Table(
        title=f"DR drill: {tps:g} TPS, replication lag {result.replication_lag_s:g} s, ledger {result.ledger}"
    )
    table.add_column("metric")
    table.add_column("replication alone", justify="right")
    table.add_column("replication + drledger", justify="right")
    table.add_row(
        "committed (acknowledged to the application)", f"{result.committed:,}", f"{result.committed:,}"
    )
    table.add_row(
        "records lost at failover", f"{result.lost_without_ledger:,}", f"{result.lost_without_ledger:,}"
    )
    table.add_row("loss detected", "no", f"yes: {result.detected:,} records")
    table.add_row("replay possible", "no", "yes")
    table.add_row("records recovered", "0", f"{result.recovered:,}")
    table.add_row(
        "records unrecoverable (never reached the ledger)",
        f"{result.lost_without_ledger:,}",
        f"{result.unrecoverable:,}",
    )
    table.add_row(
        "records still missing at the end",
        f"{result.lost_without_ledger:,}",
        f"{result.missing_after_replay:,}",
    )
    table.add_row("time to detect", "never", f"{result.detect_seconds:.2f} s")
    table.add_row("time to recover", "—", f"{result.recover_seconds:.2f} s")
    if result.replay_to_plain_load is not None:
        table.add_row(
            "replay rate ÷ a plain load of the same rows",
            "",
            f"{result.replay_events_per_s:,.0f} ÷ {result.plain_load_events_per_s:,.0f} events/s "
            f"= {result.replay_to_plain_load:.2f}",
        )
    for op, figures in result.changes.items():
        table.add_section()
        table.add_row(f"{op}s lost at failover", f"{figures['lost']:,}", f"{figures['lost']:,}")
        table.add_row(f"{op}s detected", "no", f"{figures.get('detected', 0):,}")
        table.add_row(f"{op}s recovered", "0", f"{figures['recovered']:,}")
        table.add_row(f"{op}s held back by replay (a person decides)", "", f"{figures['held_back']:,}")
        table.add_row(
            f"{op}s unrecoverable (never reached the ledger)",
            f"{figures['lost']:,}",
            f"{figures['unrecoverable']:,}",
        )
    if result.changes:
        table.add_section()
        table.add_row("rows not as their commits left them (target 0)", "", f"{result.wrong_rows:,}")
        table.add_row(
            "sum of the accounts' balances: before → after",
            "",
            f"{result.balance_total_opening} → {result.balance_total_after}",
        )
    if result.predicted_at_risk is not None:
        table.add_section()
        table.add_row(
            "events at risk, predicted by drledger watch at the disaster → lost",
            "",
            f"{result.predicted_at_risk:,} → {result.events(result.lost_without_ledger, 'lost'):,}",
        )
        table.add_row(
            "recoverable, predicted → recovered",
            "",
            f"{result.predicted_recoverable:,} → {result.events(result.recovered, 'recovered'):,}",
        )
        table.add_row(
            "unrecoverable, predicted → measured",
            "",
            f"{result.predicted_unrecoverable:,} → {result.events(result.unrecoverable, 'unrecoverable'):,}",
        )
    table.add_section()
    p50 = "n/a" if result.ledger_lag_p50_ms is None else f"{result.ledger_lag_p50_ms:.0f} ms"
    p99 = "n/a" if result.ledger_lag_p99_ms is None else f"{result.ledger_lag_p99_ms:.0f} ms"
    measured = (
        ""
        if result.replication_lag_measured_s is None
        else f" (measured {result.replication_lag_measured_s:g} s)"
    )
    table.add_row("ledger lag p50 / p99 (commit → durably in ledger)", "", f"{p50} / {p99}")
    table.add_row("replication lag", f"{result.replication_lag_s:g} s{measured}", "")
    if result.replica_replication is not None:
        table.add_row("the replica replicated by", result.replica_replication, "")
    return table
