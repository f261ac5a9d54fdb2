"""The sandbox web UI (web/sandbox/, issue 13) in a real browser: Debian's
chromium, headless, driven by chromium-driver through python3-selenium,
started here. hikyaku runs with a sandbox SMTP listener (AUTH any: each
login is an inbox) and the http listener that serves the UI and the
Mailpit-compatible API; released mail goes to a local aiosmtpd sink.

Scenarios: mail sent over SMTP appears without a reload (SSE); a message is
opened, its views switched, an attachment downloaded and compared; a
hostile message (<script>, on*= handlers, javascript: links) runs nothing —
every script in it would call a canary HTTP listener of the test, and no
call arrives; remote images load only after the button; search; release to
the sink; delete; two inboxes do not see each other's mail. The page's own
console must stay free of errors from app.js."""
import base64
import hashlib
import http.client
import http.server
import json
import os
import re
import shutil
import smtplib
import socket
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import free_port, hikyaku_bin
from mta_helpers import ScriptedMTA

selenium = pytest.importorskip("selenium")
from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import (NoSuchElementException,  # noqa: E402
                                        StaleElementReferenceException, TimeoutException)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

pytestmark = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
    reason="chromium and chromium-driver are not installed (scripts/install-deps.sh --test)")


# --- the canary: every hostile script would call it -----------------------

class Canary:
    """An HTTP listener on loopback that records every request path."""

    def __init__(self):
        self.hits = []
        self.lock = threading.Lock()
        canary = self

        self.pages = {}  # path -> HTML this listener serves (another origin)

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                page = canary.pages.get(self.path)
                if page is not None:
                    body = page.encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                with canary.lock:
                    canary.hits.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "image/gif")
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_GET

            def log_message(self, *a):
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.srv.server_address[1]
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()

    def paths(self):
        with self.lock:
            return list(self.hits)

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


# --- hikyaku with a sandbox listener ----------------------------------------

class Sandbox:
    def __init__(self, hk, http_port, sbx_dir):
        self.hk = hk
        self.http_port = http_port
        self.dir = sbx_dir
        self.url = f"http://127.0.0.1:{http_port}/"

    def send(self, msg, sender="app@example.net", rcpts=("someone@example.com",), login=None):
        with smtplib.SMTP("127.0.0.1", self.hk.port, timeout=15) as s:
            s.ehlo("ci.example")
            if login is not None:
                s.login(login, "any-password")
            s.sendmail(sender, list(rcpts), msg)

    def send_many(self, msgs):
        with smtplib.SMTP("127.0.0.1", self.hk.port, timeout=30) as s:
            for m in msgs:
                s.sendmail("bulk@example.net", ["user@example.com"], m)

    def token(self, inbox):
        """The inbox's API token, as `hikyaku sandbox inboxes` prints it."""
        out = subprocess.run([hikyaku_bin(), "sandbox", "inboxes", "-c", self.hk.config],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        for line in out.stdout.splitlines():
            f = line.split()
            if f and f[0] == inbox:
                # "<inbox>.<64 hex>" (or the bare hex part)
                tok = [x for x in f[1:] if re.fullmatch(r"(?:\S+\.)?[0-9a-f]{64}", x)]
                assert tok, line
                return tok[0]
        raise AssertionError(f"no inbox {inbox} in:\n{out.stdout}")


@pytest.fixture
def sandbox(hikyaku):
    sink = ScriptedMTA().start()
    http_port = free_port()
    tmp = tempfile.mkdtemp(prefix="hk-sbxui-")
    os.chmod(tmp, 0o755)
    sbx_dir = os.path.join(tmp, "sandbox")
    # The whole server is a sandbox (sandbox.auth any takes every login
    # only then); no STARTTLS: AUTH in clear, which is allowed on loopback.
    hk = hikyaku(listener={"sandbox": True, "tls": "none", "plaintext_auth": True},
                 sandbox={"enabled": True, "dir": sbx_dir, "auth": "any",
                          "anonymous_inbox": "default"},
                 http={"listen": f"127.0.0.1:{http_port}"},
                 relay={"trusted_networks": ["127.0.0.0/8"]},
                 routes=[{"domain": "sink.test", "transport": "relay",
                          "address": f"127.0.0.1:{sink.port}"}])
    deadline = time.time() + 15
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", http_port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    sb = Sandbox(hk, http_port, sbx_dir)
    sb.sink = sink
    yield sb
    sink.stop()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def canary():
    c = Canary()
    yield c
    c.stop()


@pytest.fixture
def browser():
    dl = tempfile.mkdtemp(prefix="hk-sbxui-dl-")
    o = webdriver.ChromeOptions()
    o.binary_location = CHROMIUM
    for a in ("--headless=new", "--disable-gpu", "--disable-dev-shm-usage",
              "--no-first-run", "--disable-extensions", "--window-size=1400,1000",
              "--disable-background-networking", "--proxy-server=direct://",
              "--proxy-bypass-list=*"):
        o.add_argument(a)
    if os.geteuid() == 0:
        o.add_argument("--no-sandbox")  # chromium's own sandbox refuses root
    o.add_experimental_option("prefs", {
        "download.default_directory": dl,
        "download.prompt_for_download": False,
        "safebrowsing.enabled": False,
    })
    o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=o)
    d.set_page_load_timeout(30)
    d.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": dl})
    d.download_dir = dl
    yield d
    try:
        errors = [e for e in d.get_log("browser")
                  if e.get("level") == "SEVERE" and "/assets/app.js" in e.get("message", "")]
    finally:
        d.quit()
        shutil.rmtree(dl, ignore_errors=True)
    assert not errors, errors


