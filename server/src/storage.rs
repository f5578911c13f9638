//! Where finished files live: an S3 bucket (AWS or any S3-compatible server) in production, a
//! local directory when no bucket is configured. Both go through object_store, so the worker
//! and the API do not care which; only download links differ. An S3 link is presigned by the
//! store; a local file has no server of its own, so its link points at this API's
//! `/downloads/{export_id}` and carries an HMAC over the export id and the expiry.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use clap::Args;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use hmac::{Hmac, KeyInit, Mac};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::buffered::BufWriter;
use object_store::local::LocalFileSystem;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::signer::{SignedUrlOptions, Signer};
use object_store::{
    ClientOptions, MultipartId, ObjectStore, ObjectStoreExt, PutPayload, PutPayloadMut, RetryConfig,
};
use sha2::Sha256;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::model::ExportFile;

#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    /// S3 bucket for finished files; without it, files go to `--storage-dir`.
    #[arg(long, env = "EXPORTS_S3_BUCKET")]
    pub s3_bucket: Option<String>,
    /// S3 endpoint, for S3-compatible servers (default: AWS for the region).
    #[arg(long, env = "EXPORTS_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// Where clients reach S3, for download links, when not at `--s3-endpoint` (a compose
    /// stack's `http://s3:9000` is `http://127.0.0.1:9000` from the host).
    #[arg(long, env = "EXPORTS_S3_PUBLIC_ENDPOINT")]
    pub s3_public_endpoint: Option<String>,
    #[arg(long, env = "EXPORTS_S3_REGION", default_value = DEFAULT_S3_REGION)]
    pub s3_region: String,
    /// Access key id (default: the usual AWS credential chain).
    #[arg(long, env = "EXPORTS_S3_ACCESS_KEY_ID")]
    pub s3_access_key_id: Option<String>,
    /// Secret access key, from the environment only (a flag shows in the process list).
    #[arg(long, env = "EXPORTS_S3_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`), which most S3-compatible servers need.
    #[arg(long, env = "EXPORTS_S3_PATH_STYLE", default_value_t = false)]
    pub s3_path_style: bool,
    /// Sign each uploaded part's SHA-256 too. Off by default, as AWS's SDKs do over HTTPS,
    /// where TLS already protects the body: hashing every byte twice (here and on the server)
    /// was about 3% of the CPU samples of a CSV export under `perf`. Turn it on over plain HTTP.
    #[arg(long, env = "EXPORTS_S3_SIGN_PAYLOAD", default_value_t = false)]
    pub s3_sign_payload: bool,
    /// Directory for finished files when no S3 bucket is configured; an absolute path, so
    /// that where files go never depends on the directory a process was started from.
    #[arg(long, env = "EXPORTS_STORAGE_DIR", default_value_os_t = default_storage_dir())]
    pub storage_dir: PathBuf,
    /// Key of the HMAC on local download links (default: a random key kept in `--storage-dir`,
    /// shared by every process using that directory), from the environment only (a flag shows
    /// in the process list).
    #[arg(long, env = "EXPORTS_DOWNLOAD_SIGNING_KEY", hide_env_values = true)]
    pub download_signing_key: Option<String>,
    /// How long a download link works, in seconds.
    #[arg(long, env = "EXPORTS_DOWNLOAD_LINK_TTL_SECS", default_value_t = DEFAULT_DOWNLOAD_LINK_TTL_SECS)]
    pub download_link_ttl_secs: u64,
}

const DEFAULT_S3_REGION: &str = "us-east-1";
const DEFAULT_DOWNLOAD_LINK_TTL_SECS: u64 = 300;

/// `$XDG_DATA_HOME/exports`, or `~/.local/share/exports` (the XDG default), for a user's
/// own files; `/var/lib/exports` for a service without a home.
fn default_storage_dir() -> PathBuf {
    let data_home = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .filter(|home| home.is_absolute())
                .map(|home| home.join(".local/share"))
        });
    match data_home {
        Some(dir) => dir.join("exports"),
        None => PathBuf::from("/var/lib/exports"),
    }
}

