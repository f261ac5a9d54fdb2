"""The embedded front-end files (src/obs/web.c, issue 13) on the http
listener: types, strong ETags and 304s, HEAD, the security fields (strict
CSP without inline script, nosniff, no framing), the methods allowed, and
that "/" is the sandbox UI's only on a sandbox listener."""
import http.client
import socket
import time

from conftest import free_port


def start(hikyaku):
    port = free_port()
    hk = hikyaku(http={"listen": f"127.0.0.1:{port}"})
    hk.http_port = port
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    return hk


def get(hk, path, method="GET", headers=None, conn=None):
    c = conn or http.client.HTTPConnection("127.0.0.1", hk.http_port, timeout=15)
    c.request(method, path, headers=headers or {})
    r = c.getresponse()
    body = r.read()
    if conn is None:
        c.close()
    return r, body


def test_assets_fields_etag_head(hikyaku):
    hk = start(hikyaku)
    r, js = get(hk, "/assets/app.js")
    assert r.status == 200
    assert r.getheader("Content-Type") == "text/javascript; charset=utf-8"
    assert int(r.getheader("Content-Length")) == len(js) > 0
    assert r.getheader("X-Content-Type-Options") == "nosniff"
    assert r.getheader("X-Frame-Options") == "DENY"
    assert r.getheader("Cache-Control") == "no-cache"
    csp = r.getheader("Content-Security-Policy")
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "frame-src 'self'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    tag = r.getheader("ETag")
    assert tag.startswith('"') and tag.endswith('"') and len(tag) == 34
    # the file served is the file in the repository
    import os
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, "web", "sandbox", "assets", "app.js"), "rb") as f:
        assert f.read() == js

    r, css = get(hk, "/assets/app.css")
    assert r.status == 200 and r.getheader("Content-Type") == "text/css; charset=utf-8"
    assert r.getheader("ETag") != tag

    # revalidation on one keep-alive connection: 304 without a body, then
    # the next request on the same connection is still answered
    c = http.client.HTTPConnection("127.0.0.1", hk.http_port, timeout=15)
    r, body = get(hk, "/assets/app.js", headers={"If-None-Match": tag}, conn=c)
    assert r.status == 304 and body == b"" and r.getheader("ETag") == tag
    r, body = get(hk, "/assets/app.js", headers={"If-None-Match": f'"x", W/{tag}'}, conn=c)
    assert r.status == 304
    r, body = get(hk, "/assets/app.js", headers={"If-None-Match": '"other"'}, conn=c)
    assert r.status == 200 and body == js
    r, body = get(hk, "/assets/app.js", method="HEAD", conn=c)
    assert r.status == 200 and body == b"" and int(r.getheader("Content-Length")) == len(js)
    r, body = get(hk, "/assets/app.css", conn=c)
    assert r.status == 200 and body == css
    c.close()


def test_methods_and_misses(hikyaku):
    hk = start(hikyaku)
    r, _ = get(hk, "/assets/app.js", method="POST")
    assert r.status == 405 and r.getheader("Allow") == "GET, HEAD"
    r, _ = get(hk, "/assets/nope.js")
    assert r.status == 404
    r, _ = get(hk, "/assets/../index.html")
    assert r.status in (400, 404)
    r, _ = get(hk, "/assets/%2e%2e/index.html")
    assert r.status == 404
    # not a sandbox listener: "/" is not the sandbox UI
    r, body = get(hk, "/")
    assert r.status == 404 and b"<html" not in body
    r, _ = get(hk, "/dashboard")
    assert r.status == 301 and r.getheader("Location") == "/dashboard/"
    # the other paths are still theirs
    r, _ = get(hk, "/metrics")
    assert r.status == 200


def test_ui_sources_never_parse_html():
    """The UI's own sources, as served: no API that parses a string as HTML
    or code (message data must only ever reach textContent), and no inline
    script, style or handler in the HTML (the CSP would block them, and a
    page that needs them would tempt loosening it)."""
    import os
    import re
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))), "web", "sandbox")
    js = open(os.path.join(root, "assets", "app.js"), encoding="utf-8").read()
    code = "\n".join(ln for ln in js.splitlines() if not ln.lstrip().startswith("//"))
    for bad in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                "new Function", "setTimeout(\"", "setAttribute(\"on"):
        assert bad not in code, bad
    html = open(os.path.join(root, "index.html"), encoding="utf-8").read()
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "inline script"
    assert not re.search(r"\sstyle=|<style", html), "inline style"
    assert not re.search(r"\son[a-z]+\s*=", html), "inline handler"