# --- helpers ---------------------------------------------------------------

def wait(d, cond, timeout=15, what="condition"):
    try:
        # the list is redrawn on every event: an element may go stale
        # between finding and reading it; the next poll looks again
        return WebDriverWait(d, timeout, poll_frequency=0.1,
                             ignored_exceptions=(StaleElementReferenceException,
                                                 NoSuchElementException)).until(lambda _: cond())
    except TimeoutException:
        try:
            d.switch_to.default_content()
            st = d.find_element(By.ID, "status").text
        except Exception as e:  # the page itself is gone
            st = f"(no status: {e.__class__.__name__})"
        raise AssertionError(f"timed out waiting for {what}; status: {st!r}")


def subjects(d):
    # read in one go: the list may be redrawn between two WebDriver calls
    return d.execute_script(
        "return Array.from(document.querySelectorAll('#list .item .subject'), e => e.textContent)")


def open_ui(d, sb, token=None):
    d.get(sb.url)
    assert d.title == "hikyaku sandbox"
    if token is not None:
        f = d.find_element(By.ID, "token")
        f.clear()
        f.send_keys(token)
        d.find_element(By.CSS_SELECTOR, "#token-form button").click()
    wait(d, lambda: d.find_element(By.ID, "live").text == "live", what="the event stream")


def click_item(d, subject):
    def try_click():
        for e in d.find_elements(By.CSS_SELECTOR, "#list .item"):
            if e.find_element(By.CSS_SELECTOR, ".subject").text == subject:
                e.click()
                return True
        return False
    wait(d, try_click, what=f"{subject!r} in the list to click")
    wait(d, lambda: d.find_element(By.ID, "m-subject").text == subject,
         what=f"message {subject!r} open")


def tab(d, name):
    d.find_element(By.CSS_SELECTOR, f".tabs [data-tab='{name}']").click()
    return d.find_element(By.ID, f"tab-{name}")


ATTACHMENT = b"id,amount\r\n1,42\r\n2,\xe2\x82\xac7\r\n" * 20


