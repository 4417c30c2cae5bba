//! The per-thread hot path: step and span begin/end.
//!
//! Each recording thread owns a `ThreadRecorder`: open steps and spans live in thread-owned
//! vectors that keep their capacity, and finished ones go as fixed-size events into the thread's
//! own single-producer ring (`ringbuf`), which the collector drains. So a warm begin/end pair
//! takes no lock and does not allocate; a full ring loses the event and counts it.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use ringbuf::traits::{Consumer, Observer, Producer, Split};
use ringbuf::{HeapCons, HeapProd, HeapRb};
use rustc_hash::FxHashMap;

use crate::collector::EventSource;
use crate::error::{ProfilerError, Result};
use crate::event::{Event, SpanEvent, StepEvent, NO_ENGINE_STEP};
use crate::handle::{self, Handle, Owner};
use crate::kernel_context;
use crate::names::NameId;
use crate::recent::{self, Recent};

mod device_time;
mod torch_window;
use crate::session::Session;
pub use torch_window::{MAX_TORCH_OP_NAMES, MAX_WINDOW_EVENTS, MAX_WINDOW_KERNELS, MAX_WINDOW_OPS};

/// Most steps one thread may have open at once (overlapping async steps are allowed).
pub const MAX_OPEN_STEPS: usize = 1024;
/// Deepest span nesting on one thread.
pub const MAX_OPEN_SPANS: usize = 4096;
/// Events per thread ring (64 bytes each: 512 KiB per recording thread). Sized for bursts:
/// a forward pass with layer profiling emits hundreds of spans in a few milliseconds.
pub const RING_CAPACITY: usize = 8192;
/// The collector is woken after this many events, well before the ring can fill.
const WAKE_EVERY: u32 = (RING_CAPACITY / 8) as u32;

/// Annotations of a span end: none (a plain end, or a span auto-closed by its parent or step).
const NO_MEMORY_DELTA: f32 = f32::NAN;

/// Most raw shapes strings one thread remembers; the cache is emptied when it is full (raw
/// spellings of the same shapes are unbounded, unlike the shapes themselves).
const SHAPES_CACHE_LIMIT: usize = 4096;

struct OpenStep {
    seq: u64,
    engine_step: u64,
    start_ns: u64,
    batch_size: u32,
    num_tokens: u32,
    utilization_start: f32,
    memory_start_mb: f32,
}

struct OpenSpan {
    seq: u64,
    name: NameId,
    parent: NameId,
    depth: u32,
    step_seq: u64,
    start_ns: u64,
}

/// Recording state of one thread in one session. Not `Sync`: it is only touched by its thread.
pub struct ThreadRecorder {
    session: Arc<Session>,
    producer: HeapProd<Event>,
    /// This thread's slot in the session, part of every handle it gives out.
    slot: u32,
    /// The OS thread id the collector knows this thread's events by.
    thread_id: u32,
    /// The owner bits of this thread's handles.
    owner: Owner,
    next_seq: u64,
    until_wake: u32,
    open_steps: Vec<OpenStep>,
    open_spans: Vec<OpenSpan>,
    names: FxHashMap<Box<[u8]>, NameId>,
    /// Raw `shapes_json` bytes seen by this thread to their shapes id (`NameId::NONE` for `{}`).
    shapes: FxHashMap<Box<[u8]>, NameId>,
    /// The spans and steps this thread ended last, for device durations that come after.
    recent_spans: Recent,
    recent_steps: Recent,
}

impl Session {
    /// Creates the recorder of the calling thread: its ring, registered with the collector.
    pub fn register_thread(self: &Arc<Self>, thread_id: u32) -> ThreadRecorder {
        let (producer, consumer) = HeapRb::<Event>::new(RING_CAPACITY).split();
        let slot = self.take_thread_slot();
        // arc-swap gives each thread a node at its first load: take it now, not on the hot path.
        drop(self.collector_thread.load());
        self.collector
            .lock()
            .add_source(Box::new(consumer), thread_id);
        ThreadRecorder::new(self.clone(), producer, slot, thread_id)
    }

    /// A slot no live thread of this session has: a freed one, or a new one. Slots tell the
    /// handles of threads apart; past 2^20 live threads they would repeat.
    pub(crate) fn take_thread_slot(&self) -> u32 {
        if let Some(slot) = self.free_thread_slots.lock().pop() {
            return slot;
        }
        let slot = self.next_thread_slot.fetch_add(1, Ordering::Relaxed) & 0xf_ffff;
        slot.max(1)
    }

