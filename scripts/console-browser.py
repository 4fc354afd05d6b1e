#!/usr/bin/env python3
"""Drives the operator console in a real browser (Debian's headless chromium + chromedriver, selenium from PyPI):
log in -> overview -> the failing endpoint -> replay dry run -> a failed delivery -> replay it.

Run by the test suite (ConsoleBrowserTests), which starts PostgreSQL, a worker, receivers and `herald console`:
    console-browser.py --url http://127.0.0.1:PORT --token TOKEN --endpoint NAME --out DIR
Saves screenshots of every step at 1280x800 (laptop) and 390x844 (phone) in DIR, and prints one JSON line:
{"replayed": "<delivery id>", "screenshots": [...]}. Exits non-zero, saying which step failed, otherwise.
"""
import argparse
import json
import os
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By

SIZES = {"laptop": (1280, 800, False), "phone": (390, 844, True)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--endpoint", required=True, help="name of an endpoint with failed deliveries")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)

    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,800", "--hide-scrollbars", "--lang=en-US"):
        options.add_argument(flag)
    service = Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(60)
    shots = []

    def text():
        return driver.find_element(By.TAG_NAME, "body").text

    def shows(words, seconds=10):
        """Whether the page shows `words` within `seconds` (a click's navigation may still be under way)."""
        deadline = time.time() + seconds
        while time.time() < deadline:
            try:
                if words in text():
                    return True
            except (StaleElementReferenceException, NoSuchElementException):
                pass
            time.sleep(0.1)
        return False

    def arrives(fragment, seconds=10):
        """Whether the browser reaches a URL containing `fragment` within `seconds`."""
        deadline = time.time() + seconds
        while time.time() < deadline and fragment not in driver.current_url:
            time.sleep(0.1)
        return fragment in driver.current_url

    def check(condition, step):
        if not condition:
            shot("failure")
            sys.exit(f"console-browser: {step} (at {driver.current_url})")

    def shot(name):
        for label, (width, height, mobile) in SIZES.items():
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                   {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})
            path = os.path.join(args.out, f"console-{name}-{label}.png")
            driver.save_screenshot(path)
            shots.append(path)
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

    try:
        # No session: the console sends the browser to its login page and shows no data.
        driver.get(args.url + "/")
        check(driver.current_url.endswith("/login"), "an anonymous visit was not sent to /login")
        check(args.endpoint not in text(), "the login page shows data")
        shot("login")
        field = driver.find_element(By.NAME, "token")
        field.send_keys(args.token)
        field.submit()

        check(shows("Attempts per minute"), "logging in did not lead to the overview")
        check(len(driver.find_elements(By.CSS_SELECTOR, ".chart svg rect")) > 0, "the overview has no chart")
        check(args.endpoint in driver.find_element(By.XPATH, "//section[h2='Failing endpoints']").text,
              "the failing endpoint is not listed as failing")
        shot("overview")

        driver.find_element(By.LINK_TEXT, "Endpoints").click()
        check(shows("disabled and failing first") and args.endpoint in text(), "the endpoints list does not show the endpoint")
        shot("endpoints")
        driver.find_element(By.LINK_TEXT, args.endpoint).click()
        check(shows("Recent deliveries") and args.endpoint in driver.find_element(By.TAG_NAME, "h1").text,
              "the endpoint page is not the endpoint's")
        shot("endpoint")

        # Replay failed since 1 h: the dry run comes first; cancel it.
        since = driver.find_element(By.NAME, "since")
        since.clear()
        since.send_keys("1h")
        driver.find_element(By.XPATH, "//button[normalize-space()='Replay failed…']").click()
        check(shows("Dry run:"), "bulk replay did not show its dry run first")
        shot("replay-dry-run")
        driver.find_element(By.LINK_TEXT, "Cancel").click()
        check(shows("Recent deliveries"), "cancel did not lead back to the endpoint")
        driver.find_element(By.LINK_TEXT, "failed").click()
        check(arrives("status=failed"), "the failed filter did not load")
        rows = driver.find_elements(By.XPATH, "//tr[.//span[contains(@class,'badge') and text()='failed']]//a[contains(@href,'/deliveries/')]")
        check(rows, "no failed delivery listed on the endpoint page")
        rows[0].click()
        check(arrives("/deliveries/"), "the delivery link did not open the delivery")
        delivery = driver.current_url.rstrip("/").split("/")[-1]
        check(shows("Attempt 1"), "the delivery page has no attempt timeline")
        shot("delivery")

        driver.find_element(By.XPATH, "//button[normalize-space()='Replay this delivery']").click()
        check(shows("Replayed: a fresh attempt cycle is due now"), "the replay did not confirm")
        shot("delivery-replayed")
        print(json.dumps({"replayed": delivery, "screenshots": shots}))
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
