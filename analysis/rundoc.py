"""The run document: one JSON file per run, the contract between probes, analysis and users.

Keys carry their unit (`bytes_per_s`, `flop_per_s`, `seconds`, `_s`, `_bytes`); figures are SI numbers and
only displays convert to decimal GB/s or TFLOPS. The document is rewritten atomically (temporary file in
the same folder, rename) after every finished case, so a crash, a signal or a SIGKILL loses no finished case.
`load()` refuses what it cannot read, with a message that says why: the document is checked against the
JSON Schema shipped beside it (`data/run.schema.json`, with `jsonschema`), once, at the door.

It lives on the analysis side (torch-free) because both wings read it: probes write run documents with it,
and analysis on a laptop loads them with it.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import statistics
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from analysis.cli import BadInput, read_text

SCHEMA = "gpuprobe.run/1"
SCHEMA_FAMILY = "gpuprobe.run/"


class RunDocumentError(BadInput):
    """A file that is not a run document this version can read."""


@dataclass
class Measurement:
    """One case of one probe: parameters, timing with raw samples, the derived figure, and its checks."""

    probe: str
    case: str
    device: str
    params: dict[str, Any]
    status: str = "ok"  # ok | error | skipped
    value: float | None = None
    unit: str | None = None  # "bytes_per_s", "flop_per_s", ...
    timing: dict[str, Any] | None = None
    verification: dict[str, Any] = field(default_factory=lambda: {"status": "not-run"})
    telemetry: dict[str, Any] | None = None
    error: str | None = None  # the error, or the reason it was skipped
    headline: str | None = None  # name of the summary figure this case counts toward

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def error_line(exc: BaseException) -> str:
    """An exception as one line for the run document: its type and the first line of its message."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def new_document(
    *,
    tool: dict[str, Any],
    host: dict[str, Any],
    devices: list[dict[str, Any]],
    config: dict[str, Any],
    started: datetime,
) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "tool": tool,
        "started_utc": started.isoformat(timespec="seconds"),
        "finished_utc": None,
        "status": "running",  # running | completed | interrupted
        "host": host,
        "devices": devices,
        "config": config,
        "probes": {},  # name -> {"status", "seconds", "error"}
        "measurements": [],
        "errors": [],
        "summary": [],
        "notes": [],
    }


