//! Which span a CPU sample was taken in, exactly, although pprof aggregates samples.
//!
//! pprof-rs keys its samples by the functions on the stack and the thread, and keeps one
//! count per key for the whole window: two spans running the same code on the same thread
//! are one entry. So the span cannot be told apart from a thread-local read at sample time;
//! it has to be part of the stack itself.
//!
//! A span that [`link`]s gets one of [`SLOT_COUNT`] *slots*, and [`SpanLink::run`] calls
//! the span's code through that slot's own trampoline function. Every sample taken inside
//! has the trampoline's frame on its stack, so stacks of different slots never aggregate.
//! Within one profiling window a slot belongs to at most one span:
//!
//! - When a span ends its slot is *retired*, not freed.
//! - Rotating the window (`begin_rotation`, then replacing the pprof guard, then
//!   `end_rotation`) first copies "slot → span" for every slot held during the window and
//!   moves the retired slots to quarantine; once the old window's samples are collected and
//!   a new guard runs, the quarantined slots become free.
//! - A slot handed out between the copy and the end of the rotation has no holder in the
//!   copy, so the old window's samples through it stay unlabelled, never mislabelled.
//!
//! Invariant: a slot is never free while a sample taken under its previous holder can still
//! end up in a window whose table names another span.

use std::cell::Cell;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// The span attribute that links a span to its profile: the span id in lowercase hex, as
/// Grafana's Pyroscope integration names it.
pub const PROFILE_ID_ATTRIBUTE: &str = "pyroscope.profile.id";
/// The pprof sample label holding the span id (16 hex digits), Pyroscope's convention.
pub const SPAN_ID_LABEL: &str = "span_id";
/// The pprof sample label holding the trace id (32 hex digits).
pub const TRACE_ID_LABEL: &str = "trace_id";

/// How many spans can be linked at once; more concurrent spans run unlinked (counted in
/// [`crate::Stats::spans_without_slot`]).
pub const SLOT_COUNT: usize = 256;

/// The ids of one span.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SpanIds {
    pub(crate) trace_id: [u8; 16],
    pub(crate) span_id: [u8; 8],
}

/// Set while a profiler runs: the one load [`link`] makes when none does.
static ACTIVE: AtomicBool = AtomicBool::new(false);
static SPANS_LINKED: AtomicU64 = AtomicU64::new(0);
static SPANS_WITHOUT_SLOT: AtomicU64 = AtomicU64::new(0);
/// Process-wide like pprof's own state: slots held by spans outlive a profiler that stops
/// and must stay held for the next one.
static TABLE: Mutex<SlotTable> = Mutex::new(SlotTable::new());

thread_local! {
    /// Whether this thread is running inside [`SpanLink::run`].
    static INSIDE_LINKED_SPAN: Cell<bool> = const { Cell::new(false) };
}

/// Links a span to the samples taken while its code runs through [`SpanLink::run`].
///
/// `None` when no profiler runs, when this thread is already running inside a linked span
/// (nested spans of one task belong to the outermost, Pyroscope's "local root"), or when all
/// [`SLOT_COUNT`] slots are taken (counted).
pub fn link(trace_id: [u8; 16], span_id: [u8; 8]) -> Option<SpanLink> {
    if !ACTIVE.load(Ordering::Relaxed) {
        return None;
    }
    if INSIDE_LINKED_SPAN.get() {
        return None;
    }
    let ids = SpanIds { trace_id, span_id };
    let Some(slot) = lock_table().acquire(ids) else {
        SPANS_WITHOUT_SLOT.fetch_add(1, Ordering::Relaxed);
        return None;
    };
    SPANS_LINKED.fetch_add(1, Ordering::Relaxed);
    Some(SpanLink { slot, ids })
}

/// A span's hold on a slot; dropping it retires the slot.
#[derive(Debug)]
pub struct SpanLink {
    slot: usize,
    ids: SpanIds,
}

