//! The web file browser in a real browser: Debian's headless chromium, driven by
//! chromedriver over WebDriver, against the dataplane binary run as the operator runs it
//! (user 65532 with no capabilities, squash identity, token files, a quota). Every upload
//! is checked byte for byte on disk and every download in chromium's download folder.
//!
//! The browser tests run one at a time: each starts a chromium, and there are 2 cores.

mod common;
#[path = "support/webdriver.rs"]
mod webdriver;

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use common::{DataplaneChild, pattern, spawn_dataplane};
use serde_json::json;
use webdriver::{Browser, ENTER};

/// One browser at a time.
static BROWSER: Mutex<()> = Mutex::new(());

const READ_WRITE_TOKEN: &str = "rw-0123456789abcdef-browser";
const READ_ONLY_TOKEN: &str = "ro-0123456789abcdef-browser";

/// A dataplane serving a temp folder as the operator renders it.
struct Served {
    share: tempfile::TempDir,
    _tokens: tempfile::TempDir,
    _child: DataplaneChild,
    base: String,
}

impl Served {
    /// Serves `share` (made owned by 65532 first) as share `photos`, with `extra` flags;
    /// `tokens`: with the read-write and read-only token files.
    fn start(share: tempfile::TempDir, tokens: bool, extra: &[&str]) -> Served {
        let status = std::process::Command::new("chown")
            .args(["-R", "65532:65532"])
            .arg(share.path())
            .status()
            .expect("chown");
        assert!(status.success());
        let token_dir = tempfile::tempdir().expect("token folder");
        std::fs::set_permissions(token_dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let mut flags: Vec<String> = [
            "--identity",
            "squash",
            "--share",
            "photos",
            "--capacity",
            "1Gi",
            "--metrics",
            "127.0.0.1:0",
        ]
        .map(str::to_owned)
        .to_vec();
        if tokens {
            for (file, token, flag) in [
                ("token", READ_WRITE_TOKEN, "--http-token-file"),
                ("read-token", READ_ONLY_TOKEN, "--http-read-token-file"),
            ] {
                let path = token_dir.path().join(file);
                std::fs::write(&path, token).expect("token file");
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
                    .expect("chmod");
                flags.extend([flag.to_owned(), path.display().to_string()]);
            }
        }
        flags.extend(extra.iter().map(|f| (*f).to_owned()));
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let (child, addr) = spawn_dataplane(&common::AS_OPERATOR_USER, share.path(), &flags);
        Served {
            share,
            _tokens: token_dir,
            _child: child,
            base: format!("http://{addr}"),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.share.path().join(rel)
    }
}

fn share_with(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let share = tempfile::tempdir().expect("share");
    for (rel, data) in files {
        let path = share.path().join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, data).expect("write");
    }
    share
}

/// The names shown in the listing, in order (read in one step: the list may re-render).
fn listed(browser: &Browser) -> Vec<String> {
    let names = browser.run(
        "return [...document.querySelectorAll(
           '#entries td.name a, #entries td.name > span:first-child')].map(e => e.textContent)",
        json!([]),
    );
    serde_json::from_value(names).expect("names")
}

/// Waits until the listing shows `name` (or, with `present` false, no longer shows it).
fn wait_listed(browser: &Browser, name: &str, present: bool) {
    browser.wait(&format!("{name:?} listed: {present}"), || {
        (listed(browser).iter().any(|n| n == name) == present).then_some(())
    });
}

/// The row link of `name`.
fn link(browser: &Browser, name: &str) -> webdriver::Element {
    browser.wait(&format!("a link {name:?}"), || {
        browser.element_from(browser.run(
            "return [...document.querySelectorAll('#entries td.name a')]
               .find(a => a.textContent === arguments[0]) || null",
            json!([name]),
        ))
    })
}

/// The last upload's status text, once it is no longer "uploading…".
fn upload_status(browser: &Browser) -> String {
    browser.wait_text("#uploads li:last-child span:last-child", |t| {
        !t.starts_with("uploading")
    })
}

/// Fails on any console error but the network's own lines for the 401s and 412s the tests
/// ask for on purpose (a missing `app.css`, a 404 or a 500 would still fail it).
fn assert_no_script_errors(browser: &Browser) {
    let expected = |message: &str| {
        message.contains("Failed to load resource")
            && (message.contains("status of 401") || message.contains("status of 412"))
    };
    let errors: Vec<_> = browser
        .console()
        .into_iter()
        .filter(|entry| entry["level"] == "SEVERE")
        .filter(|entry| !expected(entry["message"].as_str().unwrap_or_default()))
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
}

