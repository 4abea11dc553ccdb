//! A small W3C WebDriver client for Debian's `chromedriver` and headless `chromium`: the
//! commands the web file browser's test needs, over plain HTTP/1.1 on loopback.
//!
//! chromedriver runs in a process group of its own, so dropping the [`Browser`] ends it and
//! the browser it started, by that group's id.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// The key of an element reference in WebDriver's JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// The Enter key, for `send_keys`.
pub const ENTER: &str = "\u{E007}";

/// A reference to an element of the current page.
#[derive(Debug, Clone)]
pub struct Element(String);

/// How long a wait for the page lasts (the suite runs on a loaded 2-core machine).
const WAIT: Duration = Duration::from_secs(30);

/// chromedriver and what it started (its process group), ended when dropped: by SIGTERM to
/// the group, then SIGKILL if it is still there after 5 s.
struct DriverProcess(Child);

impl Drop for DriverProcess {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.0.wait();
    }
}

/// A headless chromium session driven through chromedriver.
pub struct Browser {
    _driver: DriverProcess,
    port: u16,
    session: String,
    /// Where downloads land.
    pub downloads: tempfile::TempDir,
    _profile: tempfile::TempDir,
}

/// One HTTP exchange with chromedriver: the status and the JSON body.
fn exchange(port: u16, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    try_exchange(port, method, path, body)
        .unwrap_or_else(|e| panic!("{method} {path} to chromedriver: {e}"))
}

