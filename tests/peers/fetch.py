"""Fetch the peers' sources into build/peers/ (cached): `python -m tests.peers.fetch`.

Python's sysv_ipc comes from PyPI as its sdist (it ships tests/) and is built into the venv;
IPC::Shareable's source comes from Debian bookworm through a private deb-src list: the host's
apt configuration is never changed (only the lists and cache under build/peers/apt are written).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
BUILD = ROOT / "build" / "peers"
SYSV_IPC = "sysv_ipc==1.2.0"
PERL_SOURCE = "libipc-shareable-perl"
SOURCES = (Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*")))


def debian_mirror(sources: tuple[Path, ...] = SOURCES) -> str:
    """The configured Debian mirror (deb.debian.org unless sources.list* names another)."""
    for path in sources:
        if not path.is_file() or not path.name.endswith((".list", ".sources")):
            continue
        text = path.read_text(errors="replace")
        for match in re.finditer(r"(?:URIs:|^deb)\s+(?:\[[^]]*\]\s+)?(\S+)", text, re.M):
            uri = match.group(1).rstrip("/")
            if uri.endswith("/debian") and "security" not in uri:
                return uri
    return "http://deb.debian.org/debian"


def _untar(archive: Path, into: Path) -> Path:
    """Unpack ARCHIVE (one top directory) into INTO; return that directory."""
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        top = names[0].split("/")[0]
        if any(n.split("/")[0] != top or ".." in n.split("/") for n in names):
            raise RuntimeError(f"{archive}: members outside {top}/")
        if not (into / top).is_dir():
            tar.extractall(into)  # Python 3.11.2 has no filter=; checked above
    return into / top


def sysv_ipc_suite() -> Path:
    """sysv_ipc's unpacked sdist, its module built into this interpreter's venv."""
    dl = BUILD / "pypi"
    dl.mkdir(parents=True, exist_ok=True)
    sdists = sorted(dl.glob("sysv_ipc-*.tar.gz"))
    if not sdists:
        pip = [sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:"]
        subprocess.run([*pip, "--no-deps", SYSV_IPC, "-d", str(dl)], check=True)
        sdists = sorted(dl.glob("sysv_ipc-*.tar.gz"))
    probe = [sys.executable, "-c", "import sysv_ipc; print(sysv_ipc.VERSION)"]
    have = subprocess.run(probe, capture_output=True, text=True, check=False).stdout.strip()
    if have != SYSV_IPC.split("==")[1]:
        install = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", str(sdists[0])]
        subprocess.run(install, check=True)
    return _untar(sdists[0], BUILD)


def _apt(*args: str) -> None:
    apt = BUILD / "apt"
    options = [
        f"-o=Dir::Etc::SourceList={apt / 'src.list'}",
        "-o=Dir::Etc::SourceParts=/dev/null",
        "-o=APT::Sandbox::User=root",  # build/ is root's; _apt could not write there
        f"-o=Dir::State::Lists={apt / 'lists'}",
        f"-o=Dir::Cache={apt / 'cache'}",
        "-qq",
    ]
    subprocess.run(["apt-get", *options, *args], check=True, cwd=apt / "src")


def shareable_suite() -> Path:
    """IPC::Shareable's unpacked Debian source (upstream tree with its t/)."""
    apt = BUILD / "apt"
    for sub in ("lists/partial", "cache/archives/partial", "src"):
        (apt / sub).mkdir(parents=True, exist_ok=True)
    origs = sorted((apt / "src").glob(f"{PERL_SOURCE}_*.orig.tar.*"))
    if not origs:
        keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
        line = f"deb-src [signed-by={keyring}] {debian_mirror()} bookworm main\n"
        (apt / "src.list").write_text(line)
        _apt("update")
        _apt("source", "--download-only", PERL_SOURCE)
        origs = sorted((apt / "src").glob(f"{PERL_SOURCE}_*.orig.tar.*"))
    return _untar(origs[0], BUILD)


def main() -> None:
    print(sysv_ipc_suite())
    print(shareable_suite())


if __name__ == "__main__":
    main()