    /// Called when a recording thread exits.
    pub(crate) fn release_thread_slot(&self, slot: u32) {
        self.free_thread_slots.lock().push(slot);
    }
}

impl EventSource for HeapCons<Event> {
    #[inline]
    fn pop(&mut self) -> Option<Event> {
        self.try_pop()
    }

    fn is_finished(&self) -> bool {
        !self.write_is_held() && self.is_empty()
    }
}

impl ThreadRecorder {
    fn new(session: Arc<Session>, producer: HeapProd<Event>, slot: u32, thread_id: u32) -> Self {
        let session_generation = session.generation();
        ThreadRecorder {
            session,
            producer,
            slot,
            thread_id,
            owner: Owner::new(session_generation, slot),
            next_seq: 0,
            until_wake: WAKE_EVERY,
            open_steps: Vec::with_capacity(8),
            open_spans: Vec::with_capacity(64),
            names: FxHashMap::default(),
            shapes: FxHashMap::default(),
            recent_spans: Recent::new(recent::SPANS),
            recent_steps: Recent::new(recent::STEPS),
        }
    }

    /// The session this recorder writes into.
    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    fn handle(&self, seq: u64) -> u64 {
        self.owner.handle(seq).raw()
    }

    fn seq_of(&self, handle: u64, kind: &'static str) -> Result<u64> {
        self.owner
            .seq_of(Handle::from_raw(handle))
            .ok_or(ProfilerError::UnknownHandle { kind, handle })
    }

    fn next_seq(&mut self) -> u64 {
        self.next_seq = handle::next_seq(self.next_seq);
        self.next_seq
    }

    /// Opens a step; returns its handle (never 0). At the open-steps limit the oldest open step
    /// is abandoned (counted in `unfinished_steps`): a code path that leaks steps must not stop
    /// recording for good.
    pub fn step_begin(&mut self, batch_size: u32, num_tokens: u32) -> Result<u64> {
        if self.open_steps.len() >= MAX_OPEN_STEPS {
            self.open_steps.remove(0);
            self.session
                .counters()
                .unfinished_steps
                .fetch_add(1, Ordering::Relaxed);
        }
        let start_ns = self.session.now_ns();
        let (utilization_start, memory_start_mb) = self.session.latest().read();
        let seq = self.next_seq();
        self.open_steps.push(OpenStep {
            seq,
            engine_step: NO_ENGINE_STEP,
            start_ns,
            batch_size,
            num_tokens,
            utilization_start,
            memory_start_mb,
        });
        Ok(self.handle(seq))
    }

    /// Sets the batch size and token count of an open step: an engine learns them only after
    /// its scheduler ran, inside the step.
    pub fn step_set_counts(&mut self, handle: u64, batch_size: u32, num_tokens: u32) -> Result<()> {
        let step = self.open_step(handle)?;
        step.batch_size = batch_size;
        step.num_tokens = num_tokens;
        Ok(())
    }

    /// Sets the engine step an open step served: vLLM's workers learn it from the scheduler
    /// output they run. `NO_ENGINE_STEP` clears it.
    pub fn step_set_engine_step(&mut self, handle: u64, engine_step: u64) -> Result<()> {
        self.open_step(handle)?.engine_step = engine_step;
        Ok(())
    }

    fn open_step(&mut self, handle: u64) -> Result<&mut OpenStep> {
        let seq = self.seq_of(handle, "step")?;
        self.open_steps
            .iter_mut()
            .rev()
            .find(|s| s.seq == seq)
            .ok_or(ProfilerError::UnknownHandle {
                kind: "step",
                handle,
            })
    }

    /// Closes a step and every span still open inside it.
    pub fn step_end(&mut self, handle: u64) -> Result<()> {
        let seq = self.seq_of(handle, "step")?;
        let index = self.open_steps.iter().rposition(|s| s.seq == seq).ok_or(
            ProfilerError::UnknownHandle {
                kind: "step",
                handle,
            },
        )?;
        let end_ns = self.session.now_ns();
        let spans_lost = self.close_spans_of_step(seq, end_ns);
        let step = self.open_steps.remove(index);
        let (utilization_end, memory_end_mb) = self.session.latest().read();
        self.push(Event::Step(StepEvent {
            seq,
            engine_step: step.engine_step,
            batch_size: step.batch_size,
            num_tokens: step.num_tokens,
            start_ns: step.start_ns,
            duration_ns: end_ns.saturating_sub(step.start_ns),
            memory_start_mb: step.memory_start_mb,
            memory_end_mb,
            utilization_start: step.utilization_start,
            utilization_end,
        }))?;
        self.recent_steps.record(seq, NameId::NONE, seq);
        if spans_lost {
            return Err(ProfilerError::BufferFull);
        }
        Ok(())
    }

