//! The file's options (spec 1.9, issue 25): chosen columns in the chosen order, JSON Lines, and
//! gzip as the file is written, through the real worker and a real S3-compatible server; every
//! value compared with what PostgreSQL stores, however awkward the text.

use std::io::Read;
use std::time::Duration;

use exports_client::types::{CreateUserExport, ExportCompression, ExportFormat, ExportStatus, UserColumn};
use exports_tests::{create, download, quick_worker, wait_for_export, Setup, TestEnv};
use serde_json::Value;
use uuid::Uuid;

const FINISH: Duration = Duration::from_secs(60);

/// Names no file format may bend: line breaks, tabs, quotes, formula starts, emoji, U+2028,
/// text that looks like escapes of JSON, XML or Excel, and a lone backslash.
const AWKWARD_NAMES: &[&str] = &[
    "line\nbreak and\r\nreturn",
    "\ttab first",
    "\"quoted\", with a comma",
    "=HYPERLINK(\"http://evil.example\",\"x\")",
    "+1-2",
    "@SUM(A1)",
    "emoji 😀 and accents é ñ 中文",
    "separator\u{2028}and\u{2029}paragraph",
    r#"looks escaped: \n \u0041 \"x\" _x0041_ &amp;"#,
    "back\\slash",
    "",
];

/// Users with the awkward names, and the id, email, name, status and created_at of every user
/// straight from SQL, in the files' order.
async fn seed(env: &TestEnv) -> anyhow::Result<Vec<Value>> {
    let db = env.pool.get().await?;
    for (n, name) in AWKWARD_NAMES.iter().enumerate() {
        db.execute(
            "INSERT INTO users (email, name, status) VALUES ($1, $2, 'inactive')",
            &[&format!("awkward{n}@example.com"), name],
        )
        .await?;
    }
    let rows = db
        .query(
            "SELECT id::text, email, name, status, created_at FROM users ORDER BY created_at, id",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            let at: chrono::DateTime<chrono::Utc> = row.get(4);
            serde_json::json!({
                "id": row.get::<_, String>(0),
                "email": row.get::<_, String>(1),
                "name": row.get::<_, String>(2),
                "status": row.get::<_, String>(3),
                "created_at": at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            })
        })
        .collect())
}

fn gunzip(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(bytes).read_to_end(&mut plain)?;
    Ok(plain)
}

/// The CSV cell of a stored value: formula-like text gets its leading `'`.
fn defused(text: &str) -> String {
    match text.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') => format!("'{text}"),
        _ => text.to_string(),
    }
}

async fn finished(client: &exports_client::Client, request: &CreateUserExport) -> anyhow::Result<Uuid> {
    let id = create(client, request).await?;
    let export = wait_for_export(client, &id, FINISH, |e| {
        !matches!(e.status, ExportStatus::Pending | ExportStatus::Processing)
    })
    .await?;
    anyhow::ensure!(export.status == ExportStatus::Done, "{export:?}");
    Ok(id)
}