impl SpanLink {
    /// Runs `f` through the slot's trampoline, so that samples taken meanwhile carry this
    /// span's ids, and marks the thread as inside a linked span (so [`link`] returns `None`
    /// in it). Inside another linked span `f` simply runs: its samples belong to the
    /// outermost span.
    pub fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        if INSIDE_LINKED_SPAN.get() {
            return f();
        }
        let _inside = InsideLinkedSpan::enter();
        let mut f = Some(f);
        let mut result = None;
        let mut call = || {
            if let Some(f) = f.take() {
                result = Some(f());
            }
        };
        trampoline(self.slot)(&mut call);
        match result {
            Some(result) => result,
            None => unreachable!("a trampoline calls its function exactly once"),
        }
    }

    /// The span id in lowercase hex: the value of [`PROFILE_ID_ATTRIBUTE`].
    pub fn profile_id(&self) -> String {
        hex(&self.ids.span_id)
    }
}

impl Drop for SpanLink {
    fn drop(&mut self) {
        lock_table().release(self.slot);
    }
}

/// Sets the thread's flag and clears it again, also when `f` panics.
struct InsideLinkedSpan;

impl InsideLinkedSpan {
    fn enter() -> Self {
        INSIDE_LINKED_SPAN.set(true);
        Self
    }
}

impl Drop for InsideLinkedSpan {
    fn drop(&mut self) {
        INSIDE_LINKED_SPAN.set(false);
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        // Writing to a String cannot fail.
        let _ = write!(text, "{byte:02x}");
    }
    text
}

type Trampoline = fn(&mut dyn FnMut());

/// Slot `K`'s trampoline. The `black_box(K)` on either side makes every instance's body
/// different, so LLVM and the linker cannot merge them into one function, and keeps the
/// call from being a tail call, so the frame is on the stack while `f` runs and the return
/// address lies inside this function.
#[inline(never)]
fn slot<const K: usize>(f: &mut dyn FnMut()) {
    std::hint::black_box(K);
    f();
    std::hint::black_box(K);
}

/// Row `HI` of the table: slots `16 * HI` to `16 * HI + 15`.
macro_rules! trampoline_rows {
    ($($hi:literal)*) => {
        [$(trampoline_rows!(@row $hi [0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15])),*]
    };
    (@row $hi:literal [$($lo:literal)*]) => {
        [$(slot::<{ 16 * $hi + $lo }> as Trampoline),*]
    };
}

static TRAMPOLINES: [[Trampoline; 16]; 16] =
    trampoline_rows!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);

fn trampoline(slot: usize) -> Trampoline {
    TRAMPOLINES[slot / 16][slot % 16]
}

/// Slot `slot`'s trampoline's start address, what the unwinder reports as the frame's
/// function address.
pub(crate) fn trampoline_address(slot: usize) -> usize {
    trampoline(slot) as usize
}

/// Slot → holder for every slot held during one window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct WindowSlots {
    holders: Vec<Option<SpanIds>>,
}