def multipart(subject, attach=True, html=None, text="Plain body of the message.",
              frm="App <app@example.net>", to="User <user@example.com>"):
    b = "=_b_" + hashlib.sha1(subject.encode()).hexdigest()[:12]
    parts = [f"--{b}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n"]
    if html is not None:
        parts.append(f"--{b}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n")
    if attach:
        enc = base64.encodebytes(ATTACHMENT).decode().replace("\n", "\r\n")
        parts.append(f"--{b}\r\nContent-Type: text/csv; name=\"report.csv\"\r\n"
                     f"Content-Disposition: attachment; filename=\"report.csv\"\r\n"
                     f"Content-Transfer-Encoding: base64\r\n\r\n{enc}")
    kind = "mixed" if attach else "alternative"
    return (f"From: {frm}\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Date: Fri, 04 Dec 2026 08:00:00 +0000\r\nMessage-ID: <{b}@example.net>\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: multipart/{kind}; boundary=\"{b}\"\r\n\r\n"
            + "".join(parts) + f"--{b}--\r\n").encode()


# --- the scenarios -----------------------------------------------------------

def test_live_open_views_download(sandbox, browser):
    d = browser
    open_ui(d, sandbox)
    assert subjects(d) == []
    html = ('<p id="hello">Hello <b>HTML</b> part</p>'
            '<a href="https://good.example/path">https://good.example/path</a> '
            '<a href="https://evil.example/login">https://bank.example/login</a>')
    sandbox.send(multipart("Quarterly report", html=html))
    # no reload: the event stream brings it
    wait(d, lambda: subjects(d) == ["Quarterly report"], what="the message in the list")
    item = d.find_element(By.CSS_SELECTOR, "#list .item")
    assert "unread" in item.get_attribute("class")
    assert "App <app@example.net>" in item.text
    click_item(d, "Quarterly report")
    assert d.find_element(By.ID, "m-from").text == "App <app@example.net>"
    assert d.find_element(By.ID, "m-to").text == "User <user@example.com>"
    # opening marks it read (the list follows)
    wait(d, lambda: "unread" not in d.find_element(By.CSS_SELECTOR, "#list .item")
         .get_attribute("class"), what="the read mark")

    # HTML: a sandboxed frame without scripts, from /view/ID.html
    t = tab(d, "html")
    fr = t.find_element(By.CSS_SELECTOR, "iframe")
    sbx = fr.get_attribute("sandbox")
    assert sbx is not None and "allow-scripts" not in sbx and "allow-same-origin" not in sbx
    assert "/view/" in fr.get_attribute("src")
    d.switch_to.frame(fr)
    wait(d, lambda: "Hello HTML part" in d.find_element(By.TAG_NAME, "body").text,
         what="the HTML part in the frame")
    d.switch_to.default_content()

    t = tab(d, "text")
    assert "Plain body of the message." in t.text
    t = tab(d, "headers")
    wait(d, lambda: "Quarterly report" in t.text and "message-id" in t.text.lower(), what="headers")
    t = tab(d, "raw")
    wait(d, lambda: "Subject: Quarterly report" in t.text, what="raw source")
    assert "Content-Transfer-Encoding: base64" in t.text
    t = tab(d, "checks")
    wait(d, lambda: "SPF" in t.text and "DMARC" in t.text and "evil.example" in t.text,
         what="checks")
    bad = [r.text for r in t.find_elements(By.CSS_SELECTOR, "#links tr.malformed")]
    assert any("evil.example" in r for r in bad), bad
    assert not any("good.example" in r for r in bad), bad

    # MIME parts: download the attachment and compare it
    t = tab(d, "parts")
    wait(d, lambda: "report.csv" in t.text, what="the attachment row")
    assert "text/csv" in t.text
    t.find_element(By.CSS_SELECTOR, "a.download").click()
    path = os.path.join(d.download_dir, "report.csv")
    wait(d, lambda: os.path.exists(path) and open(path, "rb").read() == ATTACHMENT,
         what="the downloaded attachment")


