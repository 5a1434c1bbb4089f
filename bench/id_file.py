"""Reading a remediation request's file of record ids (app/remediation/id_file.py, as the upload
route calls it): time and memory of files of 10,000 to 1,000,000 ids, one per line and as CSV,
and of a 1,000,000-id file refused for an id repeated on its last line. Each file is read in a
fresh process from disk (the route reads the spooled upload the same way); the table gives the
process's resident set once its modules are loaded and its peak over the read. Prints a table
and writes bench/results/id_file.json.

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD .venv/bin/python bench/id_file.py
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MiB = 2**20

_SCRIPT = """
import json, sys, time
from pathlib import Path
from app.remediation import id_file
from app.errors import ProblemError


def status(field):
    lines = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in lines if line.startswith(field + ":")) * 1024


resident = status("VmRSS")
started = time.monotonic()
with open(sys.argv[1], "rb") as source:
    try:
        found = id_file.read(source, max_bytes=1 << 30, max_ids=2_000_000)
        outcome = {"ids": int(len(found.ids)), "format": found.format}
    except ProblemError as exc:
        outcome = {"status": exc.status, "detail": exc.detail}
print(json.dumps({"seconds": time.monotonic() - started, "resident": resident, "peak": status("VmHWM"), **outcome}))
"""


def write(path: Path, count: int, fmt: str, repeat_last: bool = False) -> None:
    # Ids spread over a large range, in no order, as an export would list them.
    ids = [(i * 7_919) % 9_999_991 for i in range(count)]
    if repeat_last:
        ids[-1] = ids[0]
    with path.open("w") as out:
        if fmt == "csv":
            out.write("record_id,origin\n")
            out.writelines(f"{i},vendor-c\n" for i in ids)
        else:
            out.writelines(f"{i}\n" for i in ids)


def main() -> None:
    cases = [(count, fmt, False) for count in (10_000, 100_000, 1_000_000) for fmt in ("lines", "csv")]
    cases.append((1_000_000, "lines", True))
    rows = []
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory() as folder:
        for count, fmt, repeat_last in cases:
            path = Path(folder) / f"ids-{count}.{fmt}"
            write(path, count, fmt, repeat_last)
            done = subprocess.run([sys.executable, "-c", _SCRIPT, str(path)], env=env, capture_output=True, text=True,
                                  check=True)
            found = json.loads(done.stdout)
            rows.append({"ids": count, "format": fmt, "repeated_last": repeat_last, "file_bytes": path.stat().st_size,
                         "seconds": round(found["seconds"], 3), "resident_mib": round(found["resident"] / MiB, 1),
                         "peak_mib": round(found["peak"] / MiB, 1),
                         "outcome": found.get("status", 201), "growth_mib": round((found["peak"] - found["resident"]) / MiB, 1)})
    print(f"{'ids':>9} {'format':>6} {'file MiB':>8} {'outcome':>7} {'seconds':>7} {'RSS MiB':>7} {'peak MiB':>8} {'growth':>6}")
    for row in rows:
        label = f"{row['format']}{' (repeat)' if row['repeated_last'] else ''}"
        print(f"{row['ids']:>9} {label:>6} {row['file_bytes'] / MiB:>8.1f} {row['outcome']:>7} {row['seconds']:>7.2f} "
              f"{row['resident_mib']:>7.1f} {row['peak_mib']:>8.1f} {row['growth_mib']:>6.1f}")
    out = ROOT / "bench" / "results" / "id_file.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "python": platform.python_version(),
                               "rows": rows}, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
