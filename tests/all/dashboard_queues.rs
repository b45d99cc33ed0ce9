//! The `/dashboard/queues` page: served as one self-contained HTML file, and clicked in a real
//! headless Chromium: retrying a dead job completes it, pause and resume reach the queue, a
//! remote operator's pasted token is what the page sends, and refreshing holds no more DOM
//! nodes or listeners.
//!
//! [`Browser`] drives Chromium over the DevTools protocol and clicks with real mouse events;
//! the tests read the page's DOM with a deadline, never after a fixed sleep, and check the
//! admin API agrees with what the page shows.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::chromium::{self, Browser};
use crate::support::{Host, client, component, component_toml, poll_until, repo_root};

const WAIT: Duration = Duration::from_secs(30);

/// Queue `jobs` processed by `fixture-processor`: one attempt per job, so a job whose first
/// attempt fails is a dead letter at once, and completed jobs kept so the page can list them.
fn manifest() -> String {
    format!(
        "{}[[trigger.queue]]\nqueue = \"jobs\"\ncomponent = \"p\"\nmax_attempts = 1\n\
         backoff = \"fixed:10ms\"\nkeep_completed = {{ count = 100 }}\n",
        component_toml("p", &component("fixture-processor"), ""),
    )
}

/// Enqueues `payload` on `jobs` through the admin API (with `token` when given).
fn enqueue(host: &Host, payload: Value, token: Option<&str>) -> String {
    let mut request = client()
        .post(host.url("/admin/queues/jobs/jobs"))
        .json(&json!({ "payload": payload }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().expect("POST /admin/queues/jobs/jobs");
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().expect("a JSON body");
    body["id"].as_str().expect("an id").to_string()
}

/// Job `id` as the admin API shows it.
fn job(host: &Host, id: &str) -> Value {
    let response = client()
        .get(host.url(&format!("/admin/queues/jobs/jobs/{id}")))
        .send()
        .expect("GET a job");
    assert_eq!(response.status(), StatusCode::OK, "GET job {id}");
    response.json().expect("a JSON job")
}

fn wait_for_state(host: &Host, id: &str, state: &str) {
    poll_until(WAIT, &format!("job {id} {state}"), || {
        (job(host, id)["state"] == state).then_some(())
    });
}

/// Whether the admin API says queue `jobs` is paused.
fn paused(host: &Host, token: Option<&str>) -> bool {
    let mut request = client().get(host.url("/admin/queues"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let list: Value = request.send().expect("GET /admin/queues").json().unwrap();
    list["queues"][0]["paused"]
        .as_bool()
        .expect("a `paused` flag")
}

/// A JavaScript string literal of `text`.
fn js(text: &str) -> String {
    serde_json::to_string(text).expect("a string serialises")
}

/// Selectors in the page: queue `jobs`'s section, a state tab in it, a job's row.
const SECTION: &str = r#"section[data-queue="jobs"]"#;

fn tab(state: &str) -> String {
    format!(r#"{SECTION} .tabs button[data-state="{state}"]"#)
}

fn row(id: &str) -> String {
    format!(r#"{SECTION} tr[data-job="{id}"]"#)
}

/// Opens the queue page of `host` and waits until it lists queue `jobs`.
fn open_page(host: &Host) -> Browser {
    let mut browser = Browser::launch();
    browser.navigate(&host.url("/dashboard/queues"));
    browser.wait_for(
        WAIT,
        "the page to list queue `jobs`",
        &format!("document.querySelector({}) !== null", js(SECTION)),
    );
    browser
}

/// The page asked nothing of any origin but `host`, wrote nothing to the console, threw
/// nothing, and counted no error of its own.
fn assert_clean(browser: &mut Browser, host: &Host) {
    let origin = host.url("/");
    let urls = browser.requested_urls();
    assert!(
        urls.iter()
            .any(|u| u.starts_with(&format!("{origin}admin/queues"))),
        "the page never called the admin API: {urls:#?}"
    );
    let elsewhere: Vec<_> = urls
        .iter()
        .filter(|u| !u.starts_with(&origin) && !u.starts_with("data:"))
        .collect();
    assert!(
        elsewhere.is_empty(),
        "requests off {origin}: {elsewhere:#?}"
    );
    let problems = browser.console_problems();
    assert!(
        problems.is_empty(),
        "console problems: {problems:#?}\nChromium's log:\n{}",
        browser.log()
    );
    let counted = browser.evaluate("document.body.dataset.consoleErrors");
    assert_eq!(counted, "0", "errors the page counted itself");
}

#[test]
fn retrying_a_dead_job_on_the_queue_page_completes_it() {
    let host = Host::start(&manifest());
    // Fails (asking for a retry) on its first run only: with one attempt, that is dead.
    let id = enqueue(&host, json!({ "action": "flaky", "fail_times": 1 }), None);
    // A payload that would run script if the page ever used it as HTML.
    let hostile = "<img src=/x onerror=\"document.title='pwned'\"><b>bold</b>";
    let other = enqueue(&host, json!({ "action": "fail", "note": hostile }), None);
    wait_for_state(&host, &id, "dead");
    wait_for_state(&host, &other, "dead");

    let mut browser = open_page(&host);
    browser.click(&tab("dead"));
    browser.wait_for(
        WAIT,
        "the dead job's row",
        &format!(
            "(() => {{ const r = document.querySelector({}); return r && r.dataset.state === 'dead'; }})()",
            js(&row(&id))
        ),
    );
    // The hostile payload is shown as text, and made no element.
    let preview = browser.evaluate(&format!(
        "document.querySelector({}).textContent",
        js(&format!("{} details.payload summary", row(&other)))
    ));
    // The preview is the payload's JSON text: the markup appears as written, quotes escaped.
    let as_json = serde_json::to_string(hostile).expect("a string serialises");
    assert!(
        preview.as_str().is_some_and(|p| p.contains(&as_json)),
        "payload preview: {preview}"
    );
    let made = browser.evaluate("document.querySelectorAll('main img, main b').length");
    assert_eq!(made, 0, "the payload became HTML");
    assert_ne!(browser.evaluate("document.title"), "pwned");

    browser.click(&format!("{} button.retry", row(&id)));
    // The page follows the job it retried until it is final...
    browser.wait_for(
        WAIT,
        "the retried job shown completed in the recent actions",
        &format!(
            "document.querySelector({}) !== null",
            js(&format!(
                r#"#actions-list li[data-job="{id}"][data-state="completed"]"#
            ))
        ),
    );
    // ...and lists it among the completed jobs.
    browser.click(&tab("completed"));
    let state_cell = browser.wait_for(
        WAIT,
        "the job in the completed list",
        &format!(
            "(() => {{ const r = document.querySelector({}); return r && r.dataset.state === 'completed' && r.cells[1].textContent; }})()",
            js(&row(&id))
        ),
    );
    assert_eq!(state_cell, "completed");
    let notice = browser.evaluate("document.getElementById('notice').textContent");
    assert_eq!(notice, format!("retried job {id} of queue jobs"));

    let view = job(&host, &id);
    assert_eq!(view["state"], "completed", "{view}");
    assert_eq!(view["result"], "succeeded after 2 attempts", "{view}");
    assert_eq!(
        job(&host, &other)["state"],
        "dead",
        "only the clicked job was retried"
    );
    assert_clean(&mut browser, &host);
}

/// Waits until the page has refreshed `times` more times (its status says when it last did).
fn wait_for_refreshes(browser: &mut Browser, times: usize) {
    let status = "document.getElementById('status').textContent";
    for _ in 0..times {
        let before = browser.evaluate(status);
        browser.wait_for(
            WAIT,
            "the page to refresh",
            &format!("document.body.dataset.status === 'ok' && {status} !== {before}"),
        );
    }
}

#[test]
fn the_page_refreshes_without_holding_more_nodes_or_listeners() {
    let host = Host::start(&manifest());
    let id = enqueue(&host, json!({ "action": "fail" }), None);
    wait_for_state(&host, &id, "dead");
    let mut browser = open_page(&host);
    browser.wait_for(
        WAIT,
        "the dead job listed",
        &format!("document.querySelector({}) !== null", js(&row(&id))),
    );
    wait_for_refreshes(&mut browser, 1);
    let before = browser.counts_after_gc();
    wait_for_refreshes(&mut browser, 3);
    let after = browser.counts_after_gc();
    for name in ["Nodes", "JSEventListeners", "Documents"] {
        assert_eq!(
            before.get(name),
            after.get(name),
            "{name} changed over 3 refreshes: {before:?} -> {after:?}"
        );
    }
    assert_clean(&mut browser, &host);
}

#[test]
fn the_pause_button_pauses_and_resumes_the_queue() {
    let host = Host::start(&manifest());
    let mut browser = open_page(&host);
    let button = r#"#queues-body tr[data-queue="jobs"] button.pause"#;
    let shows = |state: &str, label: &str| {
        format!(
            "(() => {{ const r = document.querySelector('#queues-body tr[data-queue=\"jobs\"]'); \
             return r !== null && r.cells[3].textContent === {} && r.querySelector('button.pause').textContent === {}; }})()",
            js(state),
            js(label)
        )
    };
    browser.wait_for(WAIT, "queue `jobs` running", &shows("running", "pause"));

    browser.click(button);
    poll_until(WAIT, "the admin API to say paused", || {
        paused(&host, None).then_some(())
    });
    browser.wait_for(
        WAIT,
        "the page to show the pause",
        &shows("paused", "resume"),
    );

    browser.click(button);
    poll_until(WAIT, "the admin API to say running", || {
        (!paused(&host, None)).then_some(())
    });
    browser.wait_for(
        WAIT,
        "the page to show the resume",
        &shows("running", "pause"),
    );
    assert_clean(&mut browser, &host);
}

#[test]
fn with_a_token_set_the_page_shows_the_refusal_and_sends_the_pasted_token() {
    let token = "s3cret-token";
    let host = Host::start_with_env(&manifest(), &[("LLMCHAT_ADMIN_TOKEN", token)]);
    let mut browser = open_page_refused(&host);

    browser.type_into("#token", "wrong");
    browser.click("#token-use");
    browser.wait_for(
        WAIT,
        "the API's message for a wrong token",
        "document.getElementById('status').textContent.includes('refused: admin API bearer token is wrong')",
    );

    browser.type_into("#token", token);
    browser.click("#token-use");
    browser.wait_for(
        WAIT,
        "the page to list queue `jobs` with the token",
        &format!(
            "document.body.dataset.status === 'ok' && document.querySelector({}) !== null",
            js(SECTION)
        ),
    );
    // Kept for this tab only, and not left in the page.
    assert_eq!(
        browser.evaluate("sessionStorage.getItem('llmchat.adminToken')"),
        token
    );
    assert_eq!(
        browser.evaluate("document.getElementById('token').value"),
        ""
    );
    assert!(
        !browser
            .evaluate("document.documentElement.outerHTML")
            .as_str()
            .is_some_and(|html| html.contains(token)),
        "the token is in the DOM"
    );

    browser.click(r#"#queues-body tr[data-queue="jobs"] button.pause"#);
    poll_until(WAIT, "the admin API to say paused", || {
        paused(&host, Some(token)).then_some(())
    });
}

/// Opens the queue page of a host whose admin API wants a token the page does not have yet,
/// and waits for the API's refusal on the page.
fn open_page_refused(host: &Host) -> Browser {
    let mut browser = Browser::launch();
    browser.navigate(&host.url("/dashboard/queues"));
    browser.wait_for(
        WAIT,
        "the API's refusal on the page",
        "document.getElementById('status').textContent.includes('refused: admin API needs a bearer token')",
    );
    browser
}

#[test]
fn queue_page_is_one_html_page_that_loads_nothing_from_elsewhere() {
    let host = Host::start(&manifest());
    let response = client().get(host.url("/dashboard/queues")).send().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .unwrap_or_default()
    };
    assert_eq!(
        header(reqwest::header::CONTENT_TYPE),
        "text/html; charset=utf-8"
    );
    let csp = header(reqwest::header::CONTENT_SECURITY_POLICY);
    for directive in [
        "default-src 'none'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "form-action 'none'",
    ] {
        assert!(csp.contains(directive), "CSP {csp:?} lacks {directive:?}");
    }
    let page = response.text().unwrap();
    let source =
        std::fs::read_to_string(repo_root().join("host/src/dashboard/queues.html")).unwrap();
    assert!(
        page == source,
        "/dashboard/queues must serve host/src/dashboard/queues.html as it is"
    );

    let lower = page.to_ascii_lowercase();
    for external in [
        "http://", "https://", "@import", "url(", "\"//", "'//", "`//",
    ] {
        assert!(!lower.contains(external), "the page mentions {external:?}");
    }
    chromium::assert_local_url_attributes(&page);
    // Job data is user data: the page never parses anything as HTML.
    for sink in [
        "innerhtml",
        "outerhtml",
        "insertadjacenthtml",
        "document.write",
        "eval(",
    ] {
        assert!(!lower.contains(sink), "the page uses {sink}");
    }
}
