//! Slow or idle clients cannot hold the API: a request head must arrive within its limit, an idle
//! connection is closed, and past the connection cap new connections wait for a free one.
//! These talk to the server's own address over raw connections, as such clients would.

use std::net::SocketAddr;
use std::time::Duration;

use exports_tests::TestEnv;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

/// A generous upper bound for anything the server should do promptly.
const PROMPTLY: Duration = Duration::from_secs(30);

const HALF_A_HEAD: &str = "GET /health/live HTTP/1.1\r\nHost: exports.test\r\n";
const A_WHOLE_REQUEST: &str = "GET /health/live HTTP/1.1\r\nHost: exports.test\r\n\r\n";

/// Reads one response (head, then a `Content-Length` body) and returns its status.
async fn read_response(stream: &mut TcpStream) -> anyhow::Result<u16> {
    let mut received = Vec::new();
    let head_end = loop {
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let mut chunk = [0u8; 4096];
        let read = stream.read(&mut chunk).await?;
        anyhow::ensure!(read > 0, "the connection closed before a response");
        received.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&received[..head_end]).to_string();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("not a response: {head}"))?;
    let length: usize = head
        .lines()
        .find_map(|line| {
            line.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_string())
        })
        .and_then(|value| value.parse().ok())
        .unwrap_or(0);
    let mut body_read = received.len() - head_end;
    while body_read < length {
        let mut chunk = [0u8; 4096];
        let read = stream.read(&mut chunk).await?;
        anyhow::ensure!(read > 0, "the connection closed inside a body");
        body_read += read;
    }
    Ok(status)
}

/// Waits until the server closes `stream` (end of file or reset), and says how long after `since`.
async fn closed_by_server(stream: &mut TcpStream, since: Instant) -> anyhow::Result<Duration> {
    let mut chunk = [0u8; 4096];
    timeout(PROMPTLY, async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("the server kept the connection open"))?;
    Ok(since.elapsed())
}

async fn connect(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    Ok(TcpStream::connect(addr).await?)
}

#[tokio::test]
async fn a_half_sent_request_is_closed_after_the_limit_while_others_are_answered() -> anyhow::Result<()> {
    let limit = Duration::from_secs(1);
    let env = TestEnv::start_with(|settings| settings.connection_limits.header_read_timeout = limit).await?;

    let mut slow_clients = Vec::new();
    for _ in 0..300 {
        let mut stream = connect(env.server_addr).await?;
        // Taken before the write: the server starts its clock when it reads the first byte.
        let sending = Instant::now();
        stream.write_all(HALF_A_HEAD.as_bytes()).await?;
        slow_clients.push((stream, sending));
    }
    // Everyone else is answered meanwhile, on new connections and kept-alive ones.
    let client = env.raw();
    for _ in 0..20 {
        let response = client.get(env.url("/health/live")).send().await?;
        assert_eq!(response.status(), 200);
    }
    for (mut stream, sent) in slow_clients {
        let open_for = closed_by_server(&mut stream, sent).await?;
        assert!(
            open_for >= limit,
            "closed after {open_for:?}, before the {limit:?} limit"
        );
    }
    env.finish().await
}

#[tokio::test]
async fn a_kept_alive_connection_is_closed_after_the_idle_timeout_not_the_header_limit() -> anyhow::Result<()>
{
    let (header_limit, idle_limit) = (Duration::from_millis(500), Duration::from_secs(2));
    let env = TestEnv::start_with(|settings| {
        settings.connection_limits.header_read_timeout = header_limit;
        settings.connection_limits.idle_timeout = idle_limit;
    })
    .await?;

    let mut stream = connect(env.server_addr).await?;
    // Taken before the request: the server's idle clock starts at its last byte, which is
    // later, so the time measured from here can only be longer than the server's.
    let asked = Instant::now();
    stream.write_all(A_WHOLE_REQUEST.as_bytes()).await?;
    assert_eq!(timeout(PROMPTLY, read_response(&mut stream)).await??, 200);
    let idle_for = closed_by_server(&mut stream, asked).await?;
    assert!(
        idle_for >= idle_limit,
        "closed after {idle_for:?} idle, before the {idle_limit:?} limit"
    );
    env.finish().await
}

#[tokio::test]
async fn past_the_connection_cap_new_connections_wait_and_are_answered_once_one_closes() -> anyhow::Result<()>
{
    let env = TestEnv::start_with(|settings| settings.connection_limits.max_connections = 2).await?;

    let first = connect(env.server_addr).await?;
    let mut second = connect(env.server_addr).await?;
    timeout(PROMPTLY, async {
        while env.open_connections() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await?;

    // The third connection is made (the kernel's backlog holds it) and sends its request...
    let mut third = connect(env.server_addr).await?;
    third.write_all(A_WHOLE_REQUEST.as_bytes()).await?;
    // ...while the server goes on answering the connections it holds...
    second.write_all(A_WHOLE_REQUEST.as_bytes()).await?;
    assert_eq!(timeout(PROMPTLY, read_response(&mut second)).await??, 200);
    // ...without taking the third.
    assert_eq!(env.open_connections(), 2);
    let mut nothing = [0u8; 1];
    assert!(
        matches!(third.try_read(&mut nothing), Err(error) if error.kind() == std::io::ErrorKind::WouldBlock),
        "the connection past the cap was answered"
    );

    // One closes: the waiting connection is taken and answered.
    drop(first);
    assert_eq!(timeout(PROMPTLY, read_response(&mut third)).await??, 200);
    assert!(env.open_connections() <= 2);
    drop((second, third));
    env.finish().await
}
