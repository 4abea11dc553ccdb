//! A minimal HTTP/1.1 client over a plain TCP socket, enough for probes and for the tests'
//! uploads and downloads (one request per connection, `Connection: close`).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response: status code, head (status line and headers, as text) and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The response head, for error messages.
    pub head: String,
    /// The body bytes (everything after the head; the server closes the connection).
    pub body: Vec<u8>,
}

/// Sends `method path` with `body` to `addr` and reads the whole response, within `timeout`.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<Response> {
    request_with(addr, method, path, &[], body, timeout).await
}

/// [`request`] with extra header lines (`name`, `value`), e.g. an `Authorization` bearer token.
pub async fn request_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<Response> {
    tokio::time::timeout(timeout, exchange(addr, method, path, headers, body))
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("{method} http://{addr}{path}: no answer in {timeout:?}"),
            )
        })?
}

async fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect(addr).await?;
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    parse(&raw)
}

/// Splits a raw response into status, head and body.
fn parse(raw: &[u8]) -> std::io::Result<Response> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| invalid("response without a complete head"))?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid("response without a status code"))?;
    Ok(Response {
        status,
        head,
        body: raw[end + 4..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_head_and_body() {
        let r = parse(b"HTTP/1.1 201 Created\r\nA: b\r\n\r\nhello").unwrap();
        assert_eq!(r.status, 201);
        assert_eq!(r.head, "HTTP/1.1 201 Created\r\nA: b");
        assert_eq!(r.body, b"hello");
        assert!(parse(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse(b"garbage\r\n\r\n").is_err());
    }

    #[tokio::test]
    async fn talks_to_a_real_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0; 1024];
            let n = s.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"PUT /x HTTP/1.1\r\n"));
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            assert!(text.contains("\r\nAuthorization: Bearer t0k\r\n"), "{text}");
            s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                .await
                .unwrap();
        });
        let auth = [("Authorization", "Bearer t0k")];
        let r = request_with(addr, "PUT", "/x", &auth, b"abc", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(r.status, 204);
        server.await.unwrap();
    }
}