impl StorageArgs {
    /// A local directory and nothing else: what tests and `dev` start from.
    pub fn local(dir: impl Into<PathBuf>) -> Self {
        Self {
            s3_bucket: None,
            s3_endpoint: None,
            s3_public_endpoint: None,
            s3_region: DEFAULT_S3_REGION.into(),
            s3_access_key_id: None,
            s3_secret_access_key: None,
            s3_path_style: false,
            s3_sign_payload: false,
            storage_dir: dir.into(),
            download_signing_key: None,
            download_link_ttl_secs: DEFAULT_DOWNLOAD_LINK_TTL_SECS,
        }
    }
}

#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    links: Links,
    link_ttl: Duration,
}

#[derive(Clone)]
enum Links {
    /// On S3: the client that stores, and the one that presigns links for clients (the same
    /// unless `--s3-public-endpoint` says where clients reach S3).
    Presigned {
        s3: Arc<AmazonS3>,
        public: Arc<AmazonS3>,
    },
    /// Files in a local directory, linked to this API's `/downloads/{id}`.
    Served { key: Arc<[u8]>, dir: PathBuf },
}

pub struct DownloadLink {
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

/// Parts of one upload sent to the store at once.
const MAX_PARTS_IN_FLIGHT: usize = 2;
/// S3's smallest part but the last.
const MIN_PART_BYTES: usize = 5 << 20;

/// Told the id of a multipart upload the store has just opened; an error abandons the upload.
pub type UploadOpened = Box<dyn FnMut(String) -> BoxFuture<'static, Result<()>> + Send>;

/// A file being written to storage.
pub enum FileWriter {
    /// object_store's own writer, for the local directory (whose unfinished uploads
    /// `Storage::clean_export` finds by reading the directory). Its parts are not reported:
    /// a file in a local directory is written again from the start by the next attempt.
    Buffered(BufWriter),
    /// On S3, whose open uploads cannot be listed here (object_store has no
    /// `ListMultipartUploads`, and s3s-fs does not answer it): an upload's id is handed to
    /// `UploadOpened` before its first part goes up, so that it can be aborted by id later,
    /// and its completed parts are reported, so that another attempt can go on from them.
    Multipart(MultipartWriter),
}

/// The parts of a multipart upload completed so far, from the first without a gap: what a
/// writer reports, and what another attempt goes on from (`Storage::resume_writer`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartsDone {
    pub upload_id: String,
    /// Each part's entity tag, in the file's order (part number `i + 1`).
    pub parts: Vec<String>,
    /// The file's bytes in those parts.
    pub bytes: u64,
}

