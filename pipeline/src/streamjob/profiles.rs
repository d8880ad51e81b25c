//! The table of session profiles the enrichment reads: created where missing, and seeded
//! with one profile per session for a run.

use super::enrich::{EnrichAt, TABLE, enrich_err};
use crate::Result;
use std::time::Duration;

/// A session's profile as [`seed`] writes it.
pub fn seed_profile(session: u64) -> String {
    const GENRES: [&str; 5] = ["noir", "cozy", "epic", "horror", "comedy"];
    const LEVELS: [&str; 3] = ["young", "teen", "adult"];
    format!("{}/{}", GENRES[(session % 5) as usize], LEVELS[(session / 5 % 3) as usize])
}

/// Creates [`TABLE`] if missing (a SQLite file too), so a stream job can start before any
/// run has seeded it.
pub async fn prepare(at: &EnrichAt) -> Result<()> {
    seed(at, 0).await
}

/// Creates [`TABLE`] if missing and writes a profile for sessions `0..sessions`.
pub async fn seed(at: &EnrichAt, sessions: u64) -> Result<()> {
    match at {
        EnrichAt::Sqlite(path) => {
            let path = path.clone();
            let err_at = at.clone();
            tokio::task::spawn_blocking(move || -> rusqlite::Result<()> {
                let mut conn = rusqlite::Connection::open(&path)?;
                conn.pragma_update(None, "journal_mode", "WAL")?;
                conn.busy_timeout(Duration::from_secs(5))?;
                conn.execute(
                    &format!("CREATE TABLE IF NOT EXISTS {TABLE} (session INTEGER PRIMARY KEY, profile TEXT NOT NULL)"),
                    [],
                )?;
                let tx = conn.transaction()?;
                {
                    let mut put = tx.prepare(&format!("INSERT OR REPLACE INTO {TABLE} VALUES (?1, ?2)"))?;
                    for s in 0..sessions {
                        put.execute(rusqlite::params![s as i64, seed_profile(s)])?;
                    }
                }
                tx.commit()
            })
            .await
            .map_err(|e| enrich_err(&err_at, e))?
            .map_err(|e| enrich_err(at, e))
        }
        EnrichAt::Postgres(url) => {
            let client = crate::io::postgres::connect(url).await?;
            let create =
                format!("CREATE TABLE IF NOT EXISTS {TABLE} (session BIGINT PRIMARY KEY, profile TEXT NOT NULL)");
            client.batch_execute(&create).await.map_err(|e| enrich_err(at, e))?;
            let ids: Vec<i64> = (0..sessions as i64).collect();
            let profiles: Vec<String> = (0..sessions).map(seed_profile).collect();
            let upsert = format!(
                "INSERT INTO {TABLE} SELECT * FROM unnest($1::bigint[], $2::text[]) \
                 ON CONFLICT (session) DO UPDATE SET profile = EXCLUDED.profile"
            );
            client.execute(&upsert, &[&ids, &profiles]).await.map_err(|e| enrich_err(at, e))?;
            Ok(())
        }
    }
}