impl WindowSlots {
    pub(crate) fn holder(&self, slot: usize) -> Option<SpanIds> {
        self.holders.get(slot).copied().flatten()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotState {
    Free,
    Held(SpanIds),
    /// Its span ended during the current window.
    Retired(SpanIds),
    /// Its span ended during a window being rotated out.
    Quarantined,
}

/// The slots' states; pure, so the protocol is tested without signals.
#[derive(Debug)]
pub(crate) struct SlotTable {
    states: [SlotState; SLOT_COUNT],
    /// Free slots, taken from the end. Slot 0 is handed out first.
    free: Vec<usize>,
    /// Whether `free` has been filled; `Vec` cannot be filled in a `const fn`.
    initialised: bool,
}

impl SlotTable {
    pub(crate) const fn new() -> Self {
        Self {
            states: [SlotState::Free; SLOT_COUNT],
            free: Vec::new(),
            initialised: false,
        }
    }

    fn initialise(&mut self) {
        if !self.initialised {
            self.free = (0..SLOT_COUNT).rev().collect();
            self.initialised = true;
        }
    }

    pub(crate) fn acquire(&mut self, ids: SpanIds) -> Option<usize> {
        self.initialise();
        let slot = self.free.pop()?;
        debug_assert_eq!(self.states[slot], SlotState::Free);
        self.states[slot] = SlotState::Held(ids);
        Some(slot)
    }

    pub(crate) fn release(&mut self, slot: usize) {
        match self.states[slot] {
            SlotState::Held(ids) => self.states[slot] = SlotState::Retired(ids),
            other => debug_assert!(false, "slot {slot} released while {other:?}"),
        }
    }

    /// Step 1 of a rotation: the window's slot → span table, with the slots retired in it
    /// moved to quarantine.
    pub(crate) fn begin_rotation(&mut self) -> WindowSlots {
        let mut holders = vec![None; SLOT_COUNT];
        for (slot, state) in self.states.iter_mut().enumerate() {
            match *state {
                SlotState::Held(ids) => holders[slot] = Some(ids),
                SlotState::Retired(ids) => {
                    holders[slot] = Some(ids);
                    *state = SlotState::Quarantined;
                }
                SlotState::Free | SlotState::Quarantined => {}
            }
        }
        WindowSlots { holders }
    }

    /// Step 3 of a rotation, once the rotated-out window's samples are collected and a new
    /// guard runs: quarantined slots become free.
    pub(crate) fn end_rotation(&mut self) {
        self.initialise();
        for (slot, state) in self.states.iter_mut().enumerate() {
            if *state == SlotState::Quarantined {
                *state = SlotState::Free;
                self.free.push(slot);
            }
        }
    }

    /// Before a profiler's first guard starts: every slot whose span ended is free.
    pub(crate) fn reset_ended(&mut self) {
        self.initialise();
        for (slot, state) in self.states.iter_mut().enumerate() {
            if matches!(state, SlotState::Retired(_) | SlotState::Quarantined) {
                *state = SlotState::Free;
                self.free.push(slot);
            }
        }
    }
}

fn lock_table() -> MutexGuard<'static, SlotTable> {
    // Every critical section leaves the table consistent, so a poisoned lock is usable.
    TABLE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Called by a starting profiler before its first guard runs: slots whose spans ended
/// under an earlier profiler are free (had they ended after the guard started, their
/// samples could share its first window with a new holder), and the counters restart.
pub(crate) fn prepare() {
    lock_table().reset_ended();
    SPANS_LINKED.store(0, Ordering::Relaxed);
    SPANS_WITHOUT_SLOT.store(0, Ordering::Relaxed);
}

/// Called by the profiler once its first guard runs: spans may link from now on.
pub(crate) fn activate() {
    ACTIVE.store(true, Ordering::Release);
}

/// Called by the profiler before it stops: new spans run unlinked.
pub(crate) fn deactivate() {
    ACTIVE.store(false, Ordering::Release);
}

pub(crate) fn begin_rotation() -> WindowSlots {
    lock_table().begin_rotation()
}

pub(crate) fn end_rotation() {
    lock_table().end_rotation();
}

/// Spans linked and spans that found no free slot since the profiler started.
pub(crate) fn counts() -> (u64, u64) {
    (
        SPANS_LINKED.load(Ordering::Relaxed),
        SPANS_WITHOUT_SLOT.load(Ordering::Relaxed),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn ids(n: u8) -> SpanIds {
        SpanIds {
            trace_id: [n; 16],
            span_id: [n; 8],
        }
    }

    #[test]
    fn every_trampoline_is_a_distinct_function() {
        let addresses: HashSet<usize> = (0..SLOT_COUNT).map(trampoline_address).collect();
        assert_eq!(addresses.len(), SLOT_COUNT);
    }

    #[test]
    fn trampolines_run_their_function_once_and_return_its_value() {
        let link = SpanLink {
            slot: 37,
            ids: ids(1),
        };
        let mut calls = 0;
        let value = link.run(|| {
            calls += 1;
            assert!(INSIDE_LINKED_SPAN.get());
            link.run(|| 41) + 1
        });
        assert_eq!((value, calls), (42, 1));
        assert!(!INSIDE_LINKED_SPAN.get());
        assert_eq!(link.profile_id(), "0101010101010101");
        // Not taken from the table: forget it so its drop does not release slot 37 there.
        std::mem::forget(link);
    }

    #[test]
    fn the_flag_is_cleared_when_the_span_panics() {
        let link = SpanLink {
            slot: 3,
            ids: ids(1),
        };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            link.run(|| panic!("inside the span"));
        }));
        assert!(outcome.is_err());
        assert!(!INSIDE_LINKED_SPAN.get());
        std::mem::forget(link);
    }

