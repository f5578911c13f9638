//! Exports finishing for real: the worker streams the matching users out of PostgreSQL into
//! CSV, XLSX or JSON Lines, stores the file (a local directory, or a real S3-compatible server), and the
//! API hands it out, through `downloadExport` and through short-lived links.

use std::io::Cursor;
use std::time::Duration;

use calamine::{Data, Reader, Xlsx};
use chrono::{DateTime, NaiveDate, Utc};
use exports_client::types::{CreateUserExport, ExportFormat, ExportStatus, UserExportFilters, UserStatus};
use exports_tests::{
    create, download, error_of, quick_worker, stored_objects, wait_for_export, Setup, TestEnv,
};
use uuid::Uuid;

const FINISH: Duration = Duration::from_secs(60);

fn request(format: ExportFormat, filters: Option<UserExportFilters>) -> CreateUserExport {
    CreateUserExport {
        format,
        filters,
        columns: None,
        compression: None,
    }
}

/// A row as the files carry it: id, email, name, status, created_at.
type Row = (String, String, String, String, DateTime<Utc>);

/// The users an export with these filters must contain, in the file's order, straight from SQL.
async fn expected_rows(
    env: &TestEnv,
    created_after: Option<NaiveDate>,
    status: Option<&str>,
) -> anyhow::Result<Vec<Row>> {
    let after = created_after.map(|day| day.and_hms_opt(0, 0, 0).unwrap().and_utc());
    let rows = env
        .pool
        .get()
        .await?
        .query(
            "SELECT id::text, email, name, status, created_at FROM users
             WHERE ($1::timestamptz IS NULL OR created_at >= $1) AND ($2::text IS NULL OR status = $2)
             ORDER BY created_at, id",
            &[&after, &status],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4)))
        .collect())
}

fn parse_csv(bytes: &[u8]) -> anyhow::Result<(Vec<String>, Vec<Row>)> {
    let mut reader = csv::Reader::from_reader(bytes);
    let header = reader.headers()?.iter().map(str::to_string).collect();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record?;
        let at = DateTime::parse_from_rfc3339(&record[4])?.to_utc();
        rows.push((
            record[0].into(),
            record[1].into(),
            record[2].into(),
            record[3].into(),
            at,
        ));
    }
    Ok((header, rows))
}