def headline_summary(measurements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per headline: the median of the ok measurements tagged with it, and their spread.

    A probe tags the cases that make a headline (e.g. every DRAM-sized copy); taking the median over them
    keeps one noisy size from setting the node's figure.
    """
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for m in measurements:
        if m.get("headline") and m.get("status") == "ok" and m.get("value") is not None:
            groups.setdefault((m["probe"], m["headline"], m["device"]), []).append(m)
    rows = []
    for (probe, name, device), ms in groups.items():
        values = [m["value"] for m in ms]
        cvs = [m["timing"]["stats"]["cv"] for m in ms if m.get("timing")]
        rows.append(
            {
                "probe": probe,
                "name": name,
                "device": device,
                "value": statistics.median(values),
                "unit": ms[0]["unit"],
                "min": min(values),
                "max": max(values),
                "n_cases": len(values),
                "max_cv": max(cvs) if cvs else None,
                "energy": _energy_of(ms),
            }
        )
    return rows


def _energy_of(ms: list[dict[str, Any]]) -> dict[str, Any]:
    """A headline's energy: the median joules per unit of its cases where NVML measured it, else why not."""
    es = [(m.get("telemetry") or {}).get("energy") or {} for m in ms]
    got = [e for e in es if e.get("measured") and isinstance(e.get("joules_per"), (int, float))]
    if got:
        return {
            "joules_per": statistics.median(e["joules_per"] for e in got),
            "per": got[0]["per"],
            "avg_power_w": statistics.median(e["avg_power_w"] for e in got),
            "source": got[0]["source"],
        }
    why = next((e["why"] for e in es if e.get("why")), "no telemetry was recorded with these cases")
    return {"joules_per": None, "why": f"not measured ({why})"}


def default_path(out_dir: str | Path, started: datetime, host: str, device: str, tag: str = "") -> Path:
    """results/<UTC time>_<host>_<device>[_<tag>].json with filesystem-safe names."""

    def safe(s: str) -> str:
        return re.sub(r"[^A-Za-z0-9.-]+", "-", s).strip("-") or "unknown"

    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    return Path(out_dir) / f"{stamp}_{safe(host)}_{safe(device)}{'_' + safe(tag) if tag else ''}.json"


def create_exclusive(
    out_dir: str | Path, started: datetime, host: str, device: str, doc: dict[str, Any] | None = None
) -> Path:
    """A new run document that no other run can have, published whole: `doc` is written to a temporary file,
    then linked under its name with os.link, which is atomic and fails if the name exists. Runs started in
    the same second into one folder, even from several hosts sharing it, each get their own file (named with
    this process's PID; a clash adds a counter), and a reader polling the folder (a dashboard, `analysis
    fleet`, a Prometheus exporter) never sees it empty or half-written. Where the filesystem has no hard
    links, the name is taken with O_EXCL and the document written over it at once."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = _write_temp(doc if doc is not None else {}, out)
    try:
        for n in range(1000):
            tag = f"{os.getpid()}" + (f"-{n}" if n else "")
            path = default_path(out_dir, started, host, device, tag)
            try:
                os.link(tmp, path)
            except FileExistsError:
                continue
            except OSError:  # no hard links here (some network or FUSE filesystems)
                try:
                    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
                except FileExistsError:
                    continue
                os.replace(tmp, path)
            return path
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    raise FileExistsError(f"{out_dir}: no free run-document name for {started.isoformat()}")


def file_mode() -> int:
    """The mode a new file gets here (0o666 less the umask), for files made by mkstemp (always 0o600)."""
    mask = None
    try:
        with open("/proc/self/status") as fh:  # Linux: read without changing it (os.umask is not atomic)
            mask = next((int(line.split()[1], 8) for line in fh if line.startswith("Umask:")), None)
    except OSError:
        pass
    if mask is None:
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


def measurement_text(m: dict[str, Any]) -> str:
    """One measurement as it stands in a written document: writers that save after every case serialize each
    measurement once and hand the texts to `write_atomic`."""
    return json.dumps(_finite(m), indent=1, default=_json_default, allow_nan=False)


def write_atomic(
    doc: dict[str, Any], path: str | Path, texts: list[str] | None = None, durable: bool = True
) -> Path:
    """Write JSON so that readers see the old file or the new one, never half of one (mode per the umask).

    `texts`: the document's measurements already serialized (`measurement_text`, in order), written in place
    of doc["measurements"]. `durable=False` skips the fsync: the file still survives the process being
    killed (the page cache is the kernel's), not a power cut; the runner syncs at every probe's end."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.replace(_write_temp(doc, path.parent, texts, durable, path.name), path)
    return path


def _write_temp(
    doc: dict[str, Any], folder: Path, texts: list[str] | None = None, durable: bool = True, name: str = "run"
) -> str:
    """The document in a new hidden temporary file of `folder` (mode per the umask); its path."""
    if texts is None:
        text = json.dumps(_finite(doc), indent=1, default=_json_default, allow_nan=False)
    else:
        head = {k: v for k, v in doc.items() if k != "measurements"}
        text = json.dumps(_finite(head), indent=1, default=_json_default, allow_nan=False)
        text = text[: text.rindex("}")].rstrip() + ',\n "measurements": [\n' + ",\n".join(texts) + "\n ]\n}"
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "w") as fh:
            fh.write(text + "\n")
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return tmp


def _finite(o: Any) -> Any:
    """JSON has no NaN or infinity: store them as null rather than write a file other tools refuse."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def _json_default(o: Any) -> Any:
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if isinstance(o, (set, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    return str(o)


SCHEMA_FILE = Path(__file__).parent / "data" / "run.schema.json"


@functools.lru_cache(maxsize=1)
def json_schema() -> dict[str, Any]:
    """The JSON Schema of gpuprobe.run/1 (analysis/data/run.schema.json, shipped with the package)."""
    return json.loads(SCHEMA_FILE.read_text())


def validate(doc: Any, name: str = "run document") -> dict[str, Any]:
    """Check a parsed run document against the JSON Schema; raise RunDocumentError naming the first problem
    (where in the document, and what is wrong), so every reader can trust what it indexes."""
    import jsonschema

    if not isinstance(doc, dict):
        raise RunDocumentError(
            f"{name}: not a gpuprobe run document (top level is {type(doc).__name__}, not an object)"
        )
    schema = doc.get("schema")
    if not isinstance(schema, str) or not schema.startswith(SCHEMA_FAMILY):
        raise RunDocumentError(f"{name}: not a gpuprobe run document (no '{SCHEMA_FAMILY}*' schema key)")
    if schema != SCHEMA:
        raise RunDocumentError(
            f"{name}: schema {schema!r} is not supported by this version (reads {SCHEMA!r})"
        )
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(json_schema()).iter_errors(doc))
    if error is not None:
        where = error.json_path.removeprefix("$").removeprefix(".") or "top level"
        raise RunDocumentError(f"{name}: {where}: {error.message}")
    return doc


def load(path: str | Path) -> dict[str, Any]:
    """Read and validate a run document."""
    p = Path(path)
    try:
        text = read_text(p, "run document")
    except BadInput as exc:
        raise RunDocumentError(str(exc)) from None
    constants: list[str] = []  # NaN / Infinity: not JSON numbers, and never written by gpuprobe (null)
    try:
        doc = json.loads(text, parse_constant=lambda name: constants.append(name))
    except json.JSONDecodeError as exc:
        raise RunDocumentError(
            f"{p}: not valid JSON (truncated or corrupt?): {exc.msg} at line {exc.lineno}"
        ) from None
    if constants:
        raise RunDocumentError(f"{p}: {constants[0]} is not a JSON number (gpuprobe writes null)")
    return validate(doc, str(p))
