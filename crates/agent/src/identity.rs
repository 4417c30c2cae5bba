//! What this process is in a vLLM server and a worker's rank, as the host said through
//! `vllm_profiler_set_role`: two atomics, so that it can be said before profiling starts and
//! read by every session of the process.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use vllm_profiler_format::Role;

/// What this process is in a vLLM server (`Role` as its index below) and a worker's rank
/// (`NO_RANK`: none), as the host said through `vllm_profiler_set_role`. Kept apart from the
/// session so that it can be said before profiling starts; every session of the process takes
/// it. A forked child starts as a plain process again.
static ROLE: AtomicU8 = AtomicU8::new(3);
static RANK: AtomicU64 = AtomicU64::new(NO_RANK);
const NO_RANK: u64 = u64::MAX;
const ROLES: [Role; 4] = [
    Role::ApiServer,
    Role::EngineCore,
    Role::Worker,
    Role::Process,
];

/// What this process is, and its rank.
pub(crate) fn get() -> (Role, Option<u32>) {
    let role = ROLES[usize::from(ROLE.load(Ordering::Acquire)).min(3)];
    let rank = u32::try_from(RANK.load(Ordering::Acquire)).ok();
    (role, rank)
}

/// Keeps `role` and `rank` for every session from now on.
pub(crate) fn store(role: Role, rank: Option<u32>) {
    let index = ROLES.iter().position(|r| *r == role).unwrap_or(3);
    RANK.store(rank.map_or(NO_RANK, u64::from), Ordering::Release);
    ROLE.store(index as u8, Ordering::Release);
}

/// In a forked child: a plain process again, until it says otherwise.
pub(crate) fn forget_in_child() {
    ROLE.store(3, Ordering::Relaxed);
    RANK.store(NO_RANK, Ordering::Relaxed);
}