/// Dispatches the drag events of a drop of one file (bytes `arguments[0]`, name
/// `arguments[1]`) on the list, as the browser delivers them.
const DROP: &str = "const data = new DataTransfer();
    data.items.add(new File([new Uint8Array(arguments[0])], arguments[1]));
    const zone = document.getElementById('drop-zone');
    for (const type of ['dragenter', 'dragover', 'drop']) {
      zone.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true, dataTransfer: data}));
    }";

/// Waits until the dialog is open with a question containing `text`, and returns it.
fn wait_question(browser: &Browser, text: &str) -> String {
    browser.wait(&format!("a question about {text:?}"), || {
        let question = browser.run(
            "const dialog = document.getElementById('confirm');
             return dialog.open ? document.getElementById('confirm-text').textContent : null",
            json!([]),
        );
        question
            .as_str()
            .filter(|q| q.contains(text))
            .map(str::to_owned)
    })
}

/// A file read from the page with no Authorization header: the cookie decides.
const READ_WITHOUT_HEADER: &str =
    "return fetch('/v1/shares/photos/files/docs/readme.txt').then(r => r.status)";

fn screenshot_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/ui")
        .join(name)
}

#[test]
fn sign_in_browse_upload_download_delete_in_chromium() {
    let _one = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let mut files: Vec<(String, Vec<u8>)> = vec![
        ("docs/readme.txt".into(), b"hello from zeronas\n".to_vec()),
        (
            "docs/notes/todo.md".into(),
            b"- ship the browser\n".to_vec(),
        ),
        ("holiday.jpg".into(), pattern(300_000, 1)),
    ];
    for i in 0..120 {
        files.push((
            format!("many/file-{i:03}.txt"),
            format!("{i}\n").into_bytes(),
        ));
    }
    let borrowed: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    let served = Served::start(share_with(&borrowed), true, &[]);
    let browser = Browser::start();

    // No token: the API answers 401 and the page asks for one.
    browser.goto(&format!("{}/", served.base));
    let reason = browser.wait_text("#login-reason", |t| !t.is_empty());
    assert_eq!(reason, "This share needs a token.");
    assert!(!browser.displayed(&browser.find("#browser")));
    let status = browser.run(
        "return fetch('/v1/shares/photos/list').then(r => r.status)",
        json!([]),
    );
    assert_eq!(status, 401);

    // A wrong token is refused with a clear message; the right one, typed and submitted
    // with Enter, opens the share.
    let input = browser.find("#token");
    browser.send_keys(&input, &format!("not-the-token-at-all{ENTER}"));
    browser.wait_text("#login-reason", |t| t.contains("not accepted"));
    browser.send_keys(
        &browser.find("#token"),
        &format!("{READ_WRITE_TOKEN}{ENTER}"),
    );
    browser.wait_text("#share-name", |t| t == "photos");
    browser.wait_text("#file-count", |t| t == "123 files");
    browser.wait("the focus on the list after sign-in", || {
        (browser.property(&browser.focused(), "id") == "listing").then_some(())
    });
    assert!(browser.text_of("#usage-text").ends_with("of 1.0 GiB used"));
    // The token is in this tab's session, and never in a URL.
    let stored = browser.run("return sessionStorage.getItem('zeronas.token')", json!([]));
    assert_eq!(stored, READ_WRITE_TOKEN);
    wait_listed(&browser, "holiday.jpg", true);
    for link in browser.find_all("a") {
        let href = browser.property(&link, "href");
        assert!(!href.to_string().contains(READ_WRITE_TOKEN), "{href}");
    }

    // Browse with the keyboard: focus the folder's link and press Enter.
    let docs = link(&browser, "docs/");
    browser.send_keys(&docs, ENTER);
    wait_listed(&browser, "readme.txt", true);
    browser.wait("the focus on the list", || {
        (browser.property(&browser.focused(), "id") == "listing").then_some(())
    });
    assert_eq!(listed(&browser), ["notes/", "readme.txt"]);
    let crumbs: Vec<String> = browser
        .find_all("#crumbs li")
        .iter()
        .map(|c| browser.text(c))
        .collect();
    assert_eq!(crumbs, ["photos", "docs"]);

    // Upload with the file picker: the bytes land on disk under the typed name.
    let local = tempfile::tempdir().expect("local");
    let upload = local.path().join("report 2026.bin");
    let first = pattern(1_048_583, 2);
    std::fs::write(&upload, &first).expect("local file");
    let picker = browser.find("#picker");
    let focused = browser.run(
        "const picker = document.getElementById('picker');
         picker.focus();
         return document.activeElement === picker",
        json!([]),
    );
    assert_eq!(focused, true, "the file picker takes the keyboard focus");
    browser.send_keys(&picker, &upload.display().to_string());
    assert_eq!(upload_status(&browser), "uploaded");
    assert!(std::fs::read(served.path("docs/report 2026.bin")).expect("on disk") == first);
    wait_listed(&browser, "report 2026.bin", true);

    // The same name again: If-None-Match: * refuses, and the page asks before replacing.
    let second = pattern(70_000, 3);
    std::fs::write(&upload, &second).expect("local file");
    browser.send_keys(&browser.find("#picker"), &upload.display().to_string());
    wait_question(&browser, "already exists");
    browser.click(&browser.find("#confirm-cancel"));
    assert_eq!(
        upload_status(&browser),
        "skipped: a file of this name exists"
    );
    assert!(std::fs::read(served.path("docs/report 2026.bin")).expect("on disk") == first);
    browser.send_keys(&browser.find("#picker"), &upload.display().to_string());
    wait_question(&browser, "already exists");
    browser.click(&browser.find("#confirm-ok"));
    assert_eq!(upload_status(&browser), "replaced");
    assert!(std::fs::read(served.path("docs/report 2026.bin")).expect("on disk") == second);

    // Drag and drop: a drop event carrying a file, as the browser delivers one.
    browser.run(DROP, json!([pattern(5000, 4), "dropped.bin"]));
    assert_eq!(upload_status(&browser), "uploaded");
    assert!(std::fs::read(served.path("docs/dropped.bin")).expect("on disk") == pattern(5000, 4));

    // Two uploads at once that both meet an existing name: one question at a time, each
    // answered by its own click.
    wait_listed(&browser, "dropped.bin", true);
    browser.run(DROP, json!([[1, 2, 3], "dropped.bin"]));
    browser.send_keys(&browser.find("#picker"), &upload.display().to_string());
    let mut asked = Vec::new();
    for _ in 0..2 {
        let question = wait_question(&browser, "already exists");
        let name = ["dropped.bin", "report 2026.bin"]
            .into_iter()
            .find(|n| question.contains(n) && !asked.contains(n))
            .unwrap_or_else(|| panic!("an unexpected question: {question}"));
        asked.push(name);
        browser.click(&browser.find("#confirm-cancel"));
    }
    browser.wait("both uploads skipped", || {
        let statuses = browser.run(
            "return [...document.querySelectorAll('#uploads li span:last-child')].map(s => s.textContent)",
            json!([]),
        );
        let skipped = statuses
            .as_array()?
            .iter()
            .filter(|s| s.as_str().is_some_and(|s| s.starts_with("skipped")))
            .count();
        (skipped == 2).then_some(())
    });
    assert!(std::fs::read(served.path("docs/dropped.bin")).expect("on disk") == pattern(5000, 4));
    assert!(std::fs::read(served.path("docs/report 2026.bin")).expect("on disk") == second);

    // Download with the plain link (its cookie carries the token): the bytes match.
    assert_eq!(browser.run(READ_WITHOUT_HEADER, json!([])), 200);
    wait_listed(&browser, "dropped.bin", true);
    browser.click_fresh("the download link", || link(&browser, "report 2026.bin"));
    assert!(
        browser.downloaded("report 2026.bin") == second,
        "downloaded bytes differ"
    );
    browser.wait_text("#file-count", |t| t == "125 files");
    browser.screenshot(&screenshot_path("browser.png"));

    // Delete, confirmed in the dialog; Escape (the focus is on Cancel) first cancels.
    let dialog_open = "return document.getElementById('confirm').open";
    for name in ["dropped.bin", "report 2026.bin"] {
        let button = format!("button[aria-label='Delete {name}']");
        browser.click_fresh(&button, || browser.find(&button));
        wait_question(&browser, name);
        let focused = browser.focused();
        assert_eq!(browser.property(&focused, "id"), "confirm-cancel");
        browser.send_keys(&focused, "\u{E00C}");
        browser.wait("the dialog to close", || {
            (browser.run(dialog_open, json!([])) == false).then_some(())
        });
        wait_listed(&browser, name, true);
        assert!(served.path(&format!("docs/{name}")).exists());
        browser.click_fresh(&button, || browser.find(&button));
        wait_question(&browser, name);
        browser.click(&browser.find("#confirm-ok"));
        wait_listed(&browser, name, false);
        assert!(!served.path(&format!("docs/{name}")).exists(), "{name}");
    }
    assert!(served.path("docs/readme.txt").exists());

    // Pages follow the list cursor: 50, 50, then 20 of 120 files, and back.
    browser.goto(&format!("{}/ui/#/many", served.base));
    wait_listed(&browser, "file-000.txt", true);
    browser.run(
        "const size = document.getElementById('page-size');
         size.value = '50';
         size.dispatchEvent(new Event('change'));",
        json!([]),
    );
    browser.wait("50 rows", || (listed(&browser).len() == 50).then_some(()));
    let next = browser.find("#next");
    browser.click(&next);
    wait_listed(&browser, "file-050.txt", true);
    assert_eq!(listed(&browser).len(), 50);
    browser.click(&next);
    wait_listed(&browser, "file-119.txt", true);
    assert_eq!(listed(&browser).len(), 20);
    assert_eq!(browser.property(&next, "disabled"), true);
    assert_eq!(browser.text_of("#page-number"), "Page 3");
    browser.click(&browser.find("#prev"));
    wait_listed(&browser, "file-050.txt", true);
    assert_eq!(listed(&browser)[49], "file-099.txt");

    // The read-only token sees no write controls.
    browser.click(&browser.find("#sign-out"));
    browser.wait_text("#login-reason", |t| t.starts_with("Signed out"));
    let stored = browser.run("return sessionStorage.getItem('zeronas.token')", json!([]));
    assert_eq!(stored, serde_json::Value::Null);
    assert_eq!(
        browser.run(READ_WITHOUT_HEADER, json!([])),
        401,
        "sign-out clears the download cookie"
    );
    browser.send_keys(
        &browser.find("#token"),
        &format!("{READ_ONLY_TOKEN}{ENTER}"),
    );
    wait_listed(&browser, "file-000.txt", true);
    assert!(!browser.displayed(&browser.find("#tools")));
    assert!(browser.find_all("#entries button").is_empty());
    assert!(browser.displayed(&browser.find("#read-only-badge")));
    assert_no_script_errors(&browser);
}

