"""Hardening against hostile clients and a hostile service user (issue 8,
"Security" items 1, 5, 7, 8, 9): log flooding, root's chown at start,
terminal escapes in `hikyaku queue`, the spool's free-space guard, the
Received header's HELO name, the directories' modes, the allocation rule.
"""
import os
import re

from conftest import REPO


def test_source_has_no_raw_allocation():
    """STYLE.md: allocation wrappers abort on out-of-memory; callers never
    check for NULL. Only src/lib/alloc.c may call the libc allocators."""
    raw = re.compile(r"(?<![\w.>])(malloc|calloc|realloc|reallocarray|strdup|strndup)\s*\(")
    found = []
    for root, _, files in os.walk(os.path.join(REPO, "src")):
        for name in files:
            path = os.path.join(root, name)
            if not name.endswith(".c") or path.endswith(os.path.join("lib", "alloc.c")):
                continue
            with open(path, encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    code = line.split("//")[0]
                    if raw.search(code) and not code.lstrip().startswith(("*", "/*")):
                        found.append(f"{os.path.relpath(path, REPO)}:{n}: {line.strip()}")
    assert not found, "raw allocation calls:\n" + "\n".join(found)
