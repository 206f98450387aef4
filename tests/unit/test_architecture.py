"""The layers the design keeps, checked on the source itself: who may import whom, where a database
driver may be imported, and where a ledger's URL scheme may be named."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[2] / "src" / "drledger"

# Bottom to top. A module may import its own layer and the layers below, never one above.
LAYERS = [
    # neutral types and helpers
    {
        "drledger",
        "drledger.errors",
        "drledger.events",
        "drledger.names",
        "drledger.masking",
        "drledger.timeutil",
        "drledger.margins",
        "drledger.roles",
        "drledger.config",
        "drledger.files",
        "drledger.retry",
        "drledger.streaming",
        "drledger.java",
        "drledger.metrics_endpoint",
        "drledger.holdback",
    },
    # the two seams: ledgers and source databases
    {"drledger.ledger", "drledger.source"},
    # what works through the seams: pure comparison and screening, the recovery steps, the relay
    {
        "drledger.census",
        "drledger.collisions",
        "drledger.screening",
        "drledger.reconcile",
        "drledger.fence",
        "drledger.replay",
        "drledger.recovery",
        "drledger.runbook",
        "drledger.saved",
        "drledger.relay",
        "drledger.watch",
        "drledger.connect",
    },
    # what people run and read
    {"drledger.report", "drledger.report_html", "drledger.cli", "drledger.drill", "drledger.__main__"},
]
# Database drivers: the source seam's engines, and the drill's local clusters (per engine too).
DRIVERS = ("psycopg", "pymysql")
DRIVER_HOMES = (
    "drledger.source.",
    "drledger.drill.postgres.rig",
    "drledger.drill.postgres.cluster",
    "drledger.drill.mysql.server",
)
SCHEME = re.compile(r"""["'](sqlite|kafka|sqs|kinesis)(://|:)""")


def module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    for index, members in enumerate(LAYERS):
        for member in members:
            if module == member or (member != "drledger" and module.startswith(member + ".")):
                return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def modules() -> list[Path]:
    return sorted(SOURCE.rglob("*.py"))


def test_every_module_imports_only_its_layer_and_below() -> None:
    upward = []
    for path in modules():
        name = module_name(path)
        mine = layer_of(name)
        for imported in imports(path):
            if not imported.startswith("drledger.") or imported == "drledger.__version__":
                continue
            try:
                theirs = layer_of(imported)
            except AssertionError:
                continue  # a name imported from a module (drledger.x.Name) resolves through its module
            if theirs > mine:
                upward.append(f"{name} imports {imported}")
    assert not upward, upward


def test_database_drivers_are_imported_only_behind_the_source_seam() -> None:
    offenders = [
        f"{module_name(path)} imports {imported}"
        for path in modules()
        for imported in imports(path)
        if imported.split(".")[0] in DRIVERS and not module_name(path).startswith(DRIVER_HOMES)
    ]
    assert not offenders, offenders


def test_ledger_schemes_and_backends_are_named_only_inside_ledger() -> None:
    backends = re.compile(r"\b(SqliteLedger|KafkaLedger|SqsLedger|KinesisLedger)\b")
    offenders = [
        module_name(path)
        for path in modules()
        if not module_name(path).startswith("drledger.ledger")
        and (SCHEME.search(path.read_text()) or backends.search(path.read_text()))
    ]
    assert not offenders, offenders


def test_reconcile_and_replay_know_no_engine_and_no_backend() -> None:
    for name in ("reconcile", "replay", "fence", "screening", "recovery", "runbook"):
        text = (SOURCE / f"{name}.py").read_text()
        assert "drledger.source.postgres" not in text and "drledger.ledger." not in text.replace(
            "drledger.ledger.base", ""
        ), name
