"""The crates the wa binaries link, from `cargo metadata` (shared by
gen-copyright and gen-cargo-crates).

Cargo.lock pins every crate; `cargo metadata --locked --offline` then tells
each crate's license and authors without the network once the crates have
been fetched (a build, `cargo fetch` or `cargo vendor` does that).
"""

import json
import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]
BINARIES = ("wa-chat", "wa-store", "wa-media", "wa-register", "wactl")
# The platforms packages are built for: the union of what they link.
PLATFORMS = ("x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu")


def metadata(platform=None):
    cmd = ["cargo", "metadata", "--format-version", "1", "--locked", "--offline"]
    if platform:
        cmd += ["--filter-platform", platform]
    return json.loads(subprocess.check_output(cmd, cwd=ROOT))


def linked_crates():
    """Registry crates linked into the binaries on PLATFORMS: normal
    dependencies only (build scripts and proc macros run at build time and
    are not in the binary), sorted by name and version."""
    linked = {}
    for platform in PLATFORMS:
        meta = metadata(platform)
        packages = {p["id"]: p for p in meta["packages"]}
        nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
        todo = [p["id"] for p in meta["packages"] if p["name"] in BINARIES]
        seen = set()
        while todo:
            pid = todo.pop()
            if pid in seen:
                continue
            seen.add(pid)
            for dep in nodes[pid]["deps"]:
                if not any(k["kind"] is None for k in dep["dep_kinds"]):
                    continue
                target = packages[dep["pkg"]]
                if all("proc-macro" in t["kind"] for t in target["targets"]):
                    continue
                todo.append(dep["pkg"])
        for pid in seen:
            p = packages[pid]
            if p["source"] and p["source"].startswith("registry+"):
                linked[(p["name"], p["version"])] = p
    return [linked[k] for k in sorted(linked)]