    #[test]
    fn span_links_can_move_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<SpanLink>();
    }

    #[test]
    fn a_retired_slot_is_reused_only_after_the_rotation_that_reported_it() {
        let mut table = SlotTable::new();
        let first = table.acquire(ids(1)).expect("free slot");
        assert_eq!(first, 0);
        table.release(first);

        // Still in the window it ended in: not handed out again.
        let second = table.acquire(ids(2)).expect("free slot");
        assert_ne!(second, first);

        let window = table.begin_rotation();
        assert_eq!(window.holder(first), Some(ids(1)));
        assert_eq!(window.holder(second), Some(ids(2)));
        assert_eq!(window.holder(2), None);

        // Between the copy and the new guard: quarantined, so still not reused, and a slot
        // handed out now is unknown to the copied table.
        let third = table.acquire(ids(3)).expect("free slot");
        assert_ne!(third, first);
        assert_eq!(window.holder(third), None);

        table.end_rotation();
        let fourth = table.acquire(ids(4)).expect("free slot");
        assert_eq!(fourth, first, "free after the rotation");

        let next = table.begin_rotation();
        assert_eq!(next.holder(first), Some(ids(4)));
        assert_eq!(next.holder(second), Some(ids(2)), "still held");
        assert_eq!(next.holder(third), Some(ids(3)));
    }

    #[test]
    fn a_slot_retired_during_a_rotation_waits_for_the_next_one() {
        let mut table = SlotTable::new();
        let slot = table.acquire(ids(1)).expect("free slot");
        let window = table.begin_rotation();
        assert_eq!(window.holder(slot), Some(ids(1)));
        // The span ends while the old window is being collected.
        table.release(slot);
        table.end_rotation();
        assert_ne!(table.acquire(ids(2)), Some(slot));

        let next = table.begin_rotation();
        assert_eq!(
            next.holder(slot),
            Some(ids(1)),
            "its samples in the new window"
        );
        table.end_rotation();
        assert_eq!(table.acquire(ids(3)), Some(slot));
    }

    #[test]
    fn the_pool_runs_out_and_recovers() {
        let mut table = SlotTable::new();
        let held: Vec<usize> = (0..SLOT_COUNT)
            .map(|n| table.acquire(ids(n as u8)).expect("free slot"))
            .collect();
        assert_eq!(held.iter().collect::<HashSet<_>>().len(), SLOT_COUNT);
        assert_eq!(table.acquire(ids(0)), None);
        for &slot in &held[..10] {
            table.release(slot);
        }
        assert_eq!(table.acquire(ids(0)), None, "retired, not yet free");
        table.begin_rotation();
        table.end_rotation();
        for _ in 0..10 {
            assert!(table.acquire(ids(0)).is_some());
        }
        assert_eq!(table.acquire(ids(0)), None);
    }

    #[test]
    fn a_new_profiler_frees_what_ended_under_the_last_one() {
        let mut table = SlotTable::new();
        let ended = table.acquire(ids(1)).expect("free slot");
        let running = table.acquire(ids(2)).expect("free slot");
        table.release(ended);
        table.reset_ended();
        let window = table.begin_rotation();
        assert_eq!(window.holder(ended), None);
        assert_eq!(window.holder(running), Some(ids(2)));
        assert_eq!(table.acquire(ids(3)), Some(ended));
    }
}