/// The rows of a JSON Lines file, each line an object of the five columns in order.
fn parse_jsonl(bytes: &[u8]) -> anyhow::Result<Vec<Row>> {
    let text = std::str::from_utf8(bytes)?;
    anyhow::ensure!(text.ends_with('\n'), "every line ends in a line feed");
    let mut rows = Vec::new();
    for line in text.lines() {
        let user: serde_json::Value = serde_json::from_str(line)?;
        let text = |column: &str| -> anyhow::Result<String> {
            Ok(user[column]
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("no {column} in {line}"))?
                .to_string())
        };
        anyhow::ensure!(line.starts_with(r#"{"id":""#), "the columns' order: {line}");
        let at = DateTime::parse_from_rfc3339(&text("created_at")?)?.to_utc();
        rows.push((text("id")?, text("email")?, text("name")?, text("status")?, at));
    }
    Ok(rows)
}

/// Every sheet's rows after its header, in order; timestamps to the second (Excel's precision
/// is finer than a second but not a microsecond).
fn parse_xlsx(bytes: &[u8]) -> anyhow::Result<(Vec<Vec<String>>, Vec<Row>)> {
    let mut workbook: Xlsx<_> = calamine::open_workbook_from_rs(Cursor::new(bytes.to_vec()))?;
    let mut headers = Vec::new();
    let mut rows = Vec::new();
    for name in workbook.sheet_names() {
        let range = workbook.worksheet_range(&name)?;
        let mut sheet_rows = range.rows();
        headers.push(
            sheet_rows
                .next()
                .unwrap()
                .iter()
                .map(|cell| cell.to_string())
                .collect(),
        );
        for cells in sheet_rows {
            let at = match &cells[4] {
                Data::DateTime(at) => at.as_datetime().unwrap().and_utc(),
                other => anyhow::bail!("created_at is not a date-time cell: {other:?}"),
            };
            rows.push((
                cells[0].to_string(),
                cells[1].to_string(),
                cells[2].to_string(),
                cells[3].to_string(),
                at,
            ));
        }
    }
    Ok((headers, rows))
}

fn to_seconds(rows: &[Row]) -> Vec<Row> {
    rows.iter()
        .map(|(id, email, name, status, at)| {
            let second = DateTime::from_timestamp(
                at.timestamp() + i64::from(at.timestamp_subsec_micros() >= 500_000),
                0,
            )
            .unwrap();
            (id.clone(), email.clone(), name.clone(), status.clone(), second)
        })
        .collect()
}

/// Cells of the first sheet whose format has Excel's quote prefix (`quotePrefix="1"` in
/// styles.xml, referred to by a cell's `s` attribute in the sheet).
fn quote_prefixed_cells(xlsx: &[u8]) -> anyhow::Result<usize> {
    use std::io::Read;
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(xlsx))?;
    let mut part = |name: &str| -> anyhow::Result<String> {
        let mut text = String::new();
        archive.by_name(name)?.read_to_string(&mut text)?;
        Ok(text)
    };
    let (styles, sheet) = (part("xl/styles.xml")?, part("xl/worksheets/sheet1.xml")?);
    let cell_formats = styles
        .split("<cellXfs")
        .nth(1)
        .and_then(|rest| rest.split("</cellXfs>").next())
        .ok_or_else(|| anyhow::anyhow!("no cellXfs in styles.xml"))?;
    let quoted_styles: Vec<usize> = cell_formats
        .split("<xf ")
        .skip(1)
        .enumerate()
        .filter(|(_, xf)| {
            xf.split('>')
                .next()
                .is_some_and(|attributes| attributes.contains("quotePrefix=\"1\""))
        })
        .map(|(index, _)| index)
        .collect();
    anyhow::ensure!(!quoted_styles.is_empty(), "no quote-prefix format in styles.xml");
    Ok(quoted_styles
        .iter()
        .map(|style| sheet.matches(&format!(" s=\"{style}\"")).count())
        .sum())
}

fn neutralised(rows: &[Row]) -> Vec<Row> {
    let cell = |text: &String| match text.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') => format!("'{text}"),
        _ => text.clone(),
    };
    rows.iter()
        .map(|(id, email, name, status, at)| (id.clone(), cell(email), cell(name), status.clone(), *at))
        .collect()
}

