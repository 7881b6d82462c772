"""Bulk seed for the benchmark: what months of use leave in the database, without the API.

Patients (about one per 100 reports, in a handful of care teams) on one or two drugs, their
reports with report_symptoms rows, about one alert per five reports (statuses, severities and
follow_up_due_at as the workflow would leave them) with their alert_events, and the audit rows
the API writes for each of those. Values are what the ORM would store: UUIDs, timezone-aware UTC
datetimes, JSON documents. The catalog (symptoms, drugs, side effects, rules, policy) is read
from the database that `alembic upgrade head` prepared, so the seed follows the shipped catalog.

Loading: PostgreSQL through COPY (values written as PostgreSQL text), SQLite through SQLAlchemy
Core ``insert()`` executemany on the model tables in one transaction. Both in chunks of patients,
so memory stays bounded at 1M reports.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Table, create_engine, event, select

from api.models import Base

TEAMS = ("onc-a", "onc-b", "onc-c", "onc-d", "onc-e")
REPORTS_PER_PATIENT = 100
HISTORY_DAYS = 100
ALERT_SHARE = 0.2
# The history workload reads the first page of one patient who reports far more than the rest.
HEAVY_SHARE = 1 / 50
CHUNK_PATIENTS = 200

# Regimens as the clinic sees them: one drug, or a combination (interferon with bevacizumab, IL-2
# with filgrastim support).
REGIMENS: tuple[tuple[tuple[str, ...], int], ...] = (
    (("aldesleukin",), 20),
    (("interferon_alfa_2b",), 15),
    (("ropeginterferon_alfa_2b",), 10),
    (("peginterferon_alfa_2a",), 15),
    (("interferon_alfa_2b", "bevacizumab"), 15),
    (("aldesleukin", "filgrastim"), 10),
    (("bevacizumab",), 10),
    (("filgrastim",), 5),
)
SEVERITY_WEIGHTS = {"emergency": 15, "urgent": 55, "routine": 30}
TRIAGE_RANK = {"emergency": 0, "urgent": 1, "routine": 2}
DEFAULT_FOLLOW_UP = {"emergency": 60, "urgent": 1440, "routine": 4320}
TABLE_ORDER = (
    "patients",
    "therapies",
    "reports",
    "report_symptoms",
    "alerts",
    "alert_events",
    "audit_events",
)


@dataclass(frozen=True)
class PatientInfo:
    id: uuid.UUID
    team: str
    drugs: tuple[str, ...]
    codes: tuple[str, ...]  # the common side effects of the patient's drugs
    serious: tuple[str, ...]  # the serious ones (any drug of the patient lists it as serious)
    vitals: tuple[str, ...]  # the vitals worth measuring on those drugs
    weight: float | None
    reports: int


@dataclass
class SeedResult:
    patients: list[PatientInfo]
    heavy: PatientInfo
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass(frozen=True)
class RuleInfo:
    id: str
    version: int
    drug_code: str | None
    scope_drugs: frozenset[str]
    scope_classes: frozenset[str]
    title: str
    branches: tuple[tuple[str, str], ...]  # (severity, note)


@dataclass(frozen=True)
class Catalog:
    side_effects: dict[str, tuple[str, ...]]
    serious: dict[str, frozenset[str]]
    drug_vitals: dict[str, tuple[str, ...]]
    drug_classes: dict[str, str]
    rules: tuple[RuleInfo, ...]
    follow_up: dict[str, int]


def read_catalog(engine: Engine) -> Catalog:
    t = Base.metadata.tables
    with engine.connect() as conn:
        side: dict[str, list[str]] = {}
        serious: dict[str, set[str]] = {}
        se = t["drug_side_effects"]
        for drug, symptom, frequency in conn.execute(
            select(se.c.drug_code, se.c.symptom_code, se.c.frequency).order_by(se.c.position)
        ):
            side.setdefault(drug, []).append(symptom)
            if frequency == "serious":
                serious.setdefault(drug, set()).add(symptom)
        drugs = conn.execute(
            select(t["drugs"].c.code, t["drugs"].c.vitals, t["drugs"].c.drug_class)
        ).all()
        rv = t["rule_versions"]
        rules = t["rules"]
        rows = conn.execute(
            select(rules.c.id, rules.c.current_version, rules.c.drug_code, rv.c.definition)
            .join(rv, (rv.c.rule_id == rules.c.id) & (rv.c.version == rules.c.current_version))
            .where(rules.c.active.is_(True))
        ).all()
        policy = conn.execute(
            select(t["catalog_settings"].c.value).where(t["catalog_settings"].c.key == "policy")
        ).scalar()
    follow_up = dict(DEFAULT_FOLLOW_UP)
    for name, sev in ((policy or {}).get("severities") or {}).items():
        if isinstance(sev, dict) and "follow_up_minutes" in sev:
            follow_up[name] = int(sev["follow_up_minutes"])
    infos = []
    for rule_id, version, drug_code, definition in rows:
        definition = definition or {}
        scope = definition.get("scope") or {}
        branches = tuple(
            (b.get("severity", "routine"), b.get("note") or "")
            for b in definition.get("branches") or []
        )
        infos.append(
            RuleInfo(
                id=rule_id,
                version=version,
                drug_code=drug_code,
                scope_drugs=frozenset(scope.get("drugs") or ()),
                scope_classes=frozenset(scope.get("drug_classes") or ()),
                title=definition.get("title") or rule_id,
                branches=branches or (("urgent", ""),),
            )
        )
    if not side or not infos:
        raise SystemExit("the catalog is empty: did `alembic upgrade head` run?")
    return Catalog(
        side_effects={k: tuple(v) for k, v in side.items()},
        serious={k: frozenset(v) for k, v in serious.items()},
        drug_vitals={code: tuple(vitals or ()) for code, vitals, _ in drugs},
        drug_classes={code: cls for code, _, cls in drugs},
        rules=tuple(sorted(infos, key=lambda r: r.id)),
        follow_up=follow_up,
    )


def _rules_for(catalog: Catalog, drugs: tuple[str, ...]) -> dict[str, list[tuple[RuleInfo, int]]]:
    """Per severity, the (rule, branch index) that can fire for a patient on these drugs."""
    classes = {catalog.drug_classes.get(d, "") for d in drugs}
    out: dict[str, list[tuple[RuleInfo, int]]] = {s: [] for s in TRIAGE_RANK}
    for rule in catalog.rules:
        if rule.drug_code is not None and rule.drug_code not in drugs:
            continue
        scoped = rule.scope_drugs or rule.scope_classes
        if scoped and not (rule.scope_drugs & set(drugs) or rule.scope_classes & classes):
            continue
        for i, (severity, _) in enumerate(rule.branches):
            if severity in out:
                out[severity].append((rule, i))
    return out


def _report_counts(total: int, rng: random.Random) -> list[int]:
    """Reports per patient: one heavy patient (for the history workload), the rest ~100 each."""
    patients = max(10, total // REPORTS_PER_PATIENT)
    heavy = max(REPORTS_PER_PATIENT * 2, int(total * HEAVY_SHARE))
    rest = total - heavy
    base, extra = divmod(rest, patients - 1)
    counts = [base + (1 if i < extra else 0) for i in range(patients - 1)]
    for i in range(0, len(counts) - 1, 2):  # vary around the mean, keeping the total exact
        d = rng.randint(0, counts[i] // 2)
        counts[i] -= d
        counts[i + 1] += d
    return [heavy, *counts]


def _uuid(rng: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def generate(
    total_reports: int, catalog: Catalog, now: datetime, seed: int = 1
) -> tuple[list[PatientInfo], Iterator[dict[str, list[dict[str, Any]]]]]:
    """The patients, and an iterator over chunks of rows per table (in TABLE_ORDER)."""
    rng = random.Random(seed)
    counts = _report_counts(total_reports, rng)
    regimens = [
        (drugs, w) for drugs, w in REGIMENS if all(d in catalog.side_effects for d in drugs)
    ] or [((next(iter(catalog.side_effects)),), 1)]
    patients: list[PatientInfo] = []
    for i, n in enumerate(counts):
        drugs = rng.choices([r for r, _ in regimens], [w for _, w in regimens])[0]
        every = tuple(dict.fromkeys(c for d in drugs for c in catalog.side_effects[d]))
        grave = set().union(*(catalog.serious.get(d, ()) for d in drugs))
        codes = tuple(c for c in every if c not in grave)
        serious = tuple(c for c in every if c in grave)
        vitals = tuple(dict.fromkeys(v for d in drugs for v in catalog.drug_vitals.get(d, ())))
        weight = None if rng.random() < 0.1 else round(rng.uniform(50, 100), 1)
        patients.append(
            PatientInfo(_uuid(rng), TEAMS[i % len(TEAMS)], drugs, codes, serious, vitals, weight, n)
        )

    event_ids = itertools.count(1)

    def chunks() -> Iterator[dict[str, list[dict[str, Any]]]]:
        for start in range(0, len(patients), CHUNK_PATIENTS):
            rows: dict[str, list[dict[str, Any]]] = {name: [] for name in TABLE_ORDER}
            for p in patients[start : start + CHUNK_PATIENTS]:
                _patient_rows(p, catalog, now, rng, rows)
            # Alert event ids are increasing integers (api/alerts/events.py).
            for row in rows["alert_events"]:
                row["id"] = next(event_ids)
            yield rows

    return patients, chunks()


def _vitals(p: PatientInfo, rng: random.Random) -> dict[str, float | None]:
    out: dict[str, float | None] = dict.fromkeys(
        ("temperature_c", "systolic_bp", "diastolic_bp", "heart_rate", "weight_kg", "spo2")
    )
    if rng.random() >= 0.85:
        return out
    for name in p.vitals:
        if name == "temperature_c":
            out[name] = round(rng.uniform(36.1, 37.5), 1)
        elif name == "systolic_bp":
            out[name] = float(rng.randint(105, 135))
        elif name == "diastolic_bp":
            out[name] = float(rng.randint(65, 85))
        elif name == "heart_rate":
            out[name] = float(rng.randint(60, 100))
        elif name == "weight_kg":
            out[name] = round((p.weight or 70.0) + rng.uniform(-1, 1), 1)
        elif name == "spo2":
            out[name] = float(rng.randint(95, 99))
    return out


def _patient_rows(
    p: PatientInfo,
    catalog: Catalog,
    now: datetime,
    rng: random.Random,
    rows: dict[str, list[dict[str, Any]]],
) -> None:
    rand = rng.random
    start = now - timedelta(days=HISTORY_DAYS + 10)
    rows["patients"].append(
        {
            "id": p.id,
            "care_team": p.team,
            "external_id": f"BENCH-{p.id.hex[:12]}",
            "display_name": None,
            "baseline_weight_kg": p.weight,
            "created_at": start,
        }
    )
    nurse = f"nurse-{p.team}"
    staff = f"clinician-{p.team}"
    rows["audit_events"].append(_audit(rng, start, staff, "clinician", "patient.created", p.id))
    for d in p.drugs:
        tid = _uuid(rng)
        rows["therapies"].append(
            {
                "id": tid,
                "patient_id": p.id,
                "drug_code": d,
                "started_on": (start + timedelta(days=1)).date(),
                "ended_on": None,
                "created_at": start + timedelta(hours=1),
            }
        )
        rows["audit_events"].append(_audit(rng, start, staff, "clinician", "therapy.created", tid))
    rules = _rules_for(catalog, p.drugs)
    severities = [s for s in SEVERITY_WEIGHTS if rules[s]]
    weights = [SEVERITY_WEIGHTS[s] for s in severities]
    open_rules: set[str] = set()  # one open/acknowledged episode per (patient, rule)
    step = HISTORY_DAYS * 86400 / p.reports
    first = now - timedelta(days=HISTORY_DAYS)
    sub = f"patient-{p.id}"
    recent = now - timedelta(days=3)
    for j in range(p.reports):
        rid = _uuid(rng)
        recorded = first + timedelta(seconds=j * step + rand() * step * 0.8)
        received = min(recorded + timedelta(seconds=5 + rand() * 900), now)
        vitals = _vitals(p, rng)
        # 1-5 symptoms of the patient's drugs; common ones graded mostly 0-2, serious ones
        # almost always 0 (many rules fire on any grade of a serious side effect)
        asked = p.codes + p.serious
        n = min(len(asked), rng.choices((1, 2, 3, 4, 5), (30, 30, 20, 12, 8))[0])
        codes = rng.sample(asked, n)
        grades = [
            (0 if rand() < 0.97 else 1)
            if code in p.serious
            else (0 if (r := rand()) < 0.5 else 1 if r < 0.88 else 2)
            for code in codes
        ]
        severity = None
        if severities and rand() < ALERT_SHARE:
            severity = rng.choices(severities, weights)[0]
            grades[0] = {"routine": 2, "urgent": 3}.get(severity, 4)
        cid = _uuid(rng)
        rows["reports"].append(
            {
                "id": rid,
                "patient_id": p.id,
                "client_report_id": cid,
                "recorded_at": recorded,
                "received_at": received,
                **vitals,
                "note": None,
                "body_hash": hashlib.sha256(cid.bytes).hexdigest(),
                "advice_severity": severity,
            }
        )
        for code, grade in zip(codes, grades, strict=True):
            rows["report_symptoms"].append(
                {"report_id": rid, "symptom_code": code, "grade": grade, "note": None}
            )
        rows["audit_events"].append(
            {
                "id": _uuid(rng),
                "at": received,
                "actor_sub": sub,
                "actor_role": "patient",
                "action": "report.created",
                "resource_type": "report",
                "resource_id": str(rid),
                "detail": {"patient_id": str(p.id), "alerts": 1 if severity else 0},
            }
        )
        if severity is None:
            continue
        rule, branch = rng.choice(rules[severity])
        created = received
        window = timedelta(minutes=catalog.follow_up.get(severity, 1440))
        due = created + window
        free = rule.id not in open_rules
        if free and (created >= recent or rand() < 0.03):
            status = "open" if rand() < 0.65 else "acknowledged"
            open_rules.add(rule.id)
        else:
            status = "resolved"
        occurrences = 1 if rand() < 0.8 else rng.randint(2, 4)
        acked = resolved = None
        if status != "open":
            acked = min(created + window * (0.05 + rand() * 0.6), now)
        if status == "resolved":
            resolved = min(acked + timedelta(minutes=10 + rand() * 1440), now)  # type: ignore[operator]
        outcome = None if resolved is None else ("confirmed" if rand() < 0.7 else "false_alarm")
        code = codes[0]
        detail = f"{code.replace('_', ' ')} reported at grade {grades[0]} of 4"
        note = rule.branches[branch][1]
        aid = _uuid(rng)
        rows["alerts"].append(
            {
                "id": aid,
                "patient_id": p.id,
                "care_team": p.team,
                "report_id": rid,
                "rule_id": rule.id,
                "rule_version": rule.version,
                "drug_code": rule.drug_code
                or next((d for d in p.drugs if d in rule.scope_drugs), None),
                "severity": severity,
                "triage_rank": TRIAGE_RANK[severity],
                "status": status,
                "title": rule.title,
                "detail": f"{detail} ({note})" if note else detail,
                "evidence": {
                    "branch": branch,
                    "matched": [{"symptom": code, "grade": grades[0], "op": "gte", "threshold": 2}],
                },
                "created_at": created,
                "follow_up_due_at": due,
                "last_triggered_at": created,
                "occurrences": occurrences,
                "acknowledged_at": acked,
                "acknowledged_by": nurse if acked else None,
                "resolved_at": resolved,
                "resolved_by": nurse if resolved else None,
                "resolution_note": "called the patient; plan agreed" if resolved else None,
                "outcome": outcome,
            }
        )
        events = [(created, "raised", None, None, "open", rid, severity)]
        if acked:
            events.append((acked, "acknowledged", nurse, "open", "acknowledged", None, None))
        if resolved:
            events.append((resolved, "resolved", nurse, "acknowledged", "resolved", None, None))
        for at, action, actor, frm, to, report_id, sev in events:
            rows["alert_events"].append(
                {
                    "id": _uuid(rng),  # replaced in chunks(); drawn to keep the data as before
                    "alert_id": aid,
                    "at": at,
                    "action": action,
                    "actor_sub": actor,
                    "actor_role": "clinician" if actor else None,
                    "report_id": report_id,
                    "severity": sev,
                    "from_status": frm,
                    "to_status": to,
                    "note": None,
                }
            )
            if actor:
                rows["audit_events"].append(
                    _audit(rng, at, actor, "clinician", f"alert.{to}", aid, {"from": frm})
                )


def _audit(
    rng: random.Random,
    at: datetime,
    sub: str,
    role: str,
    action: str,
    resource: uuid.UUID,
    detail: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "id": _uuid(rng),
        "at": at,
        "actor_sub": sub,
        "actor_role": role,
        "action": action,
        "resource_type": action.split(".")[0],
        "resource_id": str(resource),
        "detail": detail,
    }


def check_columns(sample: dict[str, list[dict[str, Any]]]) -> None:
    """Fail clearly when a model gained a required column the seed does not fill."""
    for name in TABLE_ORDER:
        table: Table = Base.metadata.tables[name]
        given = set(sample[name][0]) if sample[name] else None
        if given is None:
            continue
        unknown = given - set(table.c.keys())
        missing = {
            c.name
            for c in table.columns
            if c.name not in given
            and not c.nullable
            and c.server_default is None
            and c.default is None
        }
        if unknown or missing:
            raise SystemExit(
                f"bench/seed.py is out of date with api models for table {name}: "
                f"unknown columns {sorted(unknown)}, missing required {sorted(missing)}"
            )


# --- PostgreSQL: COPY ----------------------------------------------------------------------


def _copy_escape(value: str) -> str:
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        value = (
            value.replace("\\", "\\\\")
            .replace("\t", "\\t")
            .replace("\n", "\\n")
            .replace("\r", "\\r")
        )
    return value


def _dt_text(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("naive datetime in seed data")
    return value.isoformat()


_TEXT: dict[type, Callable[[Any], str]] = {
    str: _copy_escape,
    uuid.UUID: str,
    datetime: _dt_text,
    date: date.isoformat,
    int: str,
    float: repr,
    bool: lambda v: "t" if v else "f",
    dict: lambda v: _copy_escape(json.dumps(v, separators=(",", ":"))),
    list: lambda v: _copy_escape(json.dumps(v, separators=(",", ":"))),
}


def _copy_rows(rows: list[dict[str, Any]], columns: list[str]) -> bytes:
    text_of = _TEXT
    lines = []
    for row in rows:
        lines.append(
            "\t".join("\\N" if (v := row[c]) is None else text_of[type(v)](v) for c in columns)
        )
    lines.append("")
    return "\n".join(lines).encode()


def load_postgres(url: str, chunks: Iterator[dict[str, list[dict[str, Any]]]]) -> dict[str, int]:
    """COPY every chunk; FK triggers off for the load (the data is consistent by construction),
    secondary indexes dropped during the load and rebuilt after, then VACUUM ANALYZE."""
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://", 1)
    counts = dict.fromkeys(TABLE_ORDER, 0)
    with psycopg.connect(dsn) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET maintenance_work_mem = '256MB'")
        indexes = conn.execute(
            """
            SELECT i.indexname, i.indexdef FROM pg_indexes i
            WHERE i.schemaname = 'public' AND i.tablename = ANY(%s)
              AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)
            """,
            (list(TABLE_ORDER),),
        ).fetchall()
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        columns: dict[str, list[str]] = {}
        first = True
        for chunk in chunks:
            if first:
                check_columns(chunk)
                first = False
            for name in TABLE_ORDER:
                rows = chunk[name]
                if not rows:
                    continue
                cols = columns.setdefault(name, list(rows[0]))
                quoted = ", ".join(f'"{c}"' for c in cols)
                with conn.cursor().copy(f'COPY "{name}" ({quoted}) FROM STDIN') as copy:
                    copy.write(_copy_rows(rows, cols))
                counts[name] += len(rows)
        for _, definition in indexes:
            conn.execute(definition)
        # COPY gave the ids: the identity goes on after them.
        conn.execute(
            "SELECT setval(pg_get_serial_sequence('alert_events', 'id'), "
            "(SELECT coalesce(max(id), 0) + 1 FROM alert_events), false)"
        )
        conn.commit()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return counts


# --- SQLite: Core executemany ----------------------------------------------------------------


def load_sqlite(url: str, chunks: Iterator[dict[str, list[dict[str, Any]]]]) -> dict[str, int]:
    """One transaction of Core executemany on the model tables; no fsync during the load."""
    engine = create_engine(url)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=OFF")
        cur.execute("PRAGMA synchronous=OFF")
        cur.execute("PRAGMA foreign_keys=OFF")
        cur.execute("PRAGMA cache_size=-1000000")
        cur.close()

    counts = dict.fromkeys(TABLE_ORDER, 0)
    tables = Base.metadata.tables
    first = True
    with engine.begin() as conn:
        for chunk in chunks:
            if first:
                check_columns(chunk)
                first = False
            for name in TABLE_ORDER:
                if chunk[name]:
                    conn.execute(tables[name].insert(), chunk[name])
                    counts[name] += len(chunk[name])
    with engine.connect() as conn:
        # Back to the journal mode the app runs with (it sets WAL on connect as well).
        conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    engine.dispose()
    return counts


def seed(url: str, total_reports: int, *, seed: int = 1) -> SeedResult:
    started = time.monotonic()
    engine = create_engine(url)
    try:
        catalog = read_catalog(engine)
    finally:
        engine.dispose()
    now = datetime.now(UTC)
    patients, chunks = generate(total_reports, catalog, now, seed)
    if url.startswith("postgresql"):
        counts = load_postgres(url, chunks)
    else:
        counts = load_sqlite(url, chunks)
    heavy = max(patients, key=lambda p: p.reports)
    return SeedResult(patients, heavy, counts, time.monotonic() - started)