/// Continuing an earlier attempt's upload failed in a way that starting the file over may
/// mend: the upload is gone (aborted, expired by the store), or the completed object is not
/// the parts recorded (a stale attempt's late part replaced one). The worker starts over when
/// the store otherwise answers (`Storage::check`).
#[derive(Debug, thiserror::Error)]
#[error("the upload resumed from an earlier attempt cannot be used")]
pub struct ResumedUploadFailed(#[source] Box<dyn std::error::Error + Send + Sync>);

pub struct MultipartWriter {
    s3: Arc<AmazonS3>,
    key: Path,
    /// Parts are sent once this much is written (the last may be smaller), each a little
    /// larger: the chunks written are sent as they are, never copied.
    part_bytes: usize,
    buffer: PutPayloadMut,
    upload: Option<MultipartId>,
    /// By part index; `None` while the part is in flight.
    parts: Vec<Option<PartId>>,
    /// Where each part ends in the file.
    part_ends: Vec<u64>,
    /// Bytes in the parts sent so far.
    sent: u64,
    /// Parts reported as done (`PartsDone`) so far.
    reported: usize,
    /// Going on with an earlier attempt's upload: until one of this attempt's parts is
    /// accepted, a failure may mean the upload is gone (`ResumedUploadFailed`).
    resumed: bool,
    confirmed: bool,
    in_flight: JoinSet<(usize, object_store::Result<PartId>)>,
    opened: UploadOpened,
}

impl FileWriter {
    /// Adds `bytes` to the file; returns the parts done when more of them are.
    pub async fn put(&mut self, bytes: Bytes) -> Result<Option<PartsDone>> {
        match self {
            Self::Buffered(writer) => (writer.put(bytes).await)
                .map(|()| None)
                .map_err(|error| storage_failure("uploading the file", error)),
            Self::Multipart(writer) => writer.put(bytes).await,
        }
    }

    /// Sends what is written as a part when it is large enough for one that is not the last
    /// (S3's minimum), waits for the parts in flight, and returns all the parts done (not
    /// only those done since the last report, whose recording may have been cut short).
    pub async fn settle(&mut self) -> Result<Option<PartsDone>> {
        match self {
            Self::Buffered(_) => Ok(None),
            Self::Multipart(writer) => {
                if writer.upload.is_some() && writer.buffer.content_length() >= MIN_PART_BYTES {
                    let part = std::mem::take(&mut writer.buffer).freeze();
                    writer.send_part(part).await?;
                }
                while !writer.in_flight.is_empty() {
                    writer.join_part().await?;
                }
                writer.reported = writer.done_count();
                Ok(writer.done(writer.reported))
            }
        }
    }

    /// Completes the file: the last part and the store's completion of the upload.
    pub async fn complete(&mut self) -> Result<()> {
        match self {
            Self::Buffered(writer) => {
                use tokio::io::AsyncWriteExt;
                (writer.shutdown().await).map_err(|error| storage_failure("completing the upload", error))
            }
            Self::Multipart(writer) => writer.complete().await,
        }
    }

    /// Abandons the file: nothing of it stays in the store.
    pub async fn abort(&mut self) -> Result<()> {
        match self {
            Self::Buffered(writer) => {
                (writer.abort().await).map_err(|error| storage_failure("aborting the upload", error))
            }
            Self::Multipart(writer) => writer.abort().await,
        }
    }

    /// The multipart upload's id, once the store has opened it.
    pub fn upload_id(&self) -> Option<String> {
        match self {
            Self::Buffered(_) => None,
            Self::Multipart(writer) => writer.upload.clone(),
        }
    }

    /// Stops sending parts and leaves the upload open, for another attempt to go on with.
    pub async fn leave_open(&mut self) {
        if let Self::Multipart(writer) = self {
            writer.in_flight.abort_all();
            while writer.in_flight.join_next().await.is_some() {}
        }
    }
}

impl MultipartWriter {
    fn new(s3: Arc<AmazonS3>, key: &Path, part_bytes: usize, opened: UploadOpened) -> Self {
        Self {
            s3,
            key: key.clone(),
            part_bytes,
            buffer: PutPayloadMut::new(),
            upload: None,
            parts: Vec::new(),
            part_ends: Vec::new(),
            sent: 0,
            reported: 0,
            resumed: false,
            confirmed: false,
            in_flight: JoinSet::new(),
            opened,
        }
    }

    async fn put(&mut self, bytes: Bytes) -> Result<Option<PartsDone>> {
        self.buffer.push(bytes);
        // Parts done since the last chunk are reported now, not when the next part waits for
        // them: a checkpoint is recorded a chunk after its part is done.
        while let Some(joined) = self.in_flight.try_join_next() {
            self.joined(joined)?;
        }
        if self.buffer.content_length() >= self.part_bytes {
            let part = std::mem::take(&mut self.buffer).freeze();
            self.send_part(part).await?;
        }
        Ok(self.newly_done())
    }

    async fn send_part(&mut self, part: PutPayload) -> Result<()> {
        let upload = match &self.upload {
            Some(upload) => upload.clone(),
            None => {
                let upload = (self.s3.create_multipart(&self.key).await)
                    .map_err(|error| storage_failure("starting the upload", error))?;
                self.upload = Some(upload.clone());
                (self.opened)(upload.clone()).await?;
                upload
            }
        };
        while self.in_flight.len() >= MAX_PARTS_IN_FLIGHT {
            self.join_part().await?;
        }
        let (s3, key, index) = (self.s3.clone(), self.key.clone(), self.parts.len());
        self.sent += part.content_length() as u64;
        self.parts.push(None);
        self.part_ends.push(self.sent);
        self.in_flight.spawn(async move {
            let part = s3.put_part(&key, &upload, index, part).await;
            (index, part)
        });
        Ok(())
    }

    async fn join_part(&mut self) -> Result<()> {
        match self.in_flight.join_next().await {
            Some(joined) => self.joined(joined),
            None => Ok(()),
        }
    }

    fn joined(
        &mut self,
        joined: Result<(usize, object_store::Result<PartId>), tokio::task::JoinError>,
    ) -> Result<()> {
        let (index, part) = joined?;
        let part = part.map_err(|error| self.failure("uploading the file", error))?;
        self.parts[index] = Some(part);
        self.confirmed = true;
        Ok(())
    }

    /// A storage failure, told apart when it may mean that the resumed upload is gone.
    fn failure(&self, doing: &'static str, error: object_store::Error) -> anyhow::Error {
        let failure = storage_failure(doing, error);
        match self.resumed && !self.confirmed {
            true => ResumedUploadFailed(failure.into()).into(),
            false => failure,
        }
    }

    /// How many parts are done from the first without a gap.
    fn done_count(&self) -> usize {
        self.parts.iter().take_while(|part| part.is_some()).count()
    }

    /// The parts done from the first without a gap, when there are more than last reported.
    fn newly_done(&mut self) -> Option<PartsDone> {
        let done = self.done_count();
        if done <= self.reported {
            return None;
        }
        self.reported = done;
        self.done(done)
    }

    /// The first `count` parts, all done.
    fn done(&self, count: usize) -> Option<PartsDone> {
        if count == 0 {
            return None;
        }
        Some(PartsDone {
            upload_id: self.upload.clone()?,
            parts: self.parts[..count]
                .iter()
                .map(|part| part.as_ref().expect("done").content_id.clone())
                .collect(),
            bytes: self.part_ends[count - 1],
        })
    }

    async fn complete(&mut self) -> Result<()> {
        let rest = std::mem::take(&mut self.buffer).freeze();
        if self.upload.is_none() {
            // Smaller than a part: one PUT, no upload to open.
            return (self.s3.put(&self.key, rest).await)
                .map(drop)
                .map_err(|error| storage_failure("uploading the file", error));
        }
        if rest.content_length() > 0 {
            self.send_part(rest).await?;
        }
        while !self.in_flight.is_empty() {
            self.join_part().await?;
        }
        let parts: Vec<PartId> = self
            .parts
            .drain(..)
            .map(|part| part.expect("every part joined"))
            .collect();
        let expected = self.resumed.then(|| multipart_etag(&parts)).flatten();
        let upload = self.upload.as_ref().expect("opened above");
        let completed = (self.s3.complete_multipart(&self.key, upload, parts).await).map_err(|error| {
            let failure = storage_failure("completing the upload", error);
            match self.resumed {
                true => anyhow::Error::from(ResumedUploadFailed(failure.into())),
                false => failure,
            }
        })?;
        self.upload = None;
        // S3 refuses to complete an upload whose parts are not the entity tags given; stores
        // that do not check (s3s-fs) still tag the object from the parts they joined.
        let stored = completed.e_tag.as_deref().map(unquoted);
        if let (Some(expected), Some(stored)) = (expected, stored) {
            if !expected.eq_ignore_ascii_case(stored) {
                let _ = self.s3.delete(&self.key).await;
                return Err(ResumedUploadFailed(
                    format!(
                        "the stored file is not the parts recorded (entity tag {stored}, not \
                         {expected}): a part was replaced, by a stale attempt's late upload"
                    )
                    .into(),
                )
                .into());
            }
        }
        Ok(())
    }

    async fn abort(&mut self) -> Result<()> {
        self.in_flight.abort_all();
        while self.in_flight.join_next().await.is_some() {}
        match self.upload.take() {
            Some(upload) => (self.s3.abort_multipart(&self.key, &upload).await)
                .map_err(|error| storage_failure("aborting the upload", error)),
            None => Ok(()),
        }
    }
}

fn unquoted(tag: &str) -> &str {
    tag.trim_matches('"')
}

/// The entity tag S3 gives an object completed from these parts: the MD5 of their MD5s, then
/// `-` and their count. None when a part's tag is not an MD5 (an object encrypted with KMS,
/// say): the check is then left to the store.
fn multipart_etag(parts: &[PartId]) -> Option<String> {
    use md5::Digest;
    let mut md5s = md5::Md5::new();
    for part in parts {
        let digest = hex::decode(unquoted(&part.content_id)).ok()?;
        if digest.len() != 16 {
            return None;
        }
        md5s.update(&digest);
    }
    Some(format!("{}-{}", hex::encode(md5s.finalize()), parts.len()))
}

/// A failure of the file storage, as opposed to the database or the file's own writing: the
/// worker tells users which it was by this type.
#[derive(Debug, thiserror::Error)]
#[error("{doing}")]
pub struct StorageFailure {
    doing: &'static str,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

pub fn storage_failure(
    doing: &'static str,
    source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> anyhow::Error {
    StorageFailure {
        doing,
        source: source.into(),
    }
    .into()
}

/// Why a served download link is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum LinkProblem {
    BadSignature,
    Expired,
}

type HmacSha256 = Hmac<Sha256>;

impl Storage {
    pub fn open(args: &StorageArgs) -> Result<Self> {
        let link_ttl = Duration::from_secs(args.download_link_ttl_secs.max(1));
        if let Some(bucket) = &args.s3_bucket {
            let mut builder = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_region(&args.s3_region)
                .with_virtual_hosted_style_request(!args.s3_path_style)
                .with_unsigned_payload(!args.s3_sign_payload)
                // object_store retries each request; past this budget the worker's own retry
                // of the whole attempt (with backoff) takes over.
                .with_retry(RetryConfig {
                    max_retries: 3,
                    retry_timeout: Duration::from_secs(20),
                    ..Default::default()
                })
                .with_client_options(
                    ClientOptions::new()
                        .with_connect_timeout(Duration::from_secs(5))
                        .with_timeout(Duration::from_secs(60)),
                );
            if let Some(id) = &args.s3_access_key_id {
                builder = builder.with_access_key_id(id);
            }
            if let Some(secret) = &args.s3_secret_access_key {
                builder = builder.with_secret_access_key(secret);
            }
            let at = |builder: AmazonS3Builder, endpoint: &str| {
                builder
                    .with_endpoint(endpoint)
                    .with_allow_http(endpoint.starts_with("http://"))
            };
            let s3 = match &args.s3_endpoint {
                Some(endpoint) => at(builder.clone(), endpoint),
                None => builder.clone(),
            };
            let s3 = Arc::new(s3.build().context("configuring S3")?);
            let public = match &args.s3_public_endpoint {
                Some(endpoint) => Arc::new(
                    at(builder, endpoint)
                        .build()
                        .context("configuring S3's public endpoint")?,
                ),
                None => s3.clone(),
            };
            return Ok(Self {
                store: s3.clone(),
                links: Links::Presigned { s3, public },
                link_ttl,
            });
        }
        anyhow::ensure!(
            args.storage_dir.is_absolute(),
            "--storage-dir must be an absolute path, not {}",
            args.storage_dir.display()
        );
        std::fs::create_dir_all(&args.storage_dir)
            .with_context(|| format!("creating {}", args.storage_dir.display()))?;
        let key: Vec<u8> = match &args.download_signing_key {
            Some(key) => {
                anyhow::ensure!(
                    key.len() >= MIN_SIGNING_KEY_BYTES,
                    "EXPORTS_DOWNLOAD_SIGNING_KEY must be at least {MIN_SIGNING_KEY_BYTES} bytes long, not {}",
                    key.len()
                );
                key.as_bytes().to_vec()
            }
            None => local_signing_key(&args.storage_dir)?,
        };
        let store = LocalFileSystem::new_with_prefix(&args.storage_dir)
            .with_context(|| format!("opening {}", args.storage_dir.display()))?;
        Ok(Self {
            store: Arc::new(store),
            links: Links::Served {
                key: key.into(),
                dir: args.storage_dir.clone(),
            },
            link_ttl,
        })
    }

    /// Whether the store answers a listing of the exports' prefix (a missing bucket, refused
    /// credentials or an unreachable endpoint do not).
    pub async fn check(&self) -> Result<()> {
        self.store
            .list_with_delimiter(Some(&Path::from("exports")))
            .await
            .map(|_| ())
            .map_err(|error| storage_failure("listing the store", error))
    }

    /// Whether files are uploaded in parts that another attempt can go on from (S3), rather
    /// than to a local directory (object_store's local writer cannot be resumed).
    pub fn keeps_parts(&self) -> bool {
        matches!(self.links, Links::Presigned { .. })
    }

    pub fn describe(&self) -> &'static str {
        match self.links {
            Links::Presigned { .. } => "s3",
            Links::Served { .. } => "local directory",
        }
    }

    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// Everything stored for one export lies under this prefix: each attempt's object, and
    /// the parts of its upload while it is under way.
    pub fn export_prefix(export_id: Uuid) -> Path {
        Path::from(format!("exports/{export_id}"))
    }

    /// Each attempt writes its own object: an attempt that lost its lease can never overwrite
    /// the file of the attempt that finished, and deletes what it wrote.
    pub fn object_key(export_id: Uuid, attempt: i32, file: &ExportFile) -> Path {
        Self::export_prefix(export_id).join(format!("attempt-{attempt}.{}", file.file_extension()))
    }

    /// A writer that uploads in parts of `part_bytes` as it fills (a single PUT when the file
    /// is smaller); `abort` it on failure. On S3, `opened` is told the id of the multipart
    /// upload before its first part goes up.
    pub fn writer(&self, key: &Path, part_bytes: usize, opened: UploadOpened) -> FileWriter {
        match &self.links {
            Links::Presigned { s3, .. } => {
                FileWriter::Multipart(MultipartWriter::new(s3.clone(), key, part_bytes, opened))
            }
            Links::Served { .. } => FileWriter::Buffered(
                BufWriter::with_capacity(self.store.clone(), key.clone(), part_bytes)
                    .with_max_concurrency(MAX_PARTS_IN_FLIGHT),
            ),
        }
    }

    /// A writer that goes on with the upload of `key` an earlier attempt began, after its
    /// completed `parts`; None in a local directory, whose files are written from the start.
    pub fn resume_writer(&self, key: &Path, part_bytes: usize, upload: PartsDone) -> Option<FileWriter> {
        let Links::Presigned { s3, .. } = &self.links else {
            return None;
        };
        // The upload is open already, so nothing is told when it opens.
        let opened: UploadOpened = Box::new(|_| Box::pin(async { Ok(()) }));
        let mut writer = MultipartWriter::new(s3.clone(), key, part_bytes, opened);
        writer.upload = Some(upload.upload_id);
        // Where the earlier parts end is not known, nor needed: they are reported already.
        writer.part_ends = vec![upload.bytes; upload.parts.len()];
        writer.reported = upload.parts.len();
        writer.parts = (upload.parts.into_iter())
            .map(|content_id| Some(PartId { content_id }))
            .collect();
        writer.sent = upload.bytes;
        writer.resumed = true;
        Some(FileWriter::Multipart(writer))
    }

    /// Aborts the multipart upload `id` of `key` (on S3); one already gone is not an error.
    pub async fn abort_upload(&self, key: &str, id: &str) -> Result<()> {
        let Links::Presigned { s3, .. } = &self.links else {
            return Ok(());
        };
        match s3.abort_multipart(&Path::from(key), &id.to_string()).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(storage_failure("aborting an upload", error)),
        }
    }

    /// Removes everything stored under the export's prefix but the object `keep`: finished
    /// objects of other attempts, the open multipart upload `upload` (`(key, upload id)`, on
    /// S3, where open uploads are not listed) and, in a local directory, the partial files of
    /// unfinished uploads.
    pub async fn clean_export(
        &self,
        export_id: Uuid,
        keep: Option<&str>,
        upload: Option<(&str, &str)>,
    ) -> Result<()> {
        match &self.links {
            Links::Presigned { .. } => {
                if let Some((key, id)) = upload {
                    self.abort_upload(key, id).await?;
                }
                let prefix = Self::export_prefix(export_id);
                let objects: Vec<Path> = self
                    .store
                    .list(Some(&prefix))
                    .map_ok(|meta| meta.location)
                    .try_collect()
                    .await
                    .map_err(|error| storage_failure("listing an export's objects", error))?;
                for object in objects.iter().filter(|object| Some(object.as_ref()) != keep) {
                    self.delete(object.as_ref()).await?;
                }
            }
            // The local store keeps an unfinished upload as `<key>#<n>` beside its objects,
            // which its own listing leaves out: the directory is read instead.
            Links::Served { dir, .. } => {
                let folder = dir.join(Self::export_prefix(export_id).as_ref());
                let keep = keep.map(|key| dir.join(key));
                let entries = match std::fs::read_dir(&folder) {
                    Ok(entries) => entries,
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                    Err(error) => return Err(storage_failure("listing an export's files", error)),
                };
                for entry in entries {
                    let path = entry
                        .map_err(|error| storage_failure("listing an export's files", error))?
                        .path();
                    if Some(&path) != keep.as_ref() {
                        match std::fs::remove_file(&path) {
                            Ok(()) => {}
                            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                            Err(error) => return Err(storage_failure("deleting an export's file", error)),
                        }
                    }
                }
                if keep.is_none() {
                    // Gone, or not empty because an attempt is writing there this instant.
                    let _ = std::fs::remove_dir(&folder);
                }
            }
        }
        Ok(())
    }

    pub async fn read(&self, key: &str) -> Result<BoxStream<'static, object_store::Result<Bytes>>> {
        let result = self.store.get(&Path::from(key)).await?;
        Ok(result.into_stream().boxed())
    }

    /// Deletes an object; one already gone is not an error.
    pub async fn delete(&self, key: &str) -> Result<()> {
        match self.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// A short-lived link to the file, minted now. `public_url` is where this API is reached,
    /// for links to local files.
    pub async fn download_link(
        &self,
        export_id: Uuid,
        key: &str,
        file: &ExportFile,
        public_url: &str,
    ) -> Result<DownloadLink> {
        let expires_at = Utc::now() + self.link_ttl;
        let url = match &self.links {
            Links::Presigned { public, .. } => {
                let options = SignedUrlOptions::new().with_query([
                    (
                        "response-content-disposition",
                        file.content_disposition(export_id),
                    ),
                    ("response-content-type", file.content_type().to_string()),
                ]);
                public
                    .signed_url_opts(http::Method::GET, &Path::from(key), self.link_ttl, &options)
                    .await
                    .context("presigning the download link")?
                    .to_string()
            }
            Links::Served { key, .. } => served_link(key, export_id, public_url, expires_at),
        };
        Ok(DownloadLink { url, expires_at })
    }

    /// A link to this API's `/downloads/{id}` for a locally stored file, valid until
    /// `expires_at` (which may be past: tests mint expired links with it). None on S3, whose
    /// links are presigned.
    pub fn served_link(
        &self,
        export_id: Uuid,
        public_url: &str,
        expires_at: DateTime<Utc>,
    ) -> Option<String> {
        match &self.links {
            Links::Served { key, .. } => Some(served_link(key, export_id, public_url, expires_at)),
            Links::Presigned { .. } => None,
        }
    }

    /// Checks a link minted by `download_link` for a local file.
    pub fn verify_served_link(
        &self,
        export_id: Uuid,
        expires: i64,
        signature: &str,
        now: DateTime<Utc>,
    ) -> Result<(), LinkProblem> {
        let Links::Served { key, .. } = &self.links else {
            return Err(LinkProblem::BadSignature);
        };
        let signature = hex::decode(signature).map_err(|_| LinkProblem::BadSignature)?;
        sign(key, export_id, expires)
            .verify_slice(&signature)
            .map_err(|_| LinkProblem::BadSignature)?;
        if now.timestamp() > expires {
            return Err(LinkProblem::Expired);
        }
        Ok(())
    }
}