    /// Opens a span named by `name` (UTF-8 bytes, no NUL) inside the innermost open step. At
    /// the nesting limit the new span is refused and the open ones are kept: the outermost
    /// (the model's root) are the ones that matter. Ending a step closes the spans it holds,
    /// so a path that leaks spans inside steps never fills the stack for good.
    pub fn span_begin(&mut self, name: &[u8]) -> Result<u64> {
        if self.open_spans.len() >= MAX_OPEN_SPANS {
            return Err(ProfilerError::LimitExceeded(
                "more than 4096 spans open on this thread",
            ));
        }
        let name = match self.names.get(name) {
            Some(id) => *id,
            None => {
                let id = self.session.interner().intern(name)?;
                self.names.insert(name.into(), id);
                id
            }
        };
        let step_seq = self.open_steps.last().map_or(0, |s| s.seq);
        let (parent, depth) = match self.open_spans.last() {
            Some(top) if top.step_seq == step_seq => (top.name, top.depth + 1),
            _ => (NameId::NONE, 0),
        };
        let start_ns = self.session.now_ns();
        let seq = self.next_seq();
        self.open_spans.push(OpenSpan {
            seq,
            name,
            parent,
            depth,
            step_seq,
            start_ns,
        });
        Ok(self.handle(seq))
    }

    /// Closes a span. Spans opened inside it and still open are closed at the same instant.
    pub fn span_end(&mut self, handle: u64) -> Result<()> {
        let index = self.open_span_index(handle)?;
        let end_ns = self.session.now_ns();
        self.close_spans_from(index, end_ns, NO_MEMORY_DELTA, NameId::NONE)
    }

    /// Closes a span like `span_end` and attaches what the caller measured over it:
    /// `memory_delta_mb` (MiB; NaN or infinite: none) and `shapes`, raw `shapes_json` bytes
    /// (see `crate::shapes::canonical`; `None`: none). Spans closed with it because they were
    /// still open inside it carry no annotations.
    ///
    /// Bad shapes lose nothing else: the span is ended with its duration and memory delta,
    /// without shapes, and the shapes' error is returned (before a full buffer's). An unknown
    /// handle ends nothing. A repeated shapes string costs one hash lookup.
    pub fn span_end_annotated(
        &mut self,
        handle: u64,
        memory_delta_mb: f32,
        shapes: Option<&[u8]>,
    ) -> Result<()> {
        let index = self.open_span_index(handle)?;
        let end_ns = self.session.now_ns();
        let memory_delta_mb = if memory_delta_mb.is_finite() {
            memory_delta_mb
        } else {
            NO_MEMORY_DELTA
        };
        let (shapes, shapes_error) = match shapes.map(|raw| self.shapes_id(raw)) {
            None => (NameId::NONE, None),
            Some(Ok(id)) => (id, None),
            Some(Err(err)) => (NameId::NONE, Some(err)),
        };
        let closed = self.close_spans_from(index, end_ns, memory_delta_mb, shapes);
        match shapes_error {
            Some(err) => Err(err),
            None => closed,
        }
    }

    /// The id of raw shapes: this thread's cache, else checked and interned (`NameId::NONE`
    /// for `{}`). Errors are not cached.
    #[inline]
    fn shapes_id(&mut self, raw: &[u8]) -> Result<NameId> {
        match self.shapes.get(raw) {
            Some(id) => Ok(*id),
            None => self.intern_shapes(raw),
        }
    }

    /// First sight of `raw` on this thread: parse, canonicalise, intern, remember.
    #[cold]
    #[inline(never)]
    fn intern_shapes(&mut self, raw: &[u8]) -> Result<NameId> {
        let id = match crate::shapes::canonical(raw)? {
            None => NameId::NONE,
            Some(text) => self.session.shapes().intern(text.as_bytes())?,
        };
        if self.shapes.len() >= SHAPES_CACHE_LIMIT {
            self.shapes.clear();
        }
        self.shapes.insert(raw.into(), id);
        Ok(id)
    }

