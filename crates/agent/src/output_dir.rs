//! Where the reports go: a relative output dir is resolved once, against the working dir of
//! its source (the environment's at load, the JSON configuration's at enable), so that a later
//! `chdir` of the host does not move the reports.

use std::path::PathBuf;
use std::sync::OnceLock;

use crate::config::Config;

/// The working dir as the library loaded: a relative output dir from the environment is
/// taken from it, in every process, whenever (and after whatever chdir) it starts recording.
static LOAD_CWD: OnceLock<PathBuf> = OnceLock::new();

/// The environment's configuration, its relative output dir taken from the working dir at
/// load (see [`LOAD_CWD`]).
pub(crate) fn env_config() -> (Config, Vec<String>) {
    let (mut config, warnings) = Config::from_env();
    if let Some(cwd) = LOAD_CWD.get() {
        if config.settings.output_dir.is_relative() {
            config.settings.output_dir = cwd.join(&config.settings.output_dir);
        }
    }
    (config, warnings)
}

/// Called at load: notes the working dir for [`env_config`].
pub(crate) fn note_load_cwd() {
    if let Ok(cwd) = std::env::current_dir() {
        let _ = LOAD_CWD.set(cwd);
    }
}

/// A relative output dir is taken relative to the working directory when it is given (the
/// environment's as the library loads, the JSON configuration's at enable), so that a later
/// `chdir` of the host does not move the reports.
pub(crate) fn resolve(dir: &mut PathBuf) {
    if dir.is_relative() {
        if let Ok(cwd) = std::env::current_dir() {
            *dir = cwd.join(&*dir);
        }
    }
}