def test_hostile_message_runs_nothing(sandbox, browser, canary):
    d = browser
    c = f"http://127.0.0.1:{canary.port}"
    hostile = (
        f"<script>fetch('{c}/script');document.title='pwned';"
        f"try{{parent.document.title='pwned'}}catch(e){{}}</script>"
        f"<p id=hostile>Hostile body</p>"
        f"<img src=\"data:image/png;base64,AAAA\" onerror=\"fetch('{c}/onerror')\">"
        f"<img id=remote src=\"{c}/remote-image.gif\">"
        f"<svg onload=\"fetch('{c}/svg')\"></svg>"
        f"<body onload=\"fetch('{c}/bodyload')\">"
        f"<a id=jslink href=\"javascript:fetch('{c}/jslink')\">click me</a>"
        f"<form action=\"{c}/form\" method=post><button id=sub>go</button></form>"
        f"<iframe src=\"javascript:fetch('{c}/jsframe')\"></iframe>"
        f"<meta http-equiv=refresh content=\"0;url={c}/refresh\">"
    )
    subject = f"<img src=x onerror=fetch('{c}/subject')>"
    sandbox.send(multipart(subject, attach=False, html=hostile,
                           frm=f"\"<script>fetch('{c}/from')</script>\" <evil@example.net>"))
    open_ui(d, sandbox)
    wait(d, lambda: subjects(d) == [subject], what="the hostile message, as text")
    click_item(d, subject)
    assert d.find_element(By.ID, "m-subject").text == subject  # shown, not parsed
    assert "<script>" in d.find_element(By.ID, "m-from").text
    fr = tab(d, "html").find_element(By.CSS_SELECTOR, "iframe")
    d.switch_to.frame(fr)
    wait(d, lambda: "Hostile body" in d.find_element(By.TAG_NAME, "body").text,
         what="the hostile HTML rendered")
    for ident in ("jslink", "sub"):
        try:
            d.find_element(By.ID, ident).click()
        except Exception:
            pass  # a click that cannot happen is fine too
        d.switch_to.default_content()
        d.switch_to.frame(d.find_element(By.CSS_SELECTOR, "#frame-box iframe"))
    d.switch_to.default_content()
    time.sleep(2)  # room for anything asynchronous to fire
    assert d.title == "hikyaku sandbox"
    scripted = [p for p in canary.paths() if not p.startswith("/remote-image")]
    assert scripted == [], f"hostile content reached the canary: {scripted}"
    # remote images: blocked until asked for, then loaded (not a script)
    assert "/remote-image.gif" not in canary.paths()
    d.find_element(By.ID, "btn-remote").click()
    wait(d, lambda: "/remote-image.gif" in canary.paths(), what="the remote image on request")
    time.sleep(1)
    scripted = [p for p in canary.paths() if not p.startswith("/remote-image")]
    assert scripted == [], f"hostile content reached the canary: {scripted}"