fn served_link(key: &[u8], export_id: Uuid, public_url: &str, expires_at: DateTime<Utc>) -> String {
    let expires = expires_at.timestamp();
    let signature = hex::encode(sign(key, export_id, expires).finalize().into_bytes());
    format!(
        "{}/downloads/{export_id}?expires={expires}&signature={signature}",
        public_url.trim_end_matches('/')
    )
}

fn sign(key: &[u8], export_id: Uuid, expires: i64) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(format!("{export_id}:{expires}").as_bytes());
    mac
}

/// The shortest `EXPORTS_DOWNLOAD_SIGNING_KEY` accepted: HMAC-SHA256's own output size, the key
/// length RFC 2104 recommends as a minimum.
const MIN_SIGNING_KEY_BYTES: usize = 32;

/// The signing key kept beside the files (outside the `exports/` prefix), created on first use
/// so that every process sharing the directory mints and accepts the same links.
fn local_signing_key(dir: &std::path::Path) -> Result<Vec<u8>> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let path = dir.join(".download-signing-key");
    let fresh = hex::encode(rand::random::<[u8; 32]>());
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(mut file) => {
            file.write_all(fresh.as_bytes())?;
            Ok(fresh.into_bytes())
        }
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
            anyhow::ensure!(
                mode & 0o077 == 0,
                "{} can be read by other users (mode {mode:o}), who could mint download links with \
                 it: delete it (a new key is made) or `chmod 600` it",
                path.display()
            );
            // Another process may be writing it this instant: wait for the whole key.
            for _ in 0..50 {
                let key = std::fs::read(&path)?;
                if key.len() == fresh.len() {
                    return Ok(key);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            anyhow::bail!("{} is not a signing key", path.display())
        }
        Err(error) => Err(error).with_context(|| format!("creating {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_links_verify_only_unchanged_and_unexpired() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(&StorageArgs::local(dir.path())).unwrap();
        let id = Uuid::new_v4();
        let key = match &storage.links {
            Links::Served { key, .. } => key.clone(),
            Links::Presigned { .. } => unreachable!(),
        };
        let now = Utc::now();
        let expires = now.timestamp() + 60;
        let good = hex::encode(sign(&key, id, expires).finalize().into_bytes());
        assert_eq!(storage.verify_served_link(id, expires, &good, now), Ok(()));
        assert_eq!(
            storage.verify_served_link(id, expires + 1, &good, now),
            Err(LinkProblem::BadSignature)
        );
        assert_eq!(
            storage.verify_served_link(Uuid::new_v4(), expires, &good, now),
            Err(LinkProblem::BadSignature)
        );
        assert_eq!(
            storage.verify_served_link(id, expires, "zz", now),
            Err(LinkProblem::BadSignature)
        );
        assert_eq!(
            storage.verify_served_link(id, expires, &good, now + Duration::from_secs(61)),
            Err(LinkProblem::Expired)
        );
        // A second process on the same directory shares the key.
        let again = Storage::open(&StorageArgs::local(dir.path())).unwrap();
        assert_eq!(again.verify_served_link(id, expires, &good, now), Ok(()));
    }

    #[test]
    fn a_relative_directory_a_short_key_and_a_key_others_can_read_are_refused() {
        let relative = Storage::open(&StorageArgs::local("data/exports")).err().unwrap();
        assert!(relative.to_string().contains("absolute"), "{relative}");

        let dir = tempfile::tempdir().unwrap();
        let with_key = |key: &str| StorageArgs {
            download_signing_key: Some(key.into()),
            ..StorageArgs::local(dir.path())
        };
        let short = Storage::open(&with_key(&"k".repeat(31))).err().unwrap();
        assert!(short.to_string().contains("at least 32 bytes"), "{short}");
        assert!(Storage::open(&with_key(&"k".repeat(32))).is_ok());

        Storage::open(&StorageArgs::local(dir.path())).unwrap();
        let key_file = dir.path().join(".download-signing-key");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let readable = Storage::open(&StorageArgs::local(dir.path())).err().unwrap();
        assert!(
            readable.to_string().contains("can be read by other users"),
            "{readable}"
        );
    }
}
