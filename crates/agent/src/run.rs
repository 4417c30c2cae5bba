//! Which server run this process belongs to, so that a report and a merged trace can group a
//! server's processes: `VLLM_PROFILING_RUN_ID` when the process that started this one passed
//! it on, else a new id (`<unix ms, hex>-<pid>`).
//!
//! A new id is put in the environment for the processes this one starts, but only from the
//! constructor of a process that has one thread: `setenv` races with every other thread's
//! `getenv`, and before `main` (LD_PRELOAD), or in a Python that loaded the library before
//! starting a thread, there is none. Elsewhere the children make their own ids, and the
//! reports still link them to this process by their parent pid.

use std::sync::OnceLock;

use crate::config::{self, table};

static RUN_ID: OnceLock<String> = OnceLock::new();

fn new_id() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("{ms:x}-{}", std::process::id())
}

fn single_threaded() -> bool {
    std::fs::read_dir("/proc/self/task").is_ok_and(|tasks| tasks.count() == 1)
}

/// The run id the environment gives, if a valid one; a malformed one adds a warning.
fn inherited(warnings: &mut Vec<String>) -> Option<String> {
    let setting = table::SETTINGS
        .iter()
        .find(|s| s.env == table::RUN_ID)
        .expect("the run id is in the table");
    let raw = std::env::var_os(table::RUN_ID)?;
    match config::env_value(setting, &raw, warnings)? {
        config::parse::Value::Name(name) => Some(name),
        _ => None,
    }
}

/// In the constructor of a profiled process: takes the inherited id, or makes one and passes
/// it on when that is safe. A malformed id is one warning, and a new id.
pub(crate) fn adopt_at_load(warnings: &mut Vec<String>) {
    let id = inherited(warnings).unwrap_or_else(|| {
        let id = new_id();
        if single_threaded() {
            // No other thread exists to read the environment meanwhile.
            std::env::set_var(table::RUN_ID, &id);
        }
        id
    });
    let _ = RUN_ID.set(id);
}

/// This process's run id: the constructor's, else the environment's (profiling turned on
/// through the API), else a new one.
pub(crate) fn id() -> String {
    RUN_ID
        .get_or_init(|| {
            let mut warnings = Vec::new();
            let id = inherited(&mut warnings).unwrap_or_else(new_id);
            crate::warnings::print_warnings(&warnings);
            id
        })
        .clone()
}