#[tokio::test]
async fn every_format_holds_exactly_the_matching_users() -> anyhow::Result<()> {
    let env = TestEnv::start_setup(Setup {
        worker: Some(quick_worker()),
        ..Setup::default()
    })
    .await?;
    // 3,000 users over the 50 hours before noon on 10 March 2025: the filter from 9 March
    // takes the 36 hours since midnight (whatever the time of day the test runs at).
    let newest = DateTime::parse_from_rfc3339("2025-03-10T12:00:00Z")?.to_utc();
    env.seed_users_until(3000, newest).await?;
    let alice = env.writer().await?;
    let client = env.client(&alice);
    let after = NaiveDate::from_ymd_opt(2025, 3, 9).unwrap();
    let filters = UserExportFilters {
        created_after: Some(after),
        status: Some(UserStatus::Active),
    };
    let expected = expected_rows(&env, Some(after), Some("active")).await?;
    // Users 1 to 2,160 (the one at midnight included), but every fourth is inactive; and alice.
    assert_eq!(expected.len(), 2160 - 540 + 1);

    for format in [ExportFormat::Csv, ExportFormat::Xlsx, ExportFormat::Jsonl] {
        let id = create(&client, &request(format, Some(filters.clone()))).await?;
        let export = wait_for_export(&client, &id, FINISH, |e| {
            e.status != ExportStatus::Pending && e.status != ExportStatus::Processing
        })
        .await?;
        assert_eq!(export.status, ExportStatus::Done, "{export:?}");
        assert_eq!(export.progress.rows_written, expected.len() as i64);
        assert_eq!(export.progress.rows_total, expected.len() as i64);
        assert_eq!(export.progress.percent, 100.0);
        assert!(export.expires_at.unwrap() > Utc::now() + chrono::Duration::minutes(59));
        let link_expiry = export.download_expires_at.unwrap();
        assert!(link_expiry > Utc::now() && link_expiry < Utc::now() + chrono::Duration::minutes(6));

        let (headers, body) = download(&client, &id).await?;
        assert_eq!(export.file_size_bytes, Some(body.len() as i64));
        let (extension, media_type) = match format {
            ExportFormat::Csv => ("csv", "text/csv; charset=utf-8"),
            ExportFormat::Xlsx => (
                "xlsx",
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            ),
            ExportFormat::Jsonl => ("jsonl", "application/x-ndjson"),
        };
        assert_eq!(headers["content-type"], media_type);
        assert_eq!(
            headers["content-disposition"],
            format!("attachment; filename=\"users-{id}.{extension}\"").as_str()
        );
        // The link (through the server's own signed endpoint here) serves the same file, no key.
        let by_link = reqwest::get(export.download_url.as_deref().unwrap()).await?;
        assert_eq!(by_link.status(), 200);
        assert_eq!(by_link.bytes().await?.as_ref(), body.as_slice());

        match format {
            ExportFormat::Csv => {
                let (header, rows) = parse_csv(&body)?;
                assert_eq!(header, ["id", "email", "name", "status", "created_at"]);
                assert_eq!(rows, expected);
            }
            ExportFormat::Xlsx => {
                let (headers, rows) = parse_xlsx(&body)?;
                assert_eq!(headers, [["id", "email", "name", "status", "created_at"]]);
                assert_eq!(to_seconds(&rows), to_seconds(&expected));
            }
            ExportFormat::Jsonl => assert_eq!(parse_jsonl(&body)?, expected),
        }
    }
    let objects = stored_objects(&env.storage).await?;
    assert_eq!(objects.len(), 3, "one file per export: {objects:?}");

    let metrics = env.raw().get(env.url("/metrics")).send().await?.text().await?;
    for line in [
        "exports_jobs_succeeded_total{format=\"csv\"} 1",
        "exports_jobs_succeeded_total{format=\"xlsx\"} 1",
        "exports_jobs_succeeded_total{format=\"jsonl\"} 1",
        "exports_jobs_failed_total{format=\"csv\"} 0",
        "exports_jobs_in_flight 0",
        "exports_queue_depth 0",
        "exports_job_duration_seconds_count{format=\"xlsx\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "no {line:?} in\n{metrics}");
    }
    assert!(metrics.contains(&format!(
        "exports_rows_written_total{{format=\"csv\"}} {}",
        expected.len()
    )));
    env.finish().await
}

