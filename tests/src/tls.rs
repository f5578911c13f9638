//! A PostgreSQL and a Redis of a test's own that take TLS connections only, with a server
//! certificate for `localhost` from a CA the test makes. They run on ports of their own from
//! a temporary directory, beside the machine's servers, and are stopped and removed on drop.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::ChildProcess;

/// Marks the servers' directories and process titles, for `scripts/test-leftovers.sh`.
const MARK: &str = "exports-tls-test";

/// A CA, and a certificate it signed for the host name `localhost` (only: a client that
/// connects to `127.0.0.1` must refuse it), in PEM files.
pub struct TestCertificates {
    pub ca_file: PathBuf,
    pub certificate_file: PathBuf,
    pub key_file: PathBuf,
}

impl TestCertificates {
    pub fn write(directory: &Path) -> Result<Self> {
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "exports test CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_certificate = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);

        let server_key = KeyPair::generate()?;
        let mut server = CertificateParams::new(vec!["localhost".to_string()])?;
        server.distinguished_name.push(DnType::CommonName, "localhost");
        server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_certificate = server.signed_by(&server_key, &issuer)?;

        let certificates = Self {
            ca_file: directory.join("ca.pem"),
            certificate_file: directory.join("server.pem"),
            key_file: directory.join("server.key"),
        };
        std::fs::write(&certificates.ca_file, ca_certificate.pem())?;
        std::fs::write(&certificates.certificate_file, server_certificate.pem())?;
        write_private(&certificates.key_file, &server_key.serialize_pem())?;
        Ok(certificates)
    }
}

fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, contents)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// A directory of the server's own, with the test certificates in it, owned by `owner`.
fn server_directory(owner: Option<(u32, u32)>) -> Result<(tempfile::TempDir, TestCertificates)> {
    let directory = tempfile::Builder::new().prefix(MARK).tempdir()?;
    let certificates = TestCertificates::write(directory.path())?;
    if let Some((uid, gid)) = owner {
        for path in [
            directory.path(),
            &certificates.ca_file,
            &certificates.certificate_file,
            &certificates.key_file,
        ] {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
        }
    }
    Ok((directory, certificates))
}

/// A port free at the moment it is asked for. PostgreSQL and Redis cannot pick their TLS
/// port themselves (0 turns the port off), so a start that finds it taken is tried again.
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

const START_ATTEMPTS: usize = 3;

/// A PostgreSQL server that accepts TLS connections from 127.0.0.1 only (`hostssl`; a plain
/// connection is rejected), trusting every user, stopped and removed on drop.
pub struct TlsPostgres {
    pub port: u16,
    pub certificates: TestCertificates,
    server: Option<ChildProcess>,
    _directory: tempfile::TempDir,
}

impl TlsPostgres {
    pub fn start() -> Result<Self> {
        let bin = postgres_bin_dir()?;
        // PostgreSQL refuses to run as root: as root, the machine's `postgres` user runs it.
        let owner = if is_root() {
            Some(user_ids("postgres")?)
        } else {
            None
        };
        let (directory, certificates) = server_directory(owner)?;
        let data = directory.path().join("data");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("--pgdata")
            .arg(&data)
            .args([
                "--username",
                "postgres",
                "--auth",
                "trust",
                "--no-sync",
                "--locale",
                "C",
            ])
            .args(["--encoding", "UTF8"]);
        run_as(&mut initdb, owner);
        let initialized = initdb.output().context("running initdb")?;
        if !initialized.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&initialized.stderr));
        }
        let hba = directory.path().join("pg_hba.conf");
        std::fs::write(
            &hba,
            "hostssl all all 127.0.0.1/32 trust\nhostnossl all all all reject\n",
        )?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&hba, Some(uid), Some(gid))?;
        }
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            // `sh` puts PostgreSQL's log (stderr) on stdout, where the start is read from,
            // then becomes PostgreSQL itself (`exec`), so the child is the server.
            let mut command = Command::new("sh");
            command
                .args(["-c", r#"exec "$0" "$@" 2>&1"#])
                .arg(bin.join("postgres"))
                .arg("-D")
                .arg(&data)
                .args(["-c", &format!("port={port}"), "-c", "listen_addresses=127.0.0.1"])
                .arg("-c")
                .arg(format!("unix_socket_directories={}", directory.path().display()))
                .args(["-c", "ssl=on", "-c", "fsync=off", "-c", "logging_collector=off"])
                .arg("-c")
                .arg(format!(
                    "ssl_cert_file={}",
                    certificates.certificate_file.display()
                ))
                .arg("-c")
                .arg(format!("ssl_key_file={}", certificates.key_file.display()))
                .arg("-c")
                .arg(format!("hba_file={}", hba.display()));
            run_as(&mut command, owner);
            match ChildProcess::start_listening(&mut command, "PostgreSQL", |line| {
                line.contains("database system is ready to accept connections")
                    .then_some(())
            }) {
                Ok((server, ())) => {
                    return Ok(Self {
                        port,
                        certificates,
                        server: Some(server),
                        _directory: directory,
                    })
                }
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.expect("at least one attempt"))
    }

    /// A URL for `database` on this server, as user `postgres`, with `options` (such as
    /// `sslmode=require`).
    pub fn url(&self, host: &str, database: &str, options: &str) -> String {
        format!("postgres://postgres@{host}:{}/{database}?{options}", self.port)
    }
}