#[tokio::test]
async fn chosen_columns_json_lines_and_gzip_come_back_exactly_as_stored() -> anyhow::Result<()> {
    let env = TestEnv::start_setup(Setup {
        s3: true,
        worker: Some(quick_worker()),
    })
    .await?;
    env.seed_users(300).await?;
    // Alice is a user too: made before the rows are read.
    let alice = env.writer().await?;
    let client = env.client(&alice);
    let stored = seed(&env).await?;

    // JSON Lines of every column, gzipped: read back with serde_json, every value compared.
    let request = CreateUserExport::new(ExportFormat::Jsonl).with_compression(ExportCompression::Gzip);
    let id = finished(&client, &request).await?;
    let export = client.get_export(&id).await?.into_inner();
    assert_eq!(export.format, ExportFormat::Jsonl);
    assert_eq!(export.compression, ExportCompression::Gzip);
    assert_eq!(
        export.columns,
        [
            UserColumn::Id,
            UserColumn::Email,
            UserColumn::Name,
            UserColumn::Status,
            UserColumn::CreatedAt
        ]
    );
    let (headers, gz) = download(&client, &id).await?;
    assert_eq!(headers["content-type"], "application/gzip");
    assert!(
        headers.get("content-encoding").is_none(),
        "served as the .gz file it is"
    );
    assert_eq!(
        headers["content-disposition"],
        format!("attachment; filename=\"users-{id}.jsonl.gz\"").as_str()
    );
    assert_eq!(
        export.file_size_bytes,
        Some(gz.len() as i64),
        "the stored, compressed size"
    );
    let text = String::from_utf8(gunzip(&gz)?)?;
    assert!(text.ends_with('\n'));
    let users: Vec<Value> = text.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    assert_eq!(users.len(), stored.len());
    for (user, stored) in users.iter().zip(&stored) {
        assert_eq!(user, stored, "every value byte for byte");
    }
    // One object per line: no value's line break or U+2028 splits a line.
    assert_eq!(text.lines().count(), stored.len());
    // The link S3 signed serves the same bytes under the same name and type.
    let link = reqwest::get(export.download_url.as_deref().unwrap()).await?;
    assert_eq!(link.headers()["content-type"], "application/gzip");
    assert_eq!(
        link.headers()["content-disposition"],
        format!("attachment; filename=\"users-{id}.jsonl.gz\"").as_str()
    );
    assert_eq!(link.bytes().await?.as_ref(), gz.as_slice());
    // The client hands back either the .gz file or, asked, what it holds.
    let mut packed = Vec::new();
    let written = client.download_export_to(&id, &mut packed, |_, _| {}).await?;
    assert_eq!((written, &packed), (gz.len() as u64, &gz));
    let mut unpacked = Vec::new();
    let written = client
        .download_export_unpacked_to(&id, &mut unpacked, |_, _| {})
        .await?;
    assert_eq!(
        (written, unpacked.as_slice()),
        (text.len() as u64, text.as_bytes())
    );

    // CSV of two columns in a chosen order, gzipped: the header and the cells follow it.
    let request = CreateUserExport::new(ExportFormat::Csv)
        .with_columns([UserColumn::Name, UserColumn::Email])
        .with_compression(ExportCompression::Gzip);
    let id = finished(&client, &request).await?;
    let (headers, gz) = download(&client, &id).await?;
    assert_eq!(
        headers["content-disposition"],
        format!("attachment; filename=\"users-{id}.csv.gz\"").as_str()
    );
    let plain = gunzip(&gz)?;
    let mut reader = csv::Reader::from_reader(plain.as_slice());
    assert_eq!(reader.headers()?, vec!["name", "email"]);
    let cells: Vec<(String, String)> = reader
        .records()
        .map(|record| record.map(|r| (r[0].to_string(), r[1].to_string())))
        .collect::<Result<_, _>>()?;
    let expected: Vec<(String, String)> = stored
        .iter()
        .map(|user| {
            (
                defused(user["name"].as_str().unwrap()),
                defused(user["email"].as_str().unwrap()),
            )
        })
        .collect();
    assert_eq!(cells, expected, "the formula guard kept, nothing else changed");

    // XLSX of two columns: its header, and every value as stored (a string cell is never a
    // formula; what XML cannot hold is escaped as Excel does and read back).
    let request =
        CreateUserExport::new(ExportFormat::Xlsx).with_columns([UserColumn::Email, UserColumn::Name]);
    let id = finished(&client, &request).await?;
    let (_, xlsx) = download(&client, &id).await?;
    use calamine::Reader as _;
    let mut workbook: calamine::Xlsx<_> = calamine::open_workbook_from_rs(std::io::Cursor::new(xlsx))?;
    let range = workbook.worksheet_range("Sheet1")?;
    let rows: Vec<Vec<String>> = range
        .rows()
        .map(|row| row.iter().map(ToString::to_string).collect())
        .collect();
    assert_eq!(rows[0], ["email", "name"]);
    let expected: Vec<Vec<String>> = stored
        .iter()
        .map(|user| {
            vec![
                user["email"].as_str().unwrap().to_string(),
                user["name"].as_str().unwrap().to_string(),
            ]
        })
        .collect();
    assert_eq!(rows[1..], expected[..]);
    env.finish().await
}

#[tokio::test]
async fn the_mock_writes_the_same_options() -> anyhow::Result<()> {
    use exports_mock::{Clock, ManualClock, MockOptions, RunningMock};
    let clock = ManualClock::default();
    let options = MockOptions {
        clock: Clock::Manual(clock.clone()),
        ..MockOptions::default()
    };
    let mock = RunningMock::start(exports_spec::Spec::bundled(), "127.0.0.1:0".parse()?, options).await?;
    let url = format!("http://{}", mock.local_addr);
    let client = exports_client::connect(&url, "exk_mock", Duration::from_secs(10))?;
    let request = CreateUserExport::new(ExportFormat::Jsonl)
        .with_columns([UserColumn::Status, UserColumn::Email])
        .with_compression(ExportCompression::Gzip);
    let id = create(&client, &request).await?;
    clock.advance(Duration::from_secs(3600));
    let export = client.get_export(&id).await?.into_inner();
    assert_eq!(export.status, ExportStatus::Done);
    assert_eq!(export.columns, [UserColumn::Status, UserColumn::Email]);
    assert_eq!(export.compression, ExportCompression::Gzip);
    let (headers, gz) = download(&client, &id).await?;
    assert_eq!(headers["content-type"], "application/gzip");
    assert_eq!(
        headers["content-disposition"],
        format!("attachment; filename=\"users-{id}.jsonl.gz\"").as_str()
    );
    let text = String::from_utf8(gunzip(&gz)?)?;
    for line in text.lines() {
        assert!(line.starts_with(r#"{"status":""#), "{line}");
        let user: Value = serde_json::from_str(line)?;
        assert_eq!(user.as_object().unwrap().len(), 2, "{line}");
    }
    Ok(())
}