#[test]
fn hostile_names_render_as_text() {
    let _one = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let share = share_with(&[
        ("<script>alert(1)<script>.txt", b"s"),
        ("<img src=x onerror=alert(2)>", b"i"),
        ("\"quotes\" & 'apostrophes'.txt", b"q"),
        ("..%2f..%2fetc%2fpasswd", b"p"),
        ("...", b"d"),
        ("..evil", b"e"),
        ("#hash?query=1", b"h"),
    ]);
    let raw_name = std::ffi::OsStr::from_bytes(b"latin1-\xe9t\xe9.bin");
    std::fs::write(share.path().join(raw_name), b"not utf-8").expect("write");
    let raw_folder = share.path().join(std::ffi::OsStr::from_bytes(b"dir-\xff"));
    std::fs::create_dir(&raw_folder).expect("mkdir");
    std::fs::write(raw_folder.join("inner.txt"), b"inner").expect("write");
    std::fs::create_dir(share.path().join("a&b+c %")).expect("mkdir");
    std::fs::write(share.path().join("a&b+c %/x.txt"), b"x").expect("write");
    let served = Served::start(share, false, &[]);
    let browser = Browser::start();
    browser.goto(&format!("{}/", served.base));
    wait_listed(&browser, "...", true);
    let mut names = listed(&browser);
    names.sort();
    let mut expected = vec![
        "\"quotes\" & 'apostrophes'.txt",
        "#hash?query=1",
        "...",
        "..%2f..%2fetc%2fpasswd",
        "..evil",
        "<img src=x onerror=alert(2)>",
        "<script>alert(1)<script>.txt",
        "latin1-\u{fffd}t\u{fffd}.bin",
        "dir-\u{fffd}/",
        "a&b+c %/",
    ];
    expected.sort();
    assert_eq!(names, expected);
    // Nothing became markup: no script or image element, no dialog.
    let injected = browser.run(
        "return document.querySelectorAll('#entries script, #entries img, main script').length",
        json!([]),
    );
    assert_eq!(injected, 0);
    assert!(browser.try_command("GET", "alert/text", json!({})).is_err());
    // Each odd name still addresses its own file.
    browser.click(&link(&browser, "latin1-\u{fffd}t\u{fffd}.bin"));
    assert_eq!(
        browser.downloaded("latin1-\u{fffd}t\u{fffd}.bin"),
        b"not utf-8"
    );
    // Every link fetches its own file's bytes.
    for (name, body) in [
        ("<script>alert(1)<script>.txt", "s"),
        ("<img src=x onerror=alert(2)>", "i"),
        ("\"quotes\" & 'apostrophes'.txt", "q"),
        ("..%2f..%2fetc%2fpasswd", "p"),
        ("...", "d"),
        ("..evil", "e"),
        ("#hash?query=1", "h"),
    ] {
        let href = browser.property(&link(&browser, name), "href");
        let fetched = browser.run(
            "return fetch(arguments[0]).then(r => r.text())",
            json!([href]),
        );
        assert_eq!(fetched, body, "{name} ({href})");
    }
    browser.click(&browser.find("button[aria-label='Delete <script>alert(1)<script>.txt']"));
    browser.click(&browser.find("#confirm-ok"));
    wait_listed(&browser, "<script>alert(1)<script>.txt", false);
    assert!(!served.path("<script>alert(1)<script>.txt").exists());
    browser.click(&browser.find("button[aria-label='Delete #hash?query=1']"));
    browser.click(&browser.find("#confirm-ok"));
    wait_listed(&browser, "#hash?query=1", false);
    assert!(!served.path("#hash?query=1").exists());
    assert!(served.path("...").exists());
    browser.screenshot(&screenshot_path("hostile-names.png"));

    // A folder whose name is not UTF-8: opened by its link (name_encoded in the fragment),
    // shown in the breadcrumbs as text, its file read by its link.
    browser.click_fresh("the folder link", || link(&browser, "dir-\u{fffd}/"));
    wait_listed(&browser, "inner.txt", true);
    let crumbs = browser.run(
        "return [...document.querySelectorAll('#crumbs li')].map(li => li.textContent)",
        json!([]),
    );
    assert_eq!(crumbs, json!(["photos", "dir-\u{fffd}"]));
    let href = browser.property(&link(&browser, "inner.txt"), "href");
    assert!(
        href.as_str()
            .unwrap_or_default()
            .ends_with("/files/dir-%FF/inner.txt"),
        "{href}"
    );
    let fetched = browser.run(
        "return fetch(arguments[0]).then(r => r.text())",
        json!([href]),
    );
    assert_eq!(fetched, "inner");
    // A hand-made address with characters that mean something in a URL opens that folder.
    browser.goto(&format!("{}/#/a&b+c %", served.base));
    wait_listed(&browser, "x.txt", true);
    assert_no_script_errors(&browser);
}

