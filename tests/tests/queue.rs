//! The job stream against a real Redis: taking over a dead worker's job wherever it sits among
//! the live ones.

use std::time::Duration;

use exports_server::queue::{self, JobQueue};
use exports_tests::redis_url;
use uuid::Uuid;

#[tokio::test]
async fn a_stale_job_behind_many_live_ones_is_taken_over() -> anyhow::Result<()> {
    let redis = queue::connect(&redis_url(), 2).await?;
    let queue = JobQueue::new(redis, &format!("exports:test:{}:", Uuid::new_v4().simple()));
    let outcome = async {
        queue.ensure_group().await?;
        let reader = queue::connect_dedicated(&redis_url(), Duration::from_millis(100)).await?;
        let mut exports = Vec::new();
        for _ in 0..40 {
            let id = Uuid::new_v4();
            queue.enqueue(id).await?;
            exports.push(id);
        }
        // A worker takes all 40; it dies holding the last one and keeps the others fresh.
        let mut entries = Vec::new();
        for _ in 0..40 {
            let job = queue
                .read(&reader, "alive", Duration::from_millis(100))
                .await?
                .expect("a job");
            entries.push(job);
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
        for job in &entries[..39] {
            queue.touch("alive", &job.entry_id).await?;
        }
        let mut cursor = "0-0".to_string();
        let mut taken = None;
        // Redis looks at about ten pending entries per call: the cursor must carry on.
        for _ in 0..10 {
            if let Some(job) = queue
                .claim_stale("rescuer", Duration::from_millis(300), &mut cursor)
                .await?
            {
                taken = Some(job);
                break;
            }
        }
        let taken = taken.expect("the stale job was found");
        assert_eq!(taken.entry_id, entries[39].entry_id);
        assert_eq!(taken.export_id, Some(exports[39]));
        anyhow::Ok(())
    }
    .await;
    queue.delete_stream().await?;
    outcome
}
