"""The analytics dashboard (issue 13) in a real browser: headless Debian
chromium through chromium-driver and python3-selenium, started here. After
traffic to sinks that take, defer and reject mail and to a Maildir, the
page at /dashboard/ (served from the binary) asks for the API token and
then draws its SVG charts with the data in them; the CSP allows what it
needs (no violation in the console), and a wrong token is reported."""
import os
import shutil
import time

import pytest

from test_analytics import TOKEN, mtas, traffic  # noqa: F401 (fixture)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

pytestmark = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)),
    reason="chromium and chromium-driver are needed (scripts/install-deps.sh)")


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--no-first-run", "--disable-extensions", "--window-size=1280,1800",
              f"--user-data-dir={tmp_path / 'chromium'}"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(DRIVER), options=opts)
    drv.set_page_load_timeout(30)
    yield drv
    drv.quit()


def points(drv, chart):
    return int(drv.execute_script(
        "return document.getElementById(arguments[0]).dataset.points || '0'", chart))


def texts(drv, selector):
    """Read in the page in one go (a redraw never leaves stale handles);
    an element's own text, without its <title> tooltip."""
    return drv.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => e.firstChild &&"
        " e.firstChild.nodeType === 3 ? e.firstChild.nodeValue : e.textContent)", selector)


def attrs(drv, selector, name):
    return drv.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => e.getAttribute(arguments[1]))",
        selector, name)


def wait_for(drv, cond, timeout=30, what=""):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out: {what}\n" + drv.find_element("id", "status").text)


def use_token(drv, token):
    box = drv.find_element("id", "token")
    box.clear()
    box.send_keys(token)
    drv.find_element("css selector", "#token-form button").click()


def test_dashboard_draws_charts(hikyaku, tmp_path, mtas, browser):  # noqa: F811
    hk = traffic(hikyaku, tmp_path, mtas)
    time.sleep(0.5)  # the queue writes its batch every 200 ms
    browser.get(f"http://127.0.0.1:{hk.http_port}/dashboard/")
    assert "delivery analytics" in browser.title
    assert "token" in browser.find_element("id", "status").text.lower()
    assert points(browser, "chart-series") == 0

    use_token(browser, "wrong-token-wrong-token-wrong")
    wait_for(browser, lambda: "refused" in browser.find_element("id", "status").text,
             what="a wrong token is reported")

    use_token(browser, TOKEN)
    charts = ["chart-series", "chart-domains", "chart-senders", "chart-delays",
              "chart-deferred", "chart-bounced", "chart-tls"]
    wait_for(browser, lambda: all(points(browser, c) > 0 for c in charts),
             what="every chart drawn: " + str({c: points(browser, c) for c in charts}))
    assert browser.find_element("id", "status").text == ""

    assert set(attrs(browser, "#chart-series path.line", "data-series")) == \
        {"accepted", "delivered", "deferred", "bounced"}
    assert len(texts(browser, "#chart-series circle.point")) >= 4
    # Bars carry their values: ok.test delivered 3, the bounce reason once.
    labels = texts(browser, "#chart-domains text")
    assert "ok.test" in labels and "defer.test" in labels and "reject.test" in labels
    assert "3" in attrs(browser, "#chart-domains rect.bar.s-delivered", "data-value")
    assert "5.1.1 user unknown" in texts(browser, "#chart-bounced text")
    assert attrs(browser, "#chart-deferred rect.bar", "data-value") == ["2"]
    assert "deliveries" in browser.find_element("id", "delays-summary").text
    assert "% of" in browser.find_element("id", "tls-summary").text
    # No DMARC traffic here: the chart says so instead of failing.
    assert points(browser, "chart-dmarc") == 0
    assert "No DMARC" in browser.find_element("id", "dmarc-summary").text

    # A destination filter redraws with that domain only.
    box = browser.find_element("id", "domain")
    box.send_keys("reject.test")
    browser.find_element("css selector", "#controls button").click()
    wait_for(browser, lambda: texts(browser, "#chart-domains text")[:1] == ["reject.test"],
             what="filtered to reject.test")

    # Nothing the CSP refused, no script error.
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"
              and "401" not in e["message"]]
    assert errors == [], errors