#[test]
fn anonymous_read_browses_and_offers_a_sign_in() {
    let _one = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let share = share_with(&[("open.txt", b"o")]);
    let served = Served::start(share, true, &["--http-anonymous-read"]);
    let browser = Browser::start();
    browser.goto(&format!("{}/", served.base));
    wait_listed(&browser, "open.txt", true);
    assert!(!browser.displayed(&browser.find("#tools")));
    assert!(browser.find_all("#entries button").is_empty());
    let sign_in = browser.find("#sign-out");
    assert_eq!(browser.text(&sign_in), "Sign in");
    browser.click(&sign_in);
    browser.wait_text("#login-reason", |t| t == "This share needs a token.");
    let without = browser.find("#anonymous");
    assert!(browser.displayed(&without));
    browser.click(&without);
    wait_listed(&browser, "open.txt", true);
    browser.wait("the focus on the list", || {
        (browser.property(&browser.focused(), "id") == "listing").then_some(())
    });
    // A wrong token on this server: refused, and the way back without one is offered.
    browser.click(&browser.find("#sign-out"));
    browser.send_keys(
        &browser.find("#token"),
        &format!("not-a-token-0123456789{ENTER}"),
    );
    browser.wait_text("#login-reason", |t| t.contains("not accepted"));
    assert!(browser.displayed(&browser.find("#anonymous")));
    assert_no_script_errors(&browser);
}

#[test]
fn a_read_only_share_shows_no_write_controls() {
    let _one = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let served = Served::start(share_with(&[("a.txt", b"a")]), false, &["--read-only"]);
    let browser = Browser::start();
    browser.goto(&format!("{}/ui/", served.base));
    wait_listed(&browser, "a.txt", true);
    assert!(!browser.displayed(&browser.find("#tools")));
    assert!(browser.find_all("#entries button").is_empty());
    assert_eq!(browser.text_of("#read-only-badge"), "read-only share");
    // Files dropped on a read-only share are refused in the page, not sent.
    browser.run(
        "const data = new DataTransfer();
         data.items.add(new File(['x'], 'b.txt'));
         document.getElementById('drop-zone').dispatchEvent(
           new DragEvent('drop', {bubbles: true, cancelable: true, dataTransfer: data}));",
        json!([]),
    );
    browser.wait_text("#message", |t| t.contains("cannot be changed"));
    assert!(!served.path("b.txt").exists());
    assert_no_script_errors(&browser);
}
