//! The optional on-disk log (`tailgate broker --data DIR`): one directory per topic with
//! its metadata, and per partition a log file of stored batches, each framed as
//! `[u32 length][i64 append ms][batch]`, plus the log start offset beside it. A batch is
//! written before its produce is acknowledged, so a restarted broker serves everything it
//! acknowledged; the offset index is rebuilt in memory on start. A torn last frame (a
//! crash mid-write) is cut off on start. Retention and compaction rewrite the file (to a
//! temporary file, then renamed) once it holds as much dead data as live.

use crate::batch::Batch;
use bytes::Bytes;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

const FRAME: usize = 12;

/// What a partition's file held: its log start offset and its batches with their append
/// times.
pub type Restored = (i64, Vec<(Batch, i64)>);

/// One partition's file.
#[derive(Debug)]
pub struct Segment {
    path: PathBuf,
    file: BufWriter<File>,
    /// Bytes in the file.
    bytes: u64,
}

impl Segment {
    /// Opens (creating) the log of partition `p` under `dir`, returning it and what it
    /// holds: the log start offset and the stored batches with their append times.
    pub fn open(dir: &Path, p: i32) -> io::Result<(Self, Restored)> {
        fs::create_dir_all(dir)?;
        let path = dir.join(format!("{p}.log"));
        let mut raw = Vec::new();
        if path.exists() {
            File::open(&path)?.read_to_end(&mut raw)?;
        }
        let raw = Bytes::from(raw);
        let mut batches = Vec::new();
        let mut at = 0usize;
        while raw.len() - at >= FRAME {
            let len = u32::from_be_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]]) as usize;
            let mut ms = [0u8; 8];
            ms.copy_from_slice(&raw[at + 4..at + FRAME]);
            let end = at + FRAME + len;
            if end > raw.len() {
                break;
            }
            match Batch::split(raw.slice(at + FRAME..end)) {
                Ok(mut b) if b.len() == 1 => batches.push((b.remove(0), i64::from_be_bytes(ms))),
                _ => break,
            }
            at = end;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        if (at as u64) < raw.len() as u64 {
            // A torn or corrupt tail: nothing after it was acknowledged.
            file.set_len(at as u64)?;
        }
        let start = fs::read_to_string(start_path(&path)).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        Ok((Self { path, file: BufWriter::new(file), bytes: at as u64 }, (start, batches)))
    }

    /// Writes one stored batch (and flushes it to the operating system).
    pub fn append(&mut self, batch: &Batch, append_ms: i64) -> io::Result<()> {
        self.bytes += write_frame(&mut self.file, batch, append_ms)?;
        self.file.flush()
    }

    /// Bytes in the file, dead ones included.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Records a new log start offset.
    pub fn set_start(&mut self, start: i64) {
        if let Err(e) = fs::write(start_path(&self.path), start.to_string()) {
            eprintln!("broker: cannot record the log start of {}: {e}", self.path.display());
        }
    }

    /// Replaces the file with exactly `batches` (after retention or compaction).
    pub fn rewrite(&mut self, start: i64, batches: &[(&Batch, i64)]) {
        if let Err(e) = self.try_rewrite(batches) {
            eprintln!("broker: cannot rewrite {}: {e}", self.path.display());
        }
        self.set_start(start);
    }

    fn try_rewrite(&mut self, batches: &[(&Batch, i64)]) -> io::Result<()> {
        let tmp = self.path.with_extension("log.tmp");
        let mut w = BufWriter::new(File::create(&tmp)?);
        let mut bytes = 0u64;
        for (b, ms) in batches {
            bytes += write_frame(&mut w, b, *ms)?;
        }
        w.flush()?;
        drop(w);
        fs::rename(&tmp, &self.path)?;
        self.file = BufWriter::new(OpenOptions::new().append(true).open(&self.path)?);
        self.bytes = bytes;
        Ok(())
    }
}

/// Writes one batch's frame; returns the bytes written.
fn write_frame(w: &mut impl Write, batch: &Batch, append_ms: i64) -> io::Result<u64> {
    let len = u32::try_from(batch.len()).map_err(|_| io::Error::other("batch over 4 GiB"))?;
    w.write_all(&len.to_be_bytes())?;
    w.write_all(&append_ms.to_be_bytes())?;
    w.write_all(batch.bytes())?;
    Ok((FRAME + batch.len()) as u64)
}

fn start_path(log: &Path) -> PathBuf {
    log.with_extension("start")
}