def test_search_release_delete(sandbox, browser):
    d = browser
    sandbox.send(multipart("alpha invoice", attach=False, text="the word zebra",
                           frm="Billing <billing@shop.example>"), sender="billing@shop.example")
    sandbox.send(multipart("beta newsletter", attach=False, text="nothing here",
                           frm="News <news@letters.example>"), sender="news@letters.example")
    open_ui(d, sandbox)
    wait(d, lambda: sorted(subjects(d)) == ["alpha invoice", "beta newsletter"],
         what="both messages")
    box = d.find_element(By.ID, "search")

    def search(q):
        box.clear()
        box.send_keys(q)
        d.find_element(By.CSS_SELECTOR, "#search-form button[type=submit]").click()

    search("subject:beta")
    wait(d, lambda: subjects(d) == ["beta newsletter"], what="subject search")
    search("zebra")
    wait(d, lambda: subjects(d) == ["alpha invoice"], what="text search")
    search("from:news@letters.example")
    wait(d, lambda: subjects(d) == ["beta newsletter"], what="from search")
    d.find_element(By.ID, "search-clear").click()
    wait(d, lambda: len(subjects(d)) == 2, what="the whole list again")

    # release to a typed address: the sink gets it
    click_item(d, "alpha invoice")
    d.find_element(By.ID, "btn-release").click()
    to = d.find_element(By.ID, "release-to")
    assert "user@example.com" in to.get_attribute("value")  # its recipients, prefilled
    to.clear()
    to.send_keys("qa@sink.test")
    d.find_element(By.CSS_SELECTOR, "#release-form button[type=submit]").click()
    wait(d, lambda: "Released" in d.find_element(By.ID, "status").text, what="release")
    tx = sandbox.sink.wait_messages(1, timeout=30)[0]
    assert tx.rcpts == ["qa@sink.test"]
    assert b"Subject: alpha invoice" in tx.data

    # delete: gone from the list and from the API
    d.find_element(By.ID, "btn-delete").click()
    wait(d, lambda: subjects(d) == ["beta newsletter"], what="the list without it")
    assert not d.find_element(By.ID, "view").is_displayed()
    # mark unread comes back as an unread mark
    click_item(d, "beta newsletter")
    wait(d, lambda: "unread" not in d.find_element(By.CSS_SELECTOR, "#list .item")
         .get_attribute("class"), what="read")
    d.find_element(By.ID, "btn-unread").click()
    wait(d, lambda: "unread" in d.find_element(By.CSS_SELECTOR, "#list .item")
         .get_attribute("class"), what="unread again")
    d.refresh()
    wait(d, lambda: subjects(d) == ["beta newsletter"], what="the list after a reload")


def test_two_inboxes_isolated(sandbox, browser):
    d = browser
    sandbox.send(multipart("for alice only", html="<p>Alice's HTML</p>"), login="alice")
    sandbox.send(multipart("for bob only", attach=False), login="bob")
    sandbox.send(multipart("anonymous mail", attach=False))
    ta, tb = sandbox.token("alice"), sandbox.token("bob")
    assert ta != tb
    open_ui(d, sandbox, token=ta)
    wait(d, lambda: subjects(d) == ["for alice only"], what="alice's inbox")
    click_item(d, "for alice only")
    # with a token the frame and the downloads authenticate too
    fr = tab(d, "html").find_element(By.CSS_SELECTOR, "iframe")
    assert "allow-scripts" not in fr.get_attribute("sandbox")
    d.switch_to.frame(fr)
    wait(d, lambda: "Alice's HTML" in d.find_element(By.TAG_NAME, "body").text,
         what="alice's HTML part")
    d.switch_to.default_content()
    tab(d, "parts").find_element(By.CSS_SELECTOR, "a.download").click()
    path = os.path.join(d.download_dir, "report.csv")
    wait(d, lambda: os.path.exists(path) and open(path, "rb").read() == ATTACHMENT,
         what="the attachment downloaded with the token")
    # the token is kept for the tab's session (sessionStorage)
    d.get(sandbox.url)
    assert d.find_element(By.ID, "token").get_attribute("value") == ta
    wait(d, lambda: subjects(d) == ["for alice only"], what="alice's inbox after a reload")
    open_ui(d, sandbox, token=tb)
    wait(d, lambda: subjects(d) == ["for bob only"], what="bob's inbox")
    # live updates go to the right inbox only
    sandbox.send(multipart("second for alice", attach=False), login="alice")
    sandbox.send(multipart("second for bob", attach=False), login="bob")
    wait(d, lambda: sorted(subjects(d)) == ["for bob only", "second for bob"],
         what="bob's live update")
    time.sleep(1)
    assert "second for alice" not in subjects(d)
    # a wrong token sees nothing and says so
    field = d.find_element(By.ID, "token")
    field.clear()
    field.send_keys("0" * 64)
    d.find_element(By.CSS_SELECTOR, "#token-form button").click()
    wait(d, lambda: "not accepted" in d.find_element(By.ID, "status").text, what="401 shown")
    assert subjects(d) == []
    # no token: the anonymous inbox
    field.clear()
    d.find_element(By.CSS_SELECTOR, "#token-form button").click()
    wait(d, lambda: subjects(d) == ["anonymous mail"], what="the default inbox")


