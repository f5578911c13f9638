//! A test that fails on purpose, run as a child process by `tests/tests/cleanup.rs`. It makes
//! what tests make (a database, Redis keys, an s3s-fs server with its bucket, a worker process
//! holding an export mid-way, temporary directories), prints them as one JSON line, and then
//! panics, as a failing assertion would. The clean-up test then finds none of them left.

use exports_client::types::{CreateUserExport, ExportFormat, ExportStatus};
use exports_tests::{create, wait_for_export, ChildProcess, Setup, TestEnv};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = TestEnv::start_setup(Setup {
        s3: true,
        worker: None,
    })
    .await?;
    env.seed_users(100).await?;
    let logs = tempfile::tempdir()?;
    // Built beside this binary (Cargo tells only tests where binaries are).
    let worker = std::env::current_exe()?.with_file_name("exports-server-under-test");
    let mut command = env.worker_command(worker.to_str().unwrap(), &logs.path().join("worker.log"))?;
    command.args(["--hold-after-rows", "1"]);
    let worker = ChildProcess::spawn(command)?;
    let alice = env.writer().await?;
    let client = env.client(&alice);
    let request = CreateUserExport {
        format: ExportFormat::Csv,
        filters: None,
        columns: None,
        compression: None,
    };
    let id = create(&client, &request).await?;
    wait_for_export(&client, &id, std::time::Duration::from_secs(90), |e| {
        e.status == ExportStatus::Processing
    })
    .await?;

    let mut made = env.made_outside();
    made["directories"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!(logs.path()));
    made["processes"].as_array_mut().unwrap().push(worker.id().into());
    println!("{made}");
    panic!("failing on purpose, with an export under way");
}