    #[inline]
    fn open_span_index(&self, handle: u64) -> Result<usize> {
        let seq = self.seq_of(handle, "span")?;
        self.open_spans
            .iter()
            .rposition(|s| s.seq == seq)
            .ok_or(ProfilerError::UnknownHandle {
                kind: "span",
                handle,
            })
    }

    /// Closes the open span at `index` with the given annotations, and, innermost first and
    /// without annotations, every span opened inside it.
    #[inline]
    fn close_spans_from(
        &mut self,
        index: usize,
        end_ns: u64,
        memory_delta_mb: f32,
        shapes: NameId,
    ) -> Result<()> {
        let mut lost = false;
        while self.open_spans.len() > index + 1 {
            let span = self.open_spans.pop().expect("len > index + 1");
            self.session
                .counters()
                .auto_closed_spans
                .fetch_add(1, Ordering::Relaxed);
            lost |= self
                .push_span(&span, end_ns, NO_MEMORY_DELTA, NameId::NONE)
                .is_err();
        }
        let span = self.open_spans.pop().expect("index is an open span");
        lost |= self
            .push_span(&span, end_ns, memory_delta_mb, shapes)
            .is_err();
        if lost {
            return Err(ProfilerError::BufferFull);
        }
        Ok(())
    }

    /// The kernel context (`crate::kernel_context::encode`) of what is innermost open on this
    /// thread: its innermost span and that span's step, else its innermost step; 0 when
    /// nothing is open. A kernel launched now is attributed to it.
    #[inline]
    pub fn kernel_context(&self) -> u64 {
        let step_seq = self.open_steps.last().map_or(0, |s| s.seq);
        match self.open_spans.last() {
            Some(span) if span.step_seq == step_seq => {
                kernel_context::encode(self.thread_id, step_seq, span.name)
            }
            _ if step_seq != 0 => kernel_context::encode(self.thread_id, step_seq, NameId::NONE),
            _ => 0,
        }
    }

    /// Number of steps and spans this thread has open.
    pub fn open_counts(&self) -> (usize, usize) {
        (self.open_steps.len(), self.open_spans.len())
    }

    /// Closes, innermost first, the open spans that belong to step `seq`. Returns whether one
    /// of them could not be handed over.
    fn close_spans_of_step(&mut self, seq: u64, end_ns: u64) -> bool {
        let mut lost = false;
        let mut i = self.open_spans.len();
        while i > 0 {
            i -= 1;
            if self.open_spans[i].step_seq == seq {
                let span = self.open_spans.remove(i);
                self.session
                    .counters()
                    .auto_closed_spans
                    .fetch_add(1, Ordering::Relaxed);
                lost |= self
                    .push_span(&span, end_ns, NO_MEMORY_DELTA, NameId::NONE)
                    .is_err();
            }
        }
        lost
    }

    #[inline]
    fn push_span(
        &mut self,
        span: &OpenSpan,
        end_ns: u64,
        memory_delta_mb: f32,
        shapes: NameId,
    ) -> Result<()> {
        let pushed = self.push(Event::Span(SpanEvent {
            seq: span.seq,
            name: span.name,
            parent: span.parent,
            depth: span.depth,
            memory_delta_mb,
            shapes,
            step_seq: span.step_seq,
            start_ns: span.start_ns,
            duration_ns: end_ns.saturating_sub(span.start_ns),
        }));
        // Only a span the collector will see can take a device time.
        if pushed.is_ok() {
            self.recent_spans.record(span.seq, span.name, span.step_seq);
        }
        pushed
    }

    fn push(&mut self, event: Event) -> Result<()> {
        if self.producer.try_push(event).is_err() {
            self.session
                .counters()
                .lost_events
                .fetch_add(1, Ordering::Relaxed);
            self.session.wake_collector();
            return Err(ProfilerError::BufferFull);
        }
        self.until_wake -= 1;
        if self.until_wake == 0 {
            self.until_wake = WAKE_EVERY;
            self.session.wake_collector();
        }
        Ok(())
    }
}

impl Drop for ThreadRecorder {
    /// The thread exits: steps and spans it left open are counted, not silently lost, and its
    /// slot becomes free for a new thread.
    fn drop(&mut self) {
        let counters = self.session.counters();
        counters
            .unfinished_steps
            .fetch_add(self.open_steps.len() as u64, Ordering::Relaxed);
        counters
            .unfinished_spans
            .fetch_add(self.open_spans.len() as u64, Ordering::Relaxed);
        self.session.release_thread_slot(self.slot);
    }
}