impl Drop for TlsPostgres {
    /// A fast shutdown (SIGINT: sessions are ended, the server exits cleanly), waited for
    /// with a generous bound; past it, the process is killed.
    fn drop(&mut self) {
        let Some(mut server) = self.server.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-INT", &server.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if matches!(server.0.try_wait(), Ok(Some(_)) | Err(_)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        server.kill();
    }
}

/// A Redis server with its plain port off and a TLS port on 127.0.0.1 (clients need no
/// certificate of their own), killed and removed on drop (it keeps nothing on disk).
pub struct TlsRedis {
    pub port: u16,
    pub certificates: TestCertificates,
    _server: ChildProcess,
    _directory: tempfile::TempDir,
}

impl TlsRedis {
    pub fn start() -> Result<Self> {
        let (directory, certificates) = server_directory(None)?;
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            let mut command = Command::new("redis-server");
            command
                .args([
                    "--port",
                    "0",
                    "--tls-port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                ])
                .arg("--tls-cert-file")
                .arg(&certificates.certificate_file)
                .arg("--tls-key-file")
                .arg(&certificates.key_file)
                .arg("--tls-ca-cert-file")
                .arg(&certificates.ca_file)
                .args(["--tls-auth-clients", "no", "--save", "", "--appendonly", "no"])
                .args(["--logfile", "", "--daemonize", "no"])
                .args([
                    "--proc-title-template",
                    &format!("{{title}} {MARK} {{listen-addr}}"),
                ])
                .arg("--dir")
                .arg(directory.path());
            match ChildProcess::start_listening(&mut command, "redis-server", |line| {
                line.contains("Ready to accept connections").then_some(())
            }) {
                Ok((server, ())) => {
                    return Ok(Self {
                        port,
                        certificates,
                        _server: server,
                        _directory: directory,
                    })
                }
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.expect("at least one attempt"))
    }

    pub fn url(&self, scheme: &str, host: &str) -> String {
        format!("{scheme}://{host}:{}", self.port)
    }
}

/// PostgreSQL's programs (`initdb`, `postgres`): `EXPORTS_TEST_PG_BIN`, or the newest
/// version under Debian's `/usr/lib/postgresql`.
fn postgres_bin_dir() -> Result<PathBuf> {
    if let Ok(dir) = std::env::var("EXPORTS_TEST_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("looking for PostgreSQL's programs in /usr/lib/postgresql (or set EXPORTS_TEST_PG_BIN)")?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .context("no PostgreSQL with initdb under /usr/lib/postgresql (set EXPORTS_TEST_PG_BIN)")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.trim_ascii() == b"0")
}

fn user_ids(user: &str) -> Result<(u32, u32)> {
    let id = |flag: &str| -> Result<u32> {
        let output = Command::new("id").args([flag, user]).output()?;
        anyhow::ensure!(output.status.success(), "no user {user} on this machine");
        Ok(std::str::from_utf8(&output.stdout)?.trim().parse()?)
    };
    Ok((id("-u")?, id("-g")?))
}

fn run_as(command: &mut Command, owner: Option<(u32, u32)>) {
    use std::os::unix::process::CommandExt;
    if let Some((uid, gid)) = owner {
        command.uid(uid).gid(gid).current_dir("/");
    }
}

/// An HTTPS front for a plain HTTP server (as a load balancer terminating TLS would be),
/// with a certificate for `localhost` from a CA of its own; stopped on drop.
pub struct TlsFront {
    pub port: u16,
    pub certificates: TestCertificates,
    accepting: tokio::task::JoinHandle<()>,
    _directory: tempfile::TempDir,
}

impl TlsFront {
    pub async fn start(upstream: std::net::SocketAddr) -> Result<Self> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let (directory, certificates) = server_directory(None)?;
        let chain =
            CertificateDer::pem_file_iter(&certificates.certificate_file)?.collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_file(&certificates.key_file)?;
        let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let accepting = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let (Ok(mut client), Ok(mut server)) = (
                        acceptor.accept(client).await,
                        tokio::net::TcpStream::connect(upstream).await,
                    ) else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
            }
        });
        Ok(Self {
            port,
            certificates,
            accepting,
            _directory: directory,
        })
    }

    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}
