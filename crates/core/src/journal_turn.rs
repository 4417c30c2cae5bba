//! The collector's turn and its writes to the crash-safe journal (`crate::journal`): at each turn a batch of
//! what it drained, a whole snapshot when the journal starts (or must start over), and a
//! compaction, whose snapshot the caller writes on a thread of its own, when the log has grown.

use std::io;

use std::sync::atomic::Ordering;

use crate::collector::Collector;
use crate::journal::{Journal, Need, SnapshotJob};
use crate::journal_state::{strings, Batch, State};
use crate::kept::Feed;
use crate::samples::{SampleFeed, SampleStore};
use crate::session::Session;

/// What a collector turn leaves to its caller.
#[derive(Default)]
pub struct Turn {
    /// A snapshot to write, on another thread (see [`SnapshotJob`]).
    pub job: Option<SnapshotJob>,
    /// A write that failed, said once per distinct message; the journal tries again a few
    /// seconds later, starting with a snapshot.
    pub failure: Option<String>,
    /// Something worth one line that is not a failure.
    pub note: Option<String>,
}

fn failure(err: io::Error) -> Turn {
    Turn {
        failure: Some(format!(
            "the crash-safe journal could not be written: {err}"
        )),
        ..Turn::default()
    }
}

/// Writes `state` to `out`, failing with the file's own error (a full disk says so; postcard
/// would only say its buffer is full).
fn postcard_to(state: &State, out: &mut dyn io::Write) -> io::Result<()> {
    struct KeepError<'a> {
        out: &'a mut dyn io::Write,
        error: Option<io::Error>,
    }
    impl io::Write for KeepError<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.out.write(buf).inspect_err(|err| {
                self.error = Some(io::Error::new(err.kind(), err.to_string()));
            })
        }
        fn flush(&mut self) -> io::Result<()> {
            self.out.flush().inspect_err(|err| {
                self.error = Some(io::Error::new(err.kind(), err.to_string()));
            })
        }
    }
    let mut writer = KeepError { out, error: None };
    match postcard::to_io(state, &mut writer) {
        Ok(_) => Ok(()),
        Err(err) => Err(writer.error.take().unwrap_or_else(|| io::Error::other(err))),
    }
}

impl Session {
    /// The collector's turn: drains the thread rings and, with the journal on, appends what
    /// they held to it. A process that never recorded anything writes no journal.
    pub fn collect(&self) -> Turn {
        let settings = self.settings();
        if !settings.journal || self.closed.load(Ordering::Acquire) {
            let _ = self.drain();
            return Turn::default();
        }
        // Lock order: journal, collector, samples. Nothing takes the journal while holding
        // the others.
        let mut journal = self.journal.lock();
        journal.poll();
        // A collector busy for seconds is not the journal's failure: try at the next turn.
        let Ok(mut collector) = self.lock_collector() else {
            return Turn::default();
        };
        collector.drain();
        if journal.is_closed() || !collector.kept.any() {
            return Turn::default();
        }
        let mut samples = self.samples.lock();
        let dir = &settings.output_dir;
        let need = if collector.feed.overflowed || samples.feed.overflowed {
            Need::Snapshot
        } else {
            journal.need(dir)
        };
        if need == Need::Snapshot {
            // Whatever the feeds held is in the snapshot; they start again after it.
            collector.feed = Feed::default();
            samples.feed = SampleFeed::default();
            if !journal.may_snapshot() {
                return Turn::default(); // waiting after a failure
            }
            let mut state = self.capture(&collector, &samples, &settings);
            state.generation = journal.next_generation();
            journal.names_written = state.names.len();
            journal.shapes_written = state.shapes.len();
            collector.feed.active = true;
            samples.feed.active = true;
            drop((samples, collector));
            return match journal.write_snapshot(dir, |out| postcard_to(&state, out)) {
                Ok(note) => Turn {
                    note,
                    ..Turn::default()
                },
                Err(err) => failure(err),
            };
        }
        let batch = self.take_batch(&mut journal, &mut collector, &mut samples);
        // A compaction's snapshot is of the state right after this batch, which still goes to
        // the old log: the old pair stays whole until the new one is in place.
        let compaction = (need == Need::Compaction).then(|| {
            let mut state = self.capture(&collector, &samples, &settings);
            state.generation = journal.next_generation();
            state
        });
        drop((samples, collector));
        if !(batch.is_empty() && batch.names.is_empty() && batch.shapes.is_empty()) {
            let written = postcard::to_stdvec(&batch)
                .map_err(io::Error::other)
                .and_then(|bytes| journal.append(&bytes));
            if let Err(err) = written {
                return failure(err);
            }
        }
        match compaction {
            None => Turn::default(),
            Some(state) => {
                match journal.start_compaction(Box::new(move |out: &mut dyn io::Write| {
                    postcard_to(&state, out)
                })) {
                    Ok(job) => Turn {
                        job: Some(job),
                        ..Turn::default()
                    },
                    Err(err) => failure(err),
                }
            }
        }
    }

    /// What the feeds hold since the last batch, taken out of them.
    fn take_batch(
        &self,
        journal: &mut Journal,
        collector: &mut Collector,
        samples: &mut SampleStore,
    ) -> Batch {
        let (role, rank) = self.identity();
        let batch = Batch {
            names: strings(self.interner.since(journal.names_written)),
            shapes: strings(self.shapes.since(journal.shapes_written)),
            events: std::mem::take(&mut collector.feed.events),
            windows: std::mem::take(&mut collector.feed.windows),
            ticks: std::mem::take(&mut samples.feed.ticks),
            devices: std::mem::take(&mut samples.feed.devices_changed).then(|| {
                (
                    samples.detector.map(str::to_owned),
                    samples.described_devices.clone(),
                )
            }),
            counters: self.counters.values(),
            memory_source: self.latest.memory_source(),
            role,
            rank,
        };
        journal.names_written += batch.names.len();
        journal.shapes_written += batch.shapes.len();
        batch
    }

    /// Removes the journal: reports just written hold everything it had. Recording again
    /// starts a new one (with a snapshot of everything so far).
    pub fn retire_journal(&self) {
        let mut journal = self.journal.lock();
        journal.retire();
        self.collector.lock().feed = Feed::default();
        self.samples.lock().feed = SampleFeed::default();
    }

    /// Compacts the journal once its log passed `bytes` instead of
    /// [`crate::journal::LOG_LIMIT_BYTES`] (for tests and benches).
    pub fn set_journal_limit(&self, bytes: u64) {
        self.journal.lock().log_limit = bytes;
    }

    /// Removes the journal for good (the final export).
    pub(crate) fn close_journal(&self) {
        self.journal.lock().close();
    }
}