/// [`exchange`], with I/O errors returned instead of a panic (for `Drop`).
fn try_exchange(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> std::io::Result<(u16, Value)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes())?;
    // chromedriver keeps the connection open whatever the request says: read the head, then
    // the body its Content-Length (or its chunks) announces.
    let mut raw = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    let split = loop {
        if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_lowercase();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(std::io::ErrorKind::InvalidData)?;
    let length = head.lines().find_map(|line| {
        line.strip_prefix("content-length:")
            .and_then(|v| v.trim().parse::<usize>().ok())
    });
    let chunked = head.contains("transfer-encoding: chunked");
    let mut payload = raw.split_off(split + 4);
    loop {
        let complete = match length {
            Some(length) => payload.len() >= length,
            None if chunked => payload.ends_with(b"0\r\n\r\n"),
            None => false,
        };
        if complete {
            break;
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        payload.extend_from_slice(&buf[..n]);
    }
    if chunked {
        payload = dechunk(&payload);
    }
    let value = serde_json::from_slice(&payload).unwrap_or(Value::Null);
    Ok((status, value))
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&data[..line_end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = line_end + 2;
        out.extend_from_slice(&data[start..start + size]);
        data = &data[start + size + 2..];
    }
    out
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Browser {
    /// Starts chromedriver and a headless chromium session with a 1280×900 window.
    pub fn start() -> Browser {
        let port = free_port();
        let mut command = Command::new("chromedriver");
        command
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        // Guarded from here on: a failed assertion below still ends it.
        let mut driver = DriverProcess(
            command
                .spawn()
                .expect("chromedriver (Debian's chromium-driver; `make deps` installs it)"),
        );
        let deadline = Instant::now() + WAIT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                matches!(driver.0.try_wait(), Ok(None)),
                "chromedriver exited"
            );
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        let downloads = tempfile::tempdir().expect("downloads");
        let profile = tempfile::tempdir().expect("profile");
        let download_dir = downloads.path().display().to_string();
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                // --no-sandbox: CI runs as root, where chromium's sandbox refuses to start.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900",
                         format!("--user-data-dir={}", profile.path().display())],
                "prefs": {
                    "download.default_directory": download_dir,
                    "download.prompt_for_download": false,
                },
            },
        }}});
        let (status, value) = exchange(port, "POST", "/session", Some(&capabilities));
        assert_eq!(status, 200, "new session: {value}");
        let session = value["value"]["sessionId"]
            .as_str()
            .expect("session id")
            .to_owned();
        let browser = Browser {
            _driver: driver,
            port,
            session,
            downloads,
            _profile: profile,
        };
        browser.command(
            "POST",
            "goog/cdp/execute",
            json!({"cmd": "Browser.setDownloadBehavior",
                   "params": {"behavior": "allow", "downloadPath": download_dir}}),
        );
        browser
    }

    /// A session command; panics with WebDriver's message when it fails.
    pub fn command(&self, method: &str, path: &str, body: Value) -> Value {
        self.try_command(method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// A session command: its value, or WebDriver's error.
    pub fn try_command(&self, method: &str, path: &str, body: Value) -> Result<Value, Value> {
        let url = format!("/session/{}/{path}", self.session);
        let body = (method == "POST").then_some(&body);
        let (status, mut value) = exchange(self.port, method, &url, body);
        let value = value["value"].take();
        if status == 200 { Ok(value) } else { Err(value) }
    }

    /// Opens `url`.
    pub fn goto(&self, url: &str) {
        self.command("POST", "url", json!({ "url": url }));
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    pub fn run(&self, script: &str, args: Value) -> Value {
        self.command(
            "POST",
            "execute/sync",
            json!({"script": script, "args": args}),
        )
    }

    /// The element a script returned, if it returned one.
    pub fn element_from(&self, value: Value) -> Option<Element> {
        value[ELEMENT].as_str().map(|id| Element(id.to_owned()))
    }

    /// The first element that matches `css`, if any (any other error fails the test).
    pub fn try_find(&self, css: &str) -> Option<Element> {
        match self.try_command(
            "POST",
            "element",
            json!({"using": "css selector", "value": css}),
        ) {
            Ok(v) => v[ELEMENT].as_str().map(|id| Element(id.to_owned())),
            Err(e) if e["error"] == "no such element" => None,
            Err(e) => panic!("find {css}: {e}"),
        }
    }

    /// The first element that matches `css`, waiting up to 10 s for it.
    pub fn find(&self, css: &str) -> Element {
        self.wait(&format!("an element {css}"), || self.try_find(css))
    }

    /// Every element that matches `css`.
    pub fn find_all(&self, css: &str) -> Vec<Element> {
        self.command(
            "POST",
            "elements",
            json!({"using": "css selector", "value": css}),
        )
        .as_array()
        .expect("elements")
        .iter()
        .filter_map(|v| v[ELEMENT].as_str().map(|id| Element(id.to_owned())))
        .collect()
    }

    /// Clicks `element`, as a user would (WebDriver checks that it is visible).
    pub fn click(&self, element: &Element) {
        self.command("POST", &format!("element/{}/click", element.0), json!({}));
    }

    /// Clicks what `find` gives, again if the page replaced it before the click landed.
    pub fn click_fresh(&self, what: &str, find: impl Fn() -> Element) {
        self.wait(what, || {
            let element = find();
            match self.try_command("POST", &format!("element/{}/click", element.0), json!({})) {
                Ok(_) => Some(()),
                Err(e) if e["error"] == "stale element reference" => None,
                Err(e) => panic!("click {what}: {e}"),
            }
        })
    }

    /// Types `text` into `element`; for a file input, `text` is a file's path.
    pub fn send_keys(&self, element: &Element, text: &str) {
        self.command(
            "POST",
            &format!("element/{}/value", element.0),
            json!({ "text": text }),
        );
    }

    /// The rendered text of `element`.
    pub fn text(&self, element: &Element) -> String {
        self.command("GET", &format!("element/{}/text", element.0), json!({}))
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// A property of `element` (`href`, `value`, `disabled`...).
    pub fn property(&self, element: &Element, name: &str) -> Value {
        self.command(
            "GET",
            &format!("element/{}/property/{name}", element.0),
            json!({}),
        )
    }

    /// Whether `element` is shown.
    pub fn displayed(&self, element: &Element) -> bool {
        self.command(
            "GET",
            &format!("element/{}/displayed", element.0),
            json!({}),
        )
        .as_bool()
        .unwrap_or(false)
    }

    /// The element that has the keyboard focus.
    pub fn focused(&self) -> Element {
        let value = self.command("GET", "element/active", json!({}));
        Element(
            value[ELEMENT]
                .as_str()
                .expect("an active element")
                .to_owned(),
        )
    }

    /// The text of the element matching `css` (waiting for it).
    pub fn text_of(&self, css: &str) -> String {
        self.text(&self.find(css))
    }

    /// Polls `probe` every 50 ms for up to [`WAIT`] until it gives a value.
    pub fn wait<T>(&self, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(value) = probe() {
                return value;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits up to [`WAIT`] until the rendered text of `css` satisfies `ok`, and returns
    /// it (read in the page in one step, so a re-rendered element is never stale).
    pub fn wait_text(&self, css: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let text = self
                .run(
                    "const e = document.querySelector(arguments[0]); return e ? e.innerText : null",
                    json!([css]),
                )
                .as_str()
                .map(str::to_owned);
            match text {
                Some(text) if ok(&text) => return text,
                last => assert!(
                    Instant::now() < deadline,
                    "timed out waiting for the text of {css} (last: {last:?})"
                ),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A PNG of the window, written to `path`.
    pub fn screenshot(&self, path: &Path) {
        let encoded = self.command("GET", "screenshot", json!({}));
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().expect("base64"))
            .expect("a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot folder");
        }
        std::fs::write(path, png).expect("write the screenshot");
    }

    /// The browser console's entries since the last call.
    pub fn console(&self) -> Vec<Value> {
        self.command("POST", "se/log", json!({"type": "browser"}))
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The file named `name` in the downloads folder, once chromium has finished it.
    pub fn downloaded(&self, name: &str) -> Vec<u8> {
        let path: PathBuf = self.downloads.path().join(name);
        self.wait(&format!("the download {name}"), || {
            let partial = std::fs::read_dir(self.downloads.path())
                .ok()?
                .flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with(".crdownload"));
            if partial {
                return None;
            }
            std::fs::read(&path).ok()
        })
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Closes chromium; the driver's group is ended next, when `_driver` drops.
        let _ = try_exchange(
            self.port,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
    }
}
