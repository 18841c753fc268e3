"""Prints the shared libraries (resolved paths) that the given ELF files load, except glibc's own:
the machine that runs them keeps its glibc, which is newer than Debian 12's and compatible."""
import re
import subprocess
import sys

GLIBC = {
    "libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1",
    "ld-linux-x86-64.so.2", "libresolv.so.2", "libutil.so.1", "libanl.so.1",
    "libnsl.so.1", "libcrypt.so.1",
}

libs = {}
for path in sys.argv[1:]:
    out = subprocess.run(["ldd", path], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        m = re.match(r"\s*(\S+) => (/\S+)", line)
        if m and m.group(1) not in GLIBC:
            libs[m.group(1)] = m.group(2)
for name in sorted(libs):
    print(libs[name])