#[tokio::test]
async fn formula_cells_are_defused_for_spreadsheets_and_kept_in_json_lines() -> anyhow::Result<()> {
    let env = TestEnv::start_setup(Setup {
        worker: Some(quick_worker()),
        ..Setup::default()
    })
    .await?;
    let hostile = [
        ("=HYPERLINK(\"http://evil.example\",\"x\")", "eq@example.com"),
        ("+1+1", "plus@example.com"),
        ("-2+3", "minus@example.com"),
        ("@SUM(A1:A9)", "at@example.com"),
        ("\tTabbed", "tab@example.com"),
        ("\rReturn", "cr@example.com"),
        ("Plain, \"quoted\"\nname", "=cmd|' /C calc'!A0"),
        ("Ada = Lovelace", "ada@example.com"),
    ];
    let db = env.pool.get().await?;
    for (name, email) in hostile {
        db.execute(
            "INSERT INTO users (email, name, status) VALUES ($1, $2, 'active')",
            &[&email, &name],
        )
        .await?;
    }
    drop(db);
    let alice = env.writer().await?;
    let client = env.client(&alice);
    let expected = neutralised(&expected_rows(&env, None, None).await?);
    assert!(expected
        .iter()
        .any(|row| row.2 == "'=HYPERLINK(\"http://evil.example\",\"x\")"));
    assert!(expected.iter().any(|row| row.1 == "'=cmd|' /C calc'!A0"));
    assert!(expected.iter().any(|row| row.2 == "Ada = Lovelace"));

    let stored = expected_rows(&env, None, None).await?;
    let cells = |rows: &[Row]| -> Vec<(String, String)> {
        rows.iter().map(|row| (row.1.clone(), row.2.clone())).collect()
    };
    for format in [ExportFormat::Csv, ExportFormat::Xlsx, ExportFormat::Jsonl] {
        let id = create(&client, &request(format, None)).await?;
        wait_for_export(&client, &id, FINISH, |e| e.status == ExportStatus::Done).await?;
        let (_, body) = download(&client, &id).await?;
        match format {
            // CSV has no defence but the leading apostrophe.
            ExportFormat::Csv => assert_eq!(cells(&parse_csv(&body)?.1), cells(&expected)),
            // JSON Lines is read by programs: every value as stored.
            ExportFormat::Jsonl => assert_eq!(cells(&parse_jsonl(&body)?), cells(&stored)),
            // XLSX keeps every value as stored, each formula-like one in a quote-prefixed cell.
            ExportFormat::Xlsx => {
                assert_eq!(cells(&parse_xlsx(&body)?.1), cells(&stored));
                let quoted = quote_prefixed_cells(&body)?;
                let formula_like = stored
                    .iter()
                    .flat_map(|row| [&row.1, &row.2])
                    .filter(|cell| {
                        matches!(
                            cell.as_bytes().first(),
                            Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r')
                        )
                    })
                    .count();
                assert_eq!(
                    quoted, formula_like,
                    "formula-like cells carry the quote prefix, the others not"
                );
            }
        }
    }
    env.finish().await
}

#[tokio::test]
async fn s3_exports_are_presigned_links_with_the_file_name() -> anyhow::Result<()> {
    let env = TestEnv::start_setup(Setup {
        s3: true,
        worker: Some(quick_worker()),
    })
    .await?;
    env.seed_users(500).await?;
    let alice = env.writer().await?;
    let client = env.client(&alice);
    let id = create(&client, &request(ExportFormat::Csv, None)).await?;
    let export = wait_for_export(&client, &id, FINISH, |e| e.status == ExportStatus::Done).await?;
    let link = export.download_url.unwrap();
    let s3 = env.s3.as_ref().unwrap();
    assert!(
        link.starts_with(&format!("{}/{}/exports/{id}/", s3.endpoint(), s3.bucket)),
        "{link}"
    );
    assert!(link.contains("X-Amz-Signature="), "{link}");

    let (_, body) = download(&client, &id).await?;
    let from_s3 = reqwest::get(&link).await?;
    assert_eq!(from_s3.status(), 200);
    assert_eq!(
        from_s3.headers()["content-disposition"],
        format!("attachment; filename=\"users-{id}.csv\"").as_str()
    );
    assert_eq!(from_s3.bytes().await?.as_ref(), body.as_slice());
    assert_eq!(parse_csv(&body)?.1, expected_rows(&env, None, None).await?);

    // The same signature with one hex digit changed.
    let at = link.find("X-Amz-Signature=").unwrap() + "X-Amz-Signature=".len();
    let flipped = if &link[at..at + 1] == "0" { "1" } else { "0" };
    let tampered = format!("{}{flipped}{}", &link[..at], &link[at + 1..]);
    assert_eq!(reqwest::get(&tampered).await?.status(), 403);
    let objects = stored_objects(&env.storage).await?;
    assert_eq!(objects.len(), 1, "{objects:?}");
    assert_eq!(objects[0].1, body.len() as u64);
    env.finish().await
}