def test_paging(sandbox, browser):
    d = browser
    sandbox.send_many([f"From: bulk@example.net\r\nSubject: bulk {i:02d}\r\n\r\nn {i}\r\n"
                       .encode() for i in range(53)])
    open_ui(d, sandbox)
    wait(d, lambda: len(subjects(d)) == 50 and
         d.find_element(By.ID, "range").text == "1\u201350 of 53", what="the first page")
    assert subjects(d)[0] == "bulk 52"  # newest first
    assert not d.find_element(By.ID, "next").get_attribute("disabled")
    assert d.find_element(By.ID, "prev").get_attribute("disabled")
    d.find_element(By.ID, "next").click()
    wait(d, lambda: subjects(d) == ["bulk 02", "bulk 01", "bulk 00"], what="the second page")
    assert d.find_element(By.ID, "range").text == "51\u201353 of 53"
    assert d.find_element(By.ID, "next").get_attribute("disabled")
    d.find_element(By.ID, "prev").click()
    wait(d, lambda: len(subjects(d)) == 50, what="the first page again")


def api_list(sb):
    c = http.client.HTTPConnection("127.0.0.1", sb.http_port, timeout=15)
    c.request("GET", "/api/v1/messages")
    r = c.getresponse()
    j = json.loads(r.read())
    c.close()
    return j["messages"]


def test_csrf_from_another_origin(sandbox, browser, canary):
    """A page of another origin, open in the same browser as the UI, tries
    to release and to delete a captured message: a text/plain form post
    shaped as JSON, a no-cors fetch, and a CORS fetch that would need a
    preflight the server never grants. Nothing is released or deleted."""
    d = browser
    sandbox.send(multipart("keep me", attach=False))
    open_ui(d, sandbox)
    wait(d, lambda: subjects(d) == ["keep me"], what="the message")
    mid = api_list(sandbox)[0]["ID"]
    api = f"http://127.0.0.1:{sandbox.http_port}"
    done = f"http://127.0.0.1:{canary.port}/done"
    canary.pages["/attack"] = f"""<!doctype html><title>attack</title>
<form id=f method=POST enctype=text/plain target=sink
      action="{api}/api/v1/message/{mid}/release">
<input name='{{"To":["evil@sink.test"],"x":"' value='"}}'></form>
<iframe name=sink></iframe>
<script>
const body = JSON.stringify({{IDs: ["{mid}"]}});
Promise.allSettled([
  fetch("{api}/api/v1/messages", {{method: "DELETE", mode: "no-cors",
        headers: {{"Content-Type": "text/plain"}}, body}}),
  fetch("{api}/api/v1/messages", {{method: "DELETE", mode: "cors",
        headers: {{"Content-Type": "application/json"}}, body}}),
  fetch("{api}/api/v1/message/{mid}/release", {{method: "POST", mode: "no-cors",
        body: JSON.stringify({{To: ["evil@sink.test"]}})}}),
]).then(() => {{ document.getElementById("f").submit();
                 setTimeout(() => fetch("{done}"), 1500); }});
</script>"""
    d.get(f"http://127.0.0.1:{canary.port}/attack")
    deadline = time.time() + 15
    while "/done" not in canary.paths() and time.time() < deadline:
        time.sleep(0.1)
    assert "/done" in canary.paths(), "the attack page did not run"
    time.sleep(1)
    assert [m["ID"] for m in api_list(sandbox)] == [mid]  # not deleted
    with pytest.raises(AssertionError):
        sandbox.sink.wait_messages(1, timeout=3)  # not released