#[tokio::test]
async fn served_links_refuse_tampering_and_expire() -> anyhow::Result<()> {
    let mut worker = quick_worker();
    worker.file_ttl_secs = 3600;
    let env = TestEnv::start_setup(Setup {
        worker: Some(worker),
        ..Setup::default()
    })
    .await?;
    env.seed_users(50).await?;
    let alice = env.writer().await?;
    let client = env.client(&alice);
    let id = create(&client, &request(ExportFormat::Csv, None)).await?;
    let export = wait_for_export(&client, &id, FINISH, |e| e.status == ExportStatus::Done).await?;
    let link = export.download_url.unwrap();
    assert!(
        link.starts_with(&env.url(&format!("/downloads/{id}?expires="))),
        "{link}"
    );

    let error = |response: reqwest::Response| async move {
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap();
        (status, body["error"]["code"].as_str().unwrap().to_string())
    };
    let other = link.replace(&id.to_string(), &Uuid::new_v4().to_string());
    assert_eq!(
        error(reqwest::get(&other).await?).await,
        (403, "invalid_download_link".into())
    );
    let later = link.replacen("expires=", "expires=9", 1);
    assert_eq!(
        error(reqwest::get(&later).await?).await,
        (403, "invalid_download_link".into())
    );
    let unsigned = link.split("&signature=").next().unwrap().to_string();
    assert_eq!(
        error(reqwest::get(&unsigned).await?).await,
        (400, "invalid_request".into())
    );

    // Links minted with the same key that expire a minute from now and a minute ago.
    let storage = exports_server::storage::Storage::open(&env.storage_args)?;
    let link_until = |expires_at| storage.served_link(id, &env.base_url, expires_at).unwrap();
    let current = link_until(Utc::now() + chrono::Duration::minutes(1));
    assert_eq!(reqwest::get(&current).await?.status(), 200);
    let expired = link_until(Utc::now() - chrono::Duration::minutes(1));
    assert_eq!(
        error(reqwest::get(&expired).await?).await,
        (403, "download_link_expired".into())
    );
    env.finish().await
}

#[tokio::test]
async fn expired_files_are_deleted_and_marked() -> anyhow::Result<()> {
    let mut worker = quick_worker();
    worker.file_ttl_secs = 1;
    let env = TestEnv::start_setup(Setup {
        s3: true,
        worker: Some(worker),
    })
    .await?;
    env.seed_users(100).await?;
    let alice = env.writer().await?;
    let client = env.client(&alice);
    let id = create(&client, &request(ExportFormat::Xlsx, None)).await?;
    wait_for_export(&client, &id, FINISH, |e| {
        e.status != ExportStatus::Pending && e.status != ExportStatus::Processing
    })
    .await?;
    let export = wait_for_export(&client, &id, FINISH, |e| e.status == ExportStatus::Expired).await?;
    assert!(export.download_url.is_none());
    assert!(export.expires_at.unwrap() <= Utc::now());
    let (status, body, _) = error_of(client.download_export(&id).await);
    assert_eq!((status, body.error.code.as_str()), (410, "export_expired"));
    assert_eq!(stored_objects(&env.storage).await?, vec![]);
    let key: Option<String> = env
        .pool
        .get()
        .await?
        .query_one("SELECT file_key FROM exports WHERE id = $1", &[&id])
        .await?
        .get(0);
    assert_eq!(key, None);
    env.finish().await
}

#[tokio::test]
async fn s3_links_name_the_endpoint_clients_reach() -> anyhow::Result<()> {
    use exports_server::model::{ExportCompression, ExportFile, ExportFormat, UserColumn};
    use exports_server::storage::{Storage, StorageArgs};
    let s3 = exports_tests::TestS3::start().await?;
    // The same server under another name, as a host reaches a compose stack's `http://s3:9000`
    // at `http://127.0.0.1:9000`.
    let public = format!("http://localhost:{}", s3.port);
    let storage = Storage::open(&StorageArgs {
        s3_public_endpoint: Some(public.clone()),
        ..s3.args()
    })?;
    let id = Uuid::new_v4();
    let file = ExportFile {
        format: ExportFormat::Csv,
        columns: UserColumn::ALL.to_vec(),
        compression: ExportCompression::None,
    };
    let key = Storage::object_key(id, 1, &file);
    object_store::ObjectStoreExt::put(&*storage.object_store(), &key, "id\n1\n".into()).await?;
    let link = storage.download_link(id, key.as_ref(), &file, "unused").await?;
    assert!(link.url.starts_with(&format!("{public}/")), "{}", link.url);
    let body = reqwest::get(&link.url).await?.error_for_status()?.text().await?;
    assert_eq!(body, "id\n1\n", "signed for the name the client used");
    Ok(())
}
